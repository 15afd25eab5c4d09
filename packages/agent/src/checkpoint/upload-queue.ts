/**
 * The upload queue: settled files go up under content-addressed keys, a bounded number at a time,
 * so an unchanged file is never sent twice. It records each confirmed version on its entry and
 * says so (`onUploaded`); what becomes of a set is the committer's business.
 */
import type { Stats } from 'node:fs';
import { lstat, readFile } from 'node:fs/promises';
import path from 'node:path';
import { checkpointKeys, type ManifestFile } from '@spotctl/shared';
import { ContentMismatchError, hashFile, sha256Hex } from './hashing.ts';
import { describeError, type CheckpointLogger } from './retry.ts';
import { isNotFound, isUpToDate, type CheckpointClock, type Entry, type SettleTracker } from './settle-tracker.ts';
import type { ObjectStore } from './store.ts';

type SyncOutcome = 'uploaded' | 'up-to-date' | 'changed' | 'gone' | 'failed';

const FAILURE_BACKOFF_MAX_MS = 60_000;
/**
 * Files up to this size are read into memory once, hashed, and that buffer is what the store
 * sends (instead of hashing a stream of the file, then reading it again to send it). The S3
 * store's own limit for a single PUT is the same by default.
 */
const SMALL_FILE_BYTES = 8 * 1024 * 1024;

export interface UploadQueueOptions {
  runId: string;
  dir: string;
  store: ObjectStore;
  concurrency: number;
  tracker: SettleTracker;
  clock: CheckpointClock;
  logger: CheckpointLogger;
  /** Aborts uploads in flight (the sync is closing). */
  signal: AbortSignal;
  /** An upload starts (the start of a batch, for the commit's duration). */
  onStart(): void;
  /** A new version of `entry` is confirmed in the store. */
  onUploaded(entry: Entry): void;
  /** An upload failed (`final`: the store gave up; else it is retrying). */
  onFailed(entry: Entry, error: string, final: boolean): void;
  /** Nothing queued, nothing running. */
  onIdle(): void;
}

export class UploadQueue {
  readonly #o: UploadQueueOptions;
  readonly #queue: string[] = [];
  readonly #running = new Set<Promise<void>>();
  #idleWaiters: Array<() => void> = [];
  /** Objects known to exist in the store: sha256 → size. */
  readonly #known = new Map<string, number>();
  #uploadedBytesTotal = 0;
  #closed = false;

  constructor(options: UploadQueueOptions) {
    this.#o = options;
  }

  /** Bytes sent since the start (unchanged files are not sent again). */
  get uploadedBytesTotal(): number {
    return this.#uploadedBytesTotal;
  }

  get idle(): boolean {
    return this.#running.size === 0 && this.#queue.length === 0;
  }

