/** Builds outgoing messages: JSON text frames, and binary frames for log lines. */
import { encodeLogFrame, type JobStatus, type LogSegmentPieces } from '@spotctl/shared';

/**
 * A binary `logs` frame from the segments a cursor read (or lines just appended): one small header
 * and the lines' bytes as they are on disk, so nothing is done per line. Built in a buffer from
 * `pool`.
 */
export function logsFrame(segments: readonly LogSegmentPieces[], pool: FramePool): Buffer {
  return encodeLogFrame(segments, (size) => pool.acquire(size));
}

/** Frames are about one cursor read (256 KiB) plus their header; pooled buffers have this size. */
const POOLED_FRAME_BYTES = 256 * 1024 + 16 * 1024;
/** More than the in-flight window holds (1 MiB / 256 KiB, plus one being built). */
const MAX_POOLED_FRAMES = 6;

/**
 * Reuses frame buffers once the socket has written them. Under a log flood a fresh 256 KiB
 * buffer per frame was garbage that only a GC gave back, and the agent's peak RSS carried it.
 */
export class FramePool {
  readonly #free: Buffer[] = [];

  acquire(size: number): Buffer {
    if (size > POOLED_FRAME_BYTES) return Buffer.allocUnsafe(size);
    // allocUnsafeSlow: a buffer of its own, never a slice of Node's shared pool.
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(POOLED_FRAME_BYTES);
  }

  /** Gives back a frame (or a view of one) that the socket no longer needs. */
  release(frame: Buffer): void {
    const whole =
      frame.byteOffset === 0 && frame.buffer.byteLength === POOLED_FRAME_BYTES
        ? Buffer.from(frame.buffer, 0, POOLED_FRAME_BYTES)
        : undefined;
    if (whole && this.#free.length < MAX_POOLED_FRAMES) this.#free.push(whole);
  }
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
