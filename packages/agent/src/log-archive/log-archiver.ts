/**
 * Copies the job's log file to the run's checkpoint target as it grows, so the log outlives the
 * instance: append-only segments (byte ranges of log.records, see `logArchiveKeys`), uploaded
 * every few seconds while output flows, and on demand (job exit, interruption notice, close).
 *
 * The log file only ever grows by whole records written synchronously on the agent's thread, so
 * its end offset, read here, is always a record boundary. A segment that failed is simply sent
 * again (with whatever was added since) at the next tick; the reader tolerates overlaps.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { logArchiveKeys } from '@spotctl/shared';
import { systemClock, type Clock } from '../clock.ts';
import type { Logger } from '../logger.ts';

/** Where segments go: the agent's checkpoint ObjectStore fits (structurally; no import of that part). */
export interface SegmentSink {
  readonly location: string;
  put(key: string, body: Buffer, options: { sha256: string; size: number; signal?: AbortSignal }): Promise<unknown>;
}

export interface LogArchiverOptions {
  runId: string;
  /** The log file (log.records). */
  logPath: string;
  /** Bytes of the log file up to its last whole record. */
  endOffset(): number;
  sink: SegmentSink;
  /** How often new output is archived while it flows. @default 5000 (half the 10 s the issue promises) */
  intervalMs?: number;
  /** Larger growth goes up in several segments, so no upload holds more than this in memory. @default 16 MiB */
  maxSegmentBytes?: number;
  /** Time one periodic archive may take (retries included) before the next tick tries again. @default 60000 */
  tickTimeoutMs?: number;
  logger: Logger;
  /** @default systemClock */
  clock?: Pick<Clock, 'now' | 'setInterval' | 'clearInterval' | 'setTimeout' | 'clearTimeout'>;
}

export interface ArchiveResult {
  /** Bytes of the log file now archived (all of it when this equals the file's end offset). */
  archivedOffset: number;
  uploadedBytes: number;
  error?: string;
}

export class LogArchiver {
  readonly #o: LogArchiverOptions;
  readonly #clock: NonNullable<LogArchiverOptions['clock']>;
  #archivedOffset = 0;
  #chain: Promise<unknown> = Promise.resolve();
  #busy = false;
  #timer: unknown;
  #closed = false;
  #lastError: string | undefined;

  constructor(options: LogArchiverOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
  }

  get archivedOffset(): number {
    return this.#archivedOffset;
  }

  start(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = this.#clock.setInterval(() => {
      if (this.#busy || this.#o.endOffset() <= this.#archivedOffset) return;
      void this.archive('interval', { timeoutMs: this.#o.tickTimeoutMs ?? 60_000 });
    }, this.#o.intervalMs ?? 5000);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  /**
   * Archives everything written so far (after any archive already under way). Never throws; the
   * result says how far it got. `timeoutMs` bounds it: an S3 outage must not hold the exit.
   */
  archive(reason: string, options: { timeoutMs: number }): Promise<ArchiveResult> {
    const run = this.#chain.then(() => this.#archiveNow(reason, options.timeoutMs));
    this.#chain = run;
    return run;
  }

  /** Stops the periodic archive; an archive under way finishes (or times out) on its own. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #archiveNow(reason: string, timeoutMs: number): Promise<ArchiveResult> {
    const end = this.#o.endOffset();
    if (end <= this.#archivedOffset) return { archivedOffset: this.#archivedOffset, uploadedBytes: 0 };
    this.#busy = true;
    const abort = new AbortController();
    // Owned deadline (see STYLE.md): a timer we hold and clear, not an AbortSignal.timeout().
    const timer = this.#clock.setTimeout(() => abort.abort(new Error(`archiving the log took longer than ${timeoutMs} ms`)), timeoutMs);
    let uploaded = 0;
    try {
      const file = await open(this.#o.logPath, 'r');
      try {
        const max = this.#o.maxSegmentBytes ?? 16 * 1024 * 1024;
        // Bounded: every pass archives at least one byte or throws.
        while (this.#archivedOffset < end) {
          const start = this.#archivedOffset;
          const length = Math.min(max, end - start);
          const body = Buffer.allocUnsafe(length);
          let got = 0;
          while (got < length) {
            const { bytesRead } = await file.read(body, got, length - got, start + got);
            if (bytesRead === 0) throw new Error(`the log file ends at ${start + got}, before ${start + length}`);
            got += bytesRead;
          }
          const key = logArchiveKeys.segment('', this.#o.runId, start, start + length);
          await this.#o.sink.put(key, body, {
            sha256: createHash('sha256').update(body).digest('hex'),
            size: length,
            signal: abort.signal,
          });
          this.#archivedOffset = start + length;
          uploaded += length;
        }
      } finally {
        await file.close();
      }
      if (this.#lastError) this.#o.logger.info({ reason, archivedOffset: this.#archivedOffset }, 'archiving the log works again');
      this.#lastError = undefined;
      this.#o.logger.debug({ reason, archivedOffset: this.#archivedOffset, uploaded }, 'log archived');
      return { archivedOffset: this.#archivedOffset, uploadedBytes: uploaded };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // Said once per outage, not at every tick.
      if (this.#lastError === undefined)
        this.#o.logger.warn({ err, reason, where: this.#o.sink.location }, 'archiving the log failed; retrying at the next tick');
      this.#lastError = message;
      return { archivedOffset: this.#archivedOffset, uploadedBytes: uploaded, error: message };
    } finally {
      this.#clock.clearTimeout(timer);
      this.#busy = false;
    }
  }
}
