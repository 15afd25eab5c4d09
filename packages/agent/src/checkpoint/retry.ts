/**
 * Our retry around a whole operation (an upload, a manifest write), on top of the SDK's per-request
 * retries: the SDK retries one request a few times, but a multipart upload that lost its parts or an
 * outage longer than the SDK's budget needs the whole upload started again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ContentMismatchError } from './hashing.ts';

/** The part of a pino logger the checkpoint code uses. */
export interface CheckpointLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: CheckpointLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

interface MaybeAwsError {
  name?: unknown;
  code?: unknown;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
  cause?: unknown;
}

/**
 * True for failures that may go away by themselves: connection refused or reset, timeouts, 5xx,
 * throttling, a multipart upload the server forgot. False for our own checksum mismatch, aborts,
 * and other 4xx (access denied, no such bucket): retrying those only hides a configuration error.
 */
export function isRetryableError(err: unknown): boolean {
  if (err instanceof ContentMismatchError) return false;
  if (typeof err !== 'object' || err === null) return false;
  const e = err as MaybeAwsError;
  if (e.name === 'AbortError') return false;
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === 'number') {
    if (status >= 500 || status === 408 || status === 429) return true;
    // The server lost the upload (it restarted, or an AbortMultipartUpload raced): start over.
    return e.name === 'NoSuchUpload';
  }
  // System errors: a network failure is transient, a missing source file or a full disk is not.
  if (typeof e.code === 'string' && /^E[A-Z]+$|^ERR_/.test(e.code)) return NETWORK_CODES.has(e.code);
  if (e.name === 'TimeoutError' || e.name === 'RequestTimeout' || e.$retryable) return true;
  if (e.cause !== undefined && e.cause !== err) return isRetryableError(e.cause);
  // No HTTP status and no known code: a transport failure we do not have a name for ("socket hang
  // up", a parser error on a truncated response). The retry is bounded in time, so trying again is
  // cheaper than losing the checkpoint.
  return e.$metadata === undefined;
}

export interface RetryOptions {
  /** What is being retried, for the log. */
  what: string;
  signal?: AbortSignal | undefined;
  /** Stop retrying once this much time has passed since the first attempt. */
  retryForMs: number;
  /** @default 250 */
  initialDelayMs?: number;
  /** @default 5000 */
  maxDelayMs?: number;
  logger?: CheckpointLogger;
  isRetryable?: (err: unknown) => boolean;
  /** Told of each failed attempt that will be retried, so a long outage is visible before it ends. Must not throw. */
  onRetry?: ((err: unknown, attempt: number) => void) | undefined;
}

/** Runs `fn` until it succeeds, fails for good, the signal aborts or `retryForMs` is used up. */
export async function retryWithBackoff<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const { what, signal, retryForMs, initialDelayMs = 250, maxDelayMs = 5000, logger, isRetryable = isRetryableError, onRetry } = options;
  const giveUpAt = Date.now() + retryForMs;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : err;
      const backoffMs = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt - 1, 16));
      // Full jitter keeps several uploads from hammering a recovering endpoint in lockstep.
      const delayMs = Math.round(backoffMs / 2 + (Math.random() * backoffMs) / 2);
      if (!isRetryable(err) || Date.now() + delayMs >= giveUpAt) throw err;
      logger?.warn({ err: describeError(err), attempt, delayMs }, `${what} failed, retrying`);
      onRetry?.(err, attempt);
      await sleep(delayMs, undefined, signal ? { signal } : undefined);
    }
  }
}

/** A short, log-friendly description of an SDK or system error. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & MaybeAwsError;
  const status = e.$metadata?.httpStatusCode;
  const code = typeof e.code === 'string' ? e.code : undefined;
  const parts = [e.name !== 'Error' ? e.name : undefined, code, status !== undefined ? `HTTP ${status}` : undefined].filter(Boolean);
  return parts.length ? `${e.message} (${parts.join(', ')})` : e.message;
}