  /** The uploads in flight, for close to wait on. */
  get running(): readonly Promise<void>[] {
    return [...this.#running];
  }

  enqueue(entry: Entry): void {
    this.#o.tracker.clearTimer(entry);
    if (entry.busy) {
      entry.again = true;
      return;
    }
    entry.busy = true;
    this.#queue.push(entry.rel);
    this.#pump();
  }

  #pump(): void {
    while (this.#running.size < this.#o.concurrency && this.#queue.length > 0 && !this.#closed) {
      const rel = this.#queue.shift() as string;
      this.#o.onStart();
      const run: Promise<void> = this.#syncEntry(rel).finally(() => {
        this.#running.delete(run);
        this.#pump();
      });
      this.#running.add(run);
    }
    if (this.idle) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const wake of waiters) wake();
      this.#o.onIdle();
    }
  }

  whenIdle(signal: AbortSignal): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.#idleWaiters = this.#idleWaiters.filter((w) => w !== wake);
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      const wake = (): void => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.#idleWaiters.push(wake);
    });
  }

  /** Drops what is queued; uploads in flight end with the close signal. */
  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
  }

  async #syncEntry(rel: string): Promise<void> {
    const tracker = this.#o.tracker;
    const entry = tracker.entries.get(rel);
    if (!entry) return;
    let outcome: SyncOutcome;
    try {
      outcome = await this.#uploadFile(entry, this.#o.signal);
    } catch (err) {
      outcome = 'failed';
      if (!this.#o.signal.aborted) {
        entry.failures++;
        entry.lastError = describeError(err);
        this.#o.logger.warn({ file: rel, err: entry.lastError, failures: entry.failures }, 'checkpoint upload failed');
        this.#o.onFailed(entry, entry.lastError, true);
      }
    } finally {
      entry.busy = false;
    }
    if (tracker.entries.get(rel) !== entry || this.#closed) return;
    const again = entry.again;
    entry.again = false;
    if (again && outcome !== 'changed' && outcome !== 'failed') {
      // Asked for again while busy (a flush, or a newer settled version): queue it now, before the
      // pump looks for idleness, so a flush waiting for idle also waits for this one.
      entry.busy = true;
      this.#queue.push(rel);
    } else if (outcome === 'changed') {
      // Written to while we read it: wait for it to settle again.
      tracker.rearm(entry);
    } else if (outcome === 'failed') {
      const backoffMs = Math.min(FAILURE_BACKOFF_MAX_MS, Math.max(1000, tracker.settleMs) * 2 ** Math.min(entry.failures - 1, 10));
      tracker.arm(entry, backoffMs);
    } else if (outcome === 'up-to-date' && !isUpToDate(entry)) {
      // The file changed after the version we uploaded was read.
      tracker.rearm(entry);
    }
  }

  /**
   * Hashes the file, uploads it unless the store has that content already, and records the version
   * as uploaded. The store verifies while uploading that it sends exactly the hashed bytes, so a
   * version is only ever recorded with the bytes its checksum describes.
   */
  async #uploadFile(entry: Entry, signal: AbortSignal): Promise<SyncOutcome> {
    const { tracker, clock, store, logger } = this.#o;
    const file = path.join(this.#o.dir, entry.rel);
    let before: Stats;
    try {
      before = await lstat(file);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      tracker.forget(entry.rel);
      return 'gone';
    }
    if (!before.isFile()) {
      tracker.forget(entry.rel);
      return 'gone';
    }
    if (before.size !== entry.size || before.mtimeMs !== entry.mtimeMs) {
      // Changed since it was judged settled (or stable, in a flush): it is being written.
      tracker.observe(entry.rel, before.size, before.mtimeMs);
      return isUpToDate(entry) ? 'up-to-date' : 'changed';
    }
    if (isUpToDate(entry)) return 'up-to-date';
    if (entry.hashing) await entry.hashing;
    let hashed: { sha256: string; size: number };
    /** A small file's bytes, read once: hashed here and handed to the store as they are. */
    let data: Buffer | undefined;
    if (entry.hashed?.size === before.size && entry.hashed.mtimeMs === before.mtimeMs) {
      hashed = entry.hashed;
    } else {
      let after: Stats;
      try {
        if (before.size <= SMALL_FILE_BYTES) {
          data = await readFile(file, { signal });
          hashed = { sha256: sha256Hex(data), size: data.length };
        } else {
          hashed = await hashFile(file, signal);
        }
        after = await lstat(file);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        tracker.forget(entry.rel);
        return 'gone';
      }
      if (after.size !== before.size || after.mtimeMs !== before.mtimeMs || hashed.size !== before.size) {
        tracker.observe(entry.rel, after.size, after.mtimeMs);
        return 'changed';
      }
    }
    const version: ManifestFile = { path: entry.rel, size: hashed.size, sha256: hashed.sha256, mtimeMs: before.mtimeMs };
    if (entry.uploaded?.sha256 === version.sha256) {
      // Touched, not changed: same object, newer mtime. Not worth a new set on its own.
      entry.uploaded = version;
      entry.failures = 0;
      entry.lastError = undefined;
      return 'up-to-date';
    }
    const key = checkpointKeys.object('', this.#o.runId, version.sha256);
    let sent = 0;
    if (this.#known.get(version.sha256) !== version.size) {
      const head = await store.head(key, { signal });
      if (head?.size !== version.size) {
        const startedAt = clock.now();
        try {
          ({ uploadedBytes: sent } = await store.put(key, data ?? file, {
            sha256: version.sha256,
            size: version.size,
            signal,
            // Still being retried, but failing: visible now, not when the store gives up.
            onRetry: (err) => {
              entry.lastError = describeError(err);
              this.#o.onFailed(entry, entry.lastError, false);
            },
          }));
        } catch (err) {
          if (err instanceof ContentMismatchError) {
            // Changed without a new size or mtime: the digest taken ahead is worthless now.
            entry.hashed = undefined;
            logger.debug({ file: entry.rel }, 'checkpoint file changed during upload');
            await tracker.restat(entry.rel);
            return 'changed';
          }
          throw err;
        }
        const durationMs = clock.now() - startedAt;
        logger.debug(
          { file: entry.rel, bytes: sent, durationMs, mbPerS: Math.round((sent / 1e6 / Math.max(durationMs, 1)) * 1000 * 10) / 10 },
          'checkpoint file uploaded',
        );
      }
      this.#known.set(version.sha256, version.size);
    }
    this.#uploadedBytesTotal += sent;
    // Only a version whose object is confirmed in the store ever gets here.
    if (tracker.entries.get(entry.rel) !== entry) return 'gone';
    entry.uploaded = version;
    entry.failures = 0;
    entry.lastError = undefined;
    this.#o.onUploaded(entry);
    return 'uploaded';
  }

  /**
   * Hashes `entries` one after the other until `untilAt` (the one in progress then finishes), for
   * the upload to use if the file's size and mtime are still the same then. In the background; a
   * failure only means the upload hashes the file itself.
   */
  hashAhead(entries: readonly Entry[], untilAt: number, signal: AbortSignal): void {
    const run = async (): Promise<void> => {
      for (const entry of entries) {
        if (this.#o.clock.now() >= untilAt || signal.aborted) return;
        if (entry.busy || entry.hashing) continue;
        const hashing = this.#hashEntry(entry, signal).finally(() => {
          if (entry.hashing === hashing) entry.hashing = undefined;
        });
        entry.hashing = hashing;
        await hashing;
      }
    };
    void run();
  }

  async #hashEntry(entry: Entry, signal: AbortSignal): Promise<void> {
    const file = path.join(this.#o.dir, entry.rel);
    try {
      const before = await lstat(file);
      if (entry.hashed?.size === before.size && entry.hashed.mtimeMs === before.mtimeMs) return;
      const hashed = await hashFile(file, signal);
      const after = await lstat(file);
      if (after.size === before.size && after.mtimeMs === before.mtimeMs && hashed.size === before.size) {
        entry.hashed = { ...hashed, mtimeMs: before.mtimeMs };
      }
    } catch {
      // Gone, unreadable or aborted: the upload finds out for itself.
    }
  }
}
