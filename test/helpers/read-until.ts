import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';

/** Unconsumed output kept per stream; beyond this the oldest text is dropped. */
const MAX_BUFFERED_CHARS = 8 * 1024 * 1024;

/**
 * One permanent reader per stream. Successive `readUntil` calls then lose nothing between them
 * (not even the rest of the chunk that held a match), and the stream keeps flowing, so a child
 * process never blocks on a full pipe while no test is reading.
 */
interface Tap {
  /** Text read and not yet consumed by a match. */
  text: string;
  ended: boolean;
  error: Error | undefined;
  waiters: Set<() => void>;
}

const taps = new WeakMap<Readable, Tap>();

function tapOf(stream: Readable): Tap {
  const existing = taps.get(stream);
  if (existing) return existing;
  const decoder = new StringDecoder('utf8');
  const tap: Tap = { text: '', ended: stream.readableEnded, error: undefined, waiters: new Set() };
  const wake = (): void => {
    for (const waiter of [...tap.waiters]) waiter();
  };
  stream.on('data', (chunk: Buffer | string) => {
    tap.text += typeof chunk === 'string' ? chunk : decoder.write(chunk);
    if (tap.text.length > MAX_BUFFERED_CHARS) tap.text = tap.text.slice(-MAX_BUFFERED_CHARS);
    wake();
  });
  const onEnd = (): void => {
    tap.ended = true;
    wake();
  };
  stream.once('end', onEnd);
  stream.once('close', onEnd);
  stream.once('error', (e: Error) => {
    tap.error = e;
    wake();
  });
  taps.set(stream, tap);
  return tap;
}

/**
 * Starts buffering `stream` now, so a later `readUntil` also sees output written before it was
 * called. Call it right after spawning a process whose early output a test waits for.
 */
export function tapStream(stream: Readable): void {
  tapOf(stream);
}

/**
 * Resolves with the text read from `stream` up to and including the first match of `regex`
 * (counting from where the previous `readUntil` on this stream stopped). Rejects when
 * `timeoutMs` passes or the stream ends first; the error carries the text read, so a failing test
 * shows what the subprocess actually said (wrangler's e2e helpers do the same).
 */
export function readUntil(stream: Readable, regex: RegExp, timeoutMs: number): Promise<string> {
  const tap = tapOf(stream);
  // A global or sticky regex would carry lastIndex from one check to the next.
  const re = new RegExp(regex.source, regex.flags.replace(/[gy]/g, ''));
  return new Promise<string>((resolve, reject) => {
    const finish = (): void => {
      clearTimeout(timer);
      tap.waiters.delete(check);
    };
    const check = (): void => {
      const m = re.exec(tap.text);
      if (m) {
        const end = m.index + m[0].length;
        const read = tap.text.slice(0, end);
        tap.text = tap.text.slice(end);
        finish();
        resolve(read);
      } else if (tap.error) {
        finish();
        reject(new Error(`stream failed before ${regex} matched: ${tap.error.message}; read:\n${tap.text}`, { cause: tap.error }));
      } else if (tap.ended) {
        finish();
        reject(new Error(`stream ended before ${regex} matched; read:\n${tap.text}`));
      }
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${regex}; read:\n${tap.text}`));
    }, timeoutMs);
    tap.waiters.add(check);
    check();
  });
}

export interface WaitForOptions {
  /** @default 10000 */
  timeoutMs?: number;
  /** @default 50 */
  intervalMs?: number;
  /** What is awaited, for the timeout message. @default 'condition' */
  what?: string;
  signal?: AbortSignal;
}

/**
 * Polls `predicate` until it returns a truthy value (returned) or `timeoutMs` passes. For state that
 * has no event to wait on: a file appearing, a process exiting, a socket accepting. Errors thrown
 * by the predicate count as "not yet"; the last one is reported on timeout.
 */
export async function waitFor<T>(predicate: () => T | Promise<T>, options: WaitForOptions = {}): Promise<NonNullable<T>> {
  const { timeoutMs = 10_000, intervalMs = 50, what = 'condition', signal } = options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      const detail = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`, { cause: lastError });
    }
    await sleep(intervalMs, undefined, signal ? { signal } : undefined);
  }
}
