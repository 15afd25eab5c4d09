/** Builds outgoing messages. Log lines go out as the bytes on disk, without a parse/stringify. */
import type { JobStatus } from '@spotctl/shared';

const LOGS_PREFIX = Buffer.from('{"type":"event","event":"logs","lines":[');
const LOGS_SUFFIX = Buffer.from(']}');
const NEWLINE = 0x0a;
const COMMA = 0x2c;

/**
 * `{"type":"event","event":"logs","lines":[<line>,<line>]}` from newline-terminated JSON lines.
 * A raw 0x0A can only be a line end: JSON escapes newlines in strings and UTF-8 never uses 0x0A
 * inside a multibyte character, so replacing each with a comma is exact.
 */
export function logsFrame(raw: Buffer): Buffer {
  const body = raw.length > 0 && raw[raw.length - 1] === NEWLINE ? raw.length - 1 : raw.length;
  const out = Buffer.allocUnsafe(LOGS_PREFIX.length + body + LOGS_SUFFIX.length);
  LOGS_PREFIX.copy(out, 0);
  raw.copy(out, LOGS_PREFIX.length, 0, body);
  const start = LOGS_PREFIX.length;
  let i = out.indexOf(NEWLINE, start);
  while (i !== -1 && i < start + body) {
    out[i] = COMMA;
    i = out.indexOf(NEWLINE, i + 1);
  }
  LOGS_SUFFIX.copy(out, start + body);
  return out;
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
