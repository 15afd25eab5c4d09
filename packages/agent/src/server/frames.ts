/** Builds outgoing messages: JSON text frames, and binary frames for log lines. */
import { encodeLogFrame, type JobStatus, type LogSegment } from '@spotctl/shared';

/**
 * A binary `logs` frame from the segments a cursor read: one small header and the lines' bytes as
 * they are on disk, so nothing is done per line.
 */
export function logsFrame(segments: readonly LogSegment[]): Buffer {
  return encodeLogFrame(segments);
}

export function statusFrame(status: JobStatus): string {
  return JSON.stringify({ type: 'event', event: 'status', status });
}

export function endFrame(status: JobStatus): string {
  return JSON.stringify({ type: 'event', event: 'end', status });
}

export function resultFrame(id: number, result: unknown): string {
  return JSON.stringify({ id, result });
}

export function errorFrame(id: number | null, code: string, message: string): string {
  return JSON.stringify({ id, error: { code, message } });
}
