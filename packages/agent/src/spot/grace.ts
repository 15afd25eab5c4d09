/**
 * How long the job may take to stop after a spot interruption notice. The budget is measured
 * from AWS's deadline (the notice's `time`), not from when the poll happened to see the notice:
 * a notice seen late leaves less time, and the checkpoint upload and a safety margin come out of
 * what is left before the job gets any.
 */

/** AWS's warning for stop and terminate; assumed when a notice's time cannot be read. */
export const DEFAULT_NOTICE_LEAD_MS = 120_000;
/** Kept free between the end of the final upload and the deadline. */
export const DEFAULT_SAFETY_MARGIN_MS = 10_000;
/**
 * Assumed upload throughput when nothing better is known: 50 MB/s, below what a single S3
 * multipart stream reaches from EC2, so the estimate errs long.
 */
export const DEFAULT_UPLOAD_BYTES_PER_SECOND = 50_000_000;
/** Any upload at all costs at least this much (TLS handshakes, the manifest, request latency). */
export const MIN_UPLOAD_MS = 1000;

export interface InterruptionGraceInput {
  /** The grace the run was configured with (SIGTERM → SIGKILL). */
  configuredGraceMs: number;
  /** Epoch ms when AWS takes the instance: `deadlineFromNotice(...).deadlineAt`. */
  deadlineAt: number;
  now: number;
  /** Time the final checkpoint upload needs after the job stopped (see `estimateUploadMs`). */
  estimatedUploadMs: number;
  /** @default 10000 */
  safetyMarginMs?: number;
}

/** max(0, min(configured, deadline − now − upload − margin)), in whole ms. */
export function interruptionGraceMs(input: InterruptionGraceInput): number {
  const { configuredGraceMs, deadlineAt, now, estimatedUploadMs, safetyMarginMs = DEFAULT_SAFETY_MARGIN_MS } = input;
  const left = deadlineAt - now - Math.max(0, estimatedUploadMs) - Math.max(0, safetyMarginMs);
  const grace = Math.min(configuredGraceMs, left);
  // NaN from a bad input must not become "wait forever" or a negative timer.
  if (!(grace > 0)) return 0;
  return Number.isFinite(grace) ? Math.floor(grace) : 0;
}

/** Time to upload `pendingBytes`: 0 for nothing, else at least MIN_UPLOAD_MS. */
export function estimateUploadMs(pendingBytes: number, bytesPerSecond: number = DEFAULT_UPLOAD_BYTES_PER_SECOND): number {
  if (!(pendingBytes > 0)) return 0;
  const rate = bytesPerSecond > 0 && Number.isFinite(bytesPerSecond) ? bytesPerSecond : DEFAULT_UPLOAD_BYTES_PER_SECOND;
  return Math.max(MIN_UPLOAD_MS, Math.ceil((pendingBytes / rate) * 1000));
}

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(Z|z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$/;

/**
 * Parses an ISO 8601 / RFC 3339 timestamp as AWS writes it (`2026-11-22T10:00:00Z`) and the
 * variants a tool might: fractions, offsets, a space for the `T`, no zone. A timestamp without a
 * zone is UTC (IMDS speaks UTC; `Date.parse` would take it as local time). Undefined if invalid.
 */
export function parseIsoTime(text: string): number | undefined {
  const m = ISO_RE.exec(text.trim());
  if (!m) return undefined;
  const [, y, mo, d, h = '0', mi = '0', s = '0', frac = '', zone = 'Z'] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 60) return undefined;
  // A leap second (":60") is the last instant of its minute.
  const ms = Date.UTC(year, month - 1, day, hour, minute, Math.min(second, 59)) + (second === 60 ? 999 : Number(`0.${frac || '0'}`) * 1000);
  // Date.UTC rolls 2026-02-30 over into March; such a date is not valid.
  if (new Date(ms).getUTCDate() !== day) return undefined;
  let offsetMin = 0;
  if (zone !== 'Z' && zone !== 'z' && zone !== 'UTC' && zone !== 'GMT') {
    const z = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone);
    if (!z) return undefined;
    const oh = Number(z[2]);
    const om = Number(z[3] ?? '0');
    if (oh > 23 || om > 59) return undefined;
    offsetMin = (z[1] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  return Math.floor(ms - offsetMin * 60_000);
}

/**
 * When AWS takes the instance, from a notice's `time`. An unreadable time falls back to the
 * documented two-minute warning counted from `noticedAt`.
 */
export function deadlineFromNotice(time: string, noticedAt: number): { deadlineAt: number; parsed: boolean } {
  const at = parseIsoTime(time);
  return at === undefined ? { deadlineAt: noticedAt + DEFAULT_NOTICE_LEAD_MS, parsed: false } : { deadlineAt: at, parsed: true };
}
