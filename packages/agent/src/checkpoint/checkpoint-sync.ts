/**
 * Keeps the job's checkpoint folder in the store while the job runs, so an interruption loses at
 * most the last moments of work.
 *
 * A file is uploaded once it has settled (size and mtime unchanged for `settleMs`), under a
 * content-addressed key, so an unchanged file is never sent twice. Once a batch of uploads is done,
 * a manifest naming every current file's latest uploaded version is written, and only then: the
 * objects of a set always exist before the set does. The job never waits for any of this.
 */
import type { Stats } from 'node:fs';
import { lstat, mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { watch, type FSWatcher } from 'chokidar';
import { checkpointKeys, deadline, type CheckpointHealth, type CheckpointManifest, type FlushResult, type ManifestFile } from '@spotctl/shared';
import { ContentMismatchError, hashFile, sha256Hex } from './hashing.ts';
import { describeError, silentLogger, type CheckpointLogger } from './retry.ts';
import type { ObjectStore } from './store.ts';

/**
 * Names that are never uploaded: jobs write `x.tmp` (or `.x`) and rename it into place, so the
 * half-written file is never a candidate.
 */
export const DEFAULT_IGNORE_PATTERNS: readonly RegExp[] = [/\.tmp$/i, /\.partial$/i, /^\./, /~$/];

export interface CheckpointCommittedEvent {
  seq: number;
  /** Files in the committed set. */
  files: number;
  /** Total size of the committed set. */
  bytes: number;
  /** Bytes sent since the previous commit (unchanged files are not sent again). */
  uploadedBytes: number;
  reason: string;
  /** From the first upload of the batch (or the start of the flush) to the manifest written. */
  durationMs: number;
}

/** One failed upload or commit, with the run of failures it belongs to. */
export interface CheckpointFailure {
  what: 'upload' | 'commit';
  /** The file, for an upload. */
  file: string | null;
  message: string;
  /** Failed attempts since checkpoints last got through completely (this one included). */
  failures: number;
  failingSince: number;
}

export interface CheckpointSyncOptions {
  runId: string;
  /** Absolute path of the watched folder; created when missing. */
  dir: string;
  /** Where objects and manifests go. The caller owns it (and closes it after the sync). */
  store: ObjectStore;
  /** A file counts as written once its size and mtime have not changed for this long. @default 2000 */
  settleMs?: number;
  /** @default a logger that drops everything */
  logger?: CheckpointLogger;
  /** Called after every manifest written (in the background or by `flush`). Must not throw. */
  onCommitted?: (event: CheckpointCommittedEvent) => void;
  /** Called on every failed upload or commit (they are retried). Must not throw. */
  onFailure?: (failure: CheckpointFailure) => void;
  /** Basename patterns never uploaded (files and folders). @default DEFAULT_IGNORE_PATTERNS */
  ignore?: readonly RegExp[];
  /**
   * Files uploaded at the same time; a large file also has its parts in flight (the S3 store
   * bounds how many large files send parts at once). @default 8
   */
  uploadConcurrency?: number;
  /**
   * The final flush uploads any file that has not changed for this long, settled or not: it waits
   * out whatever is left of this window since the newest file's mtime, then skips any file whose
   * size or mtime changed meanwhile (its previous version stays in the set). @default 300
   */
  finalRecheckMs?: number;
  /**
   * Normally a set is committed when no upload is running and no file is still settling, so the
   * files a job writes together land in the same set. A file that never stops changing would hold
   * commits back forever: past this delay, the uploads done so far are committed anyway.
   * @default 30000
   */
  maxCommitDelayMs?: number;
  /** How long `start` waits for the watcher's initial scan. @default 30000 */
  readyTimeoutMs?: number;
}

export interface FlushOptions {
  signal?: AbortSignal;
  /** Epoch ms by which the manifest must be written; uploads stop being waited for a bit before. */
  deadlineAt?: number;
  /**
   * Upload files that changed recently too (after a short re-check that they are not being
   * written): the job is gone, nothing will settle later.
   * @default true for reasons 'interruption' and 'exit', false otherwise
   */
  final?: boolean;
}

/** What is known about one file of the watched folder. */
interface Entry {
  /** Path relative to the folder, with forward slashes. */
  rel: string;
  /** The last size and mtime seen. */
  size: number;
  mtimeMs: number;
  /** When size or mtime last changed. */
  changedAt: number;
  /** Fires `settleMs` after the last change. */
  timer: NodeJS.Timeout | undefined;
  /** The newest version whose object is confirmed in the store. */
  uploaded: ManifestFile | undefined;
  /** Queued or being uploaded. */
  busy: boolean;
  /** Asked for again while busy: look once more when done. */
  again: boolean;
  failures: number;
  lastError: string | undefined;
  /**
   * A digest taken ahead of the upload (during a final flush's re-check pause), valid while the
   * file's size and mtime are these. Only saves re-hashing: the upload still verifies that the bytes
   * it sends are the ones this digest describes.
   */
  hashed: { sha256: string; size: number; mtimeMs: number } | undefined;
  /** That hashing while it runs, so an upload waits for it instead of hashing the file again. */
  hashing: Promise<void> | undefined;
}

type SyncOutcome = 'uploaded' | 'up-to-date' | 'changed' | 'gone' | 'failed';

/** What a flush's own commit reports: its start and the upload total then. */
interface FlushAccount {
  startedAt: number;
  uploadedAtStart: number;
}

const FAILURE_BACKOFF_MAX_MS = 60_000;
/**
 * Files up to this size are read into memory once, hashed, and that buffer is what the store
 * sends (instead of hashing a stream of the file, then reading it again to send it). The S3
 * store's own limit for a single PUT is the same by default.
 */
const SMALL_FILE_BYTES = 8 * 1024 * 1024;
/** File timestamps come from the kernel's coarse clock, a tick or so behind `Date.now()`. */
const MTIME_SLACK_MS = 20;
/** A flush with a deadline retries failed uploads from this pause, doubling up to the max. */
const FLUSH_RETRY_FIRST_MS = 250;
const FLUSH_RETRY_MAX_MS = 5000;

function toRel(dir: string, file: string): string {
  return path.relative(dir, file).split(path.sep).join('/');
}

function isUpToDate(entry: Entry): boolean {
  return entry.uploaded !== undefined && entry.uploaded.size === entry.size && entry.uploaded.mtimeMs === entry.mtimeMs;
}

function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

export class CheckpointSync implements AsyncDisposable {
  readonly runId: string;
  readonly dir: string;
  readonly #store: ObjectStore;
  readonly #settleMs: number;
  readonly #logger: CheckpointLogger;
  readonly #onCommitted: ((event: CheckpointCommittedEvent) => void) | undefined;
  readonly #onFailure: ((failure: CheckpointFailure) => void) | undefined;
  readonly #ignore: readonly RegExp[];
  readonly #concurrency: number;
  readonly #finalRecheckMs: number;
  readonly #maxCommitDelayMs: number;
  readonly #readyTimeoutMs: number;

  readonly #entries = new Map<string, Entry>();
  /** Objects known to exist in the store: sha256 → size. */
  readonly #known = new Map<string, number>();
  readonly #queue: string[] = [];
  readonly #running = new Set<Promise<void>>();
  #idleWaiters: Array<() => void> = [];
  readonly #closeController = new AbortController();
  #watcher: FSWatcher | undefined;
  #closing: Promise<void> | undefined;

  /** Bumped whenever the set of uploaded versions changes; committed when it differs from `#committedGen`. */
  #gen = 0;
  #committedGen = 0;
  /** Highest seq in the store, once looked up. */
  #lastSeq: number | undefined;
  #lastCommitted: { seq: number; files: number; bytes: number } | undefined;
  /** Commits run one after the other, so two never pick the same seq. */
  #commitChain: Promise<unknown> = Promise.resolve();
  /** Aborts the background commit in progress: a flush commits a newer state itself. */
  #backgroundCommit: AbortController | undefined;
  /** Waits for files still settling before a background commit (see `maxCommitDelayMs`). */
  #commitDelayTimer: NodeJS.Timeout | undefined;
  /** Backoff after a failed background commit. */
  #commitRetryTimer: NodeJS.Timeout | undefined;
  #commitFailures = 0;
  #flushing = 0;
  /** When the first upload not yet in a committed set finished (for `maxCommitDelayMs`). */
  #uncommittedSince: number | undefined;
  /** When the current batch started (for the commit's `durationMs`). */
  #batchStartedAt: number | undefined;
  #uploadedBytesTotal = 0;
  #uploadedBytesCommitted = 0;
  /** The current run of failed uploads and commits; undefined while checkpoints get through. */
  #failing: { since: number; count: number; lastError: string } | undefined;

  private constructor(options: CheckpointSyncOptions) {
    if (!path.isAbsolute(options.dir)) throw new Error(`checkpoint dir must be absolute: ${options.dir}`);
    this.runId = options.runId;
    this.dir = path.resolve(options.dir);
    this.#store = options.store;
    this.#settleMs = options.settleMs ?? 2000;
    this.#logger = options.logger ?? silentLogger;
    this.#onCommitted = options.onCommitted;
    this.#onFailure = options.onFailure;
    this.#ignore = options.ignore ?? DEFAULT_IGNORE_PATTERNS;
    this.#concurrency = Math.max(1, options.uploadConcurrency ?? 8);
    this.#finalRecheckMs = options.finalRecheckMs ?? 300;
    this.#maxCommitDelayMs = options.maxCommitDelayMs ?? 30_000;
    this.#readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
  }

  /** Creates the folder if needed and starts watching it; files already there count. */
  static async start(options: CheckpointSyncOptions): Promise<CheckpointSync> {
    const sync = new CheckpointSync(options);
    await sync.#startWatching();
    return sync;
  }

  async #startWatching(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const watcher = watch(this.dir, {
      ignoreInitial: false,
      alwaysStat: true,
      followSymlinks: false,
      // Our own settle timer decides when a file is finished: it also serves pendingBytes() and
      // the final flush, which awaitWriteFinish cannot.
      awaitWriteFinish: false,
      ignored: (file: string) => file !== this.dir && this.#isIgnored(path.basename(file)),
    });
    this.#watcher = watcher;
    const onFile = (file: string, stats?: Stats): void => {
      if (stats && !stats.isFile()) return;
      const rel = toRel(this.dir, file);
      if (stats) this.#observe(rel, stats.size, stats.mtimeMs);
      else void this.#restat(rel);
    };
    watcher.on('add', onFile);
    watcher.on('change', onFile);
    watcher.on('unlink', (file: string) => this.#forget(toRel(this.dir, file)));
    watcher.on('unlinkDir', (dir: string) => {
      const prefix = `${toRel(this.dir, dir)}/`;
      for (const rel of [...this.#entries.keys()]) if (rel.startsWith(prefix)) this.#forget(rel);
    });
    watcher.on('error', (err: unknown) => this.#logger.warn({ err: describeError(err) }, 'checkpoint watcher error'));
    let timer: NodeJS.Timeout | undefined;
    const ready = await Promise.race([
      new Promise<boolean>((resolve) => watcher.once('ready', () => resolve(true))),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.#readyTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (!ready) this.#logger.warn({ dir: this.dir }, 'checkpoint watcher is still scanning; continuing');
    this.#logger.info({ dir: this.dir, store: this.#store.location, files: this.#entries.size }, 'watching checkpoint folder');
  }

  #isIgnored(basename: string): boolean {
    return this.#ignore.some((re) => re.test(basename));
  }

  /** Bytes of files seen but not yet uploaded in their current version. */
  pendingBytes(): number {
    let bytes = 0;
    for (const entry of this.#entries.values()) if (!isUpToDate(entry)) bytes += entry.size;
    return bytes;
  }

  /** Whether checkpoints are getting through (for the job's status). */
  health(): CheckpointHealth {
    return {
      failing: this.#failing !== undefined,
      failures: this.#failing?.count ?? 0,
      failingSince: this.#failing?.since ?? null,
      lastError: this.#failing?.lastError ?? null,
      lastCommittedSeq: this.#lastCommitted?.seq ?? null,
    };
  }

  #recordFailure(what: 'upload' | 'commit', file: string | null, error: string): void {
    const failing = (this.#failing ??= { since: Date.now(), count: 0, lastError: error });
    failing.count++;
    failing.lastError = error;
    try {
      this.#onFailure?.({ what, file, message: error, failures: failing.count, failingSince: failing.since });
    } catch (err) {
      this.#logger.error({ err: describeError(err) }, 'onFailure threw');
    }
  }

  /** Once no file is left failing and the last commit worked, the run of failures is over. */
  #clearFailuresIfRecovered(): void {
    if (!this.#failing || this.#commitFailures > 0) return;
    for (const entry of this.#entries.values()) if (entry.lastError !== undefined) return;
    this.#logger.info({ failures: this.#failing.count, failingForMs: Date.now() - this.#failing.since }, 'checkpoint uploads work again');
    this.#failing = undefined;
  }

  /** The last set written by this sync, if any. */
  get lastCommitted(): { seq: number; files: number; bytes: number } | undefined {
    return this.#lastCommitted;
  }

  // ---------------------------------------------------------------------------------------------
  // Watching and settling

  #observe(rel: string, size: number, mtimeMs: number): void {
    if (this.#closing) return;
    let entry = this.#entries.get(rel);
    const now = Date.now();
    if (!entry) {
      entry = { rel, size, mtimeMs, changedAt: now, timer: undefined, uploaded: undefined, busy: false, again: false, failures: 0, lastError: undefined, hashed: undefined, hashing: undefined };
      this.#entries.set(rel, entry);
    } else if (entry.size !== size || entry.mtimeMs !== mtimeMs) {
      entry.size = size;
      entry.mtimeMs = mtimeMs;
      entry.changedAt = now;
      entry.failures = 0;
    } else if (entry.timer || entry.busy) {
      // Same stat again: the armed timer, or the upload in progress, already covers it.
      return;
    }
    if (isUpToDate(entry)) {
      this.#clearTimer(entry);
      return;
    }
    this.#arm(entry, Math.max(0, entry.changedAt + this.#settleMs - now));
  }

  #arm(entry: Entry, delayMs: number): void {
    this.#clearTimer(entry);
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      void this.#checkSettled(entry.rel);
    }, delayMs);
    entry.timer.unref();
  }

  #clearTimer(entry: Entry): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
  }

  async #restat(rel: string): Promise<void> {
    try {
      const st = await lstat(path.join(this.dir, rel));
      if (st.isFile()) this.#observe(rel, st.size, st.mtimeMs);
    } catch (err) {
      if (isNotFound(err)) this.#forget(rel);
    }
  }

  /** The settle timer fired: upload if the file has not changed since the last event. */
  async #checkSettled(rel: string): Promise<void> {
    const entry = this.#entries.get(rel);
    if (!entry || this.#closing) return;
    let st: Stats;
    try {
      st = await lstat(path.join(this.dir, rel));
    } catch (err) {
      if (isNotFound(err)) this.#forget(rel);
      return;
    }
    if (!st.isFile()) return this.#forget(rel);
    if (st.size !== entry.size || st.mtimeMs !== entry.mtimeMs) {
      this.#observe(rel, st.size, st.mtimeMs);
      return;
    }
    if (isUpToDate(entry)) {
      this.#maybeCommit();
      return;
    }
    this.#enqueue(entry);
  }

  #forget(rel: string): void {
    const entry = this.#entries.get(rel);
    if (!entry) return;
    this.#clearTimer(entry);
    this.#entries.delete(rel);
    if (entry.uploaded) this.#changed();
    if (entry.lastError !== undefined) this.#clearFailuresIfRecovered();
    this.#maybeCommit();
  }

  /** The set of uploaded versions changed. */
  #changed(): void {
    this.#gen++;
    this.#uncommittedSince ??= Date.now();
  }

  // ---------------------------------------------------------------------------------------------
  // Uploading

  #enqueue(entry: Entry): void {
    this.#clearTimer(entry);
    if (entry.busy) {
      entry.again = true;
      return;
    }
    entry.busy = true;
    this.#queue.push(entry.rel);
    this.#pump();
  }

  #pump(): void {
    while (this.#running.size < this.#concurrency && this.#queue.length > 0 && !this.#closing) {
      const rel = this.#queue.shift() as string;
      this.#batchStartedAt ??= Date.now();
      const run: Promise<void> = this.#syncEntry(rel).finally(() => {
        this.#running.delete(run);
        this.#pump();
      });
      this.#running.add(run);
    }
    if (this.#running.size === 0 && this.#queue.length === 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const wake of waiters) wake();
      this.#maybeCommit();
    }
  }

  async #syncEntry(rel: string): Promise<void> {
    const entry = this.#entries.get(rel);
    if (!entry) return;
    let outcome: SyncOutcome;
    try {
      outcome = await this.#uploadFile(entry, this.#closeController.signal);
    } catch (err) {
      outcome = 'failed';
      if (!this.#closeController.signal.aborted) {
        entry.failures++;
        entry.lastError = describeError(err);
        this.#logger.warn({ file: rel, err: entry.lastError, failures: entry.failures }, 'checkpoint upload failed');
        this.#recordFailure('upload', rel, entry.lastError);
      }
    } finally {
      entry.busy = false;
    }
    if (this.#entries.get(rel) !== entry || this.#closing) return;
    const again = entry.again;
    entry.again = false;
    if (again && outcome !== 'changed' && outcome !== 'failed') {
      // Asked for again while busy (a flush, or a newer settled version): queue it now, before the
      // pump looks for idleness, so a flush waiting for idle also waits for this one.
      entry.busy = true;
      this.#queue.push(rel);
    } else if (outcome === 'changed') {
      // Written to while we read it: wait for it to settle again.
      this.#arm(entry, Math.max(0, entry.changedAt + this.#settleMs - Date.now()));
    } else if (outcome === 'failed') {
      const backoffMs = Math.min(FAILURE_BACKOFF_MAX_MS, Math.max(1000, this.#settleMs) * 2 ** Math.min(entry.failures - 1, 10));
      this.#arm(entry, backoffMs);
    } else if (outcome === 'up-to-date' && !isUpToDate(entry)) {
      // The file changed after the version we uploaded was read.
      this.#arm(entry, Math.max(0, entry.changedAt + this.#settleMs - Date.now()));
    }
  }

  /**
   * Hashes the file, uploads it unless the store has that content already, and records the version
   * as uploaded. The store verifies while uploading that it sends exactly the hashed bytes, so a
   * version is only ever recorded with the bytes its checksum describes.
   */
  async #uploadFile(entry: Entry, signal: AbortSignal): Promise<SyncOutcome> {
    const file = path.join(this.dir, entry.rel);
    let before: Stats;
    try {
      before = await lstat(file);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      this.#forget(entry.rel);
      return 'gone';
    }
    if (!before.isFile()) {
      this.#forget(entry.rel);
      return 'gone';
    }
    if (before.size !== entry.size || before.mtimeMs !== entry.mtimeMs) {
      // Changed since it was judged settled (or stable, in a final flush): it is being written.
      this.#observe(entry.rel, before.size, before.mtimeMs);
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
        this.#forget(entry.rel);
        return 'gone';
      }
      if (after.size !== before.size || after.mtimeMs !== before.mtimeMs || hashed.size !== before.size) {
        this.#observe(entry.rel, after.size, after.mtimeMs);
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
    const key = checkpointKeys.object('', this.runId, version.sha256);
    let sent = 0;
    if (this.#known.get(version.sha256) !== version.size) {
      const head = await this.#store.head(key, { signal });
      if (head?.size !== version.size) {
        const startedAt = Date.now();
        try {
          ({ uploadedBytes: sent } = await this.#store.put(key, data ?? file, {
            sha256: version.sha256,
            size: version.size,
            signal,
            // Still being retried, but failing: visible now, not when the store gives up.
            onRetry: (err) => {
              entry.lastError = describeError(err);
              this.#recordFailure('upload', entry.rel, entry.lastError);
            },
          }));
        } catch (err) {
          if (err instanceof ContentMismatchError) {
            // Changed without a new size or mtime: the digest taken ahead is worthless now.
            entry.hashed = undefined;
            this.#logger.debug({ file: entry.rel }, 'checkpoint file changed during upload');
            await this.#restat(entry.rel);
            return 'changed';
          }
          throw err;
        }
        const durationMs = Date.now() - startedAt;
        this.#logger.debug(
          { file: entry.rel, bytes: sent, durationMs, mbPerS: Math.round((sent / 1e6 / Math.max(durationMs, 1)) * 1000 * 10) / 10 },
          'checkpoint file uploaded',
        );
      }
      this.#known.set(version.sha256, version.size);
    }
    this.#uploadedBytesTotal += sent;
    // Only a version whose object is confirmed in the store ever gets here.
    if (this.#entries.get(entry.rel) !== entry) return 'gone';
    entry.uploaded = version;
    entry.failures = 0;
    entry.lastError = undefined;
    this.#changed();
    this.#clearFailuresIfRecovered();
    return 'uploaded';
  }

  #whenIdle(signal: AbortSignal): Promise<void> {
    if (this.#running.size === 0 && this.#queue.length === 0) return Promise.resolve();
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

  // ---------------------------------------------------------------------------------------------
  // Committing

  /** Commits in the background once a batch is done (see `maxCommitDelayMs`). */
  #maybeCommit(): void {
    if (this.#closing || this.#flushing > 0) return;
    // One background commit at a time; when it ends it looks again. After a failure, its backoff.
    if (this.#backgroundCommit || this.#commitRetryTimer) return;
    if (this.#gen === this.#committedGen) return;
    if (this.#running.size > 0 || this.#queue.length > 0) return;
    clearTimeout(this.#commitDelayTimer);
    this.#commitDelayTimer = undefined;
    const settling = [...this.#entries.values()].some((e) => e.timer !== undefined && !isUpToDate(e));
    const waitedMs = Date.now() - (this.#uncommittedSince ?? Date.now());
    if (settling && waitedMs < this.#maxCommitDelayMs) {
      // Files of the same batch are still settling; their uploads end in another look. This timer
      // only covers a file that never settles.
      this.#commitDelayTimer = setTimeout(() => {
        this.#commitDelayTimer = undefined;
        this.#maybeCommit();
      }, this.#maxCommitDelayMs - waitedMs);
      this.#commitDelayTimer.unref();
      return;
    }
    const controller = new AbortController();
    this.#backgroundCommit = controller;
    const signal = AbortSignal.any([this.#closeController.signal, controller.signal]);
    void this.#serialCommit('settled', signal).then(
      () => {
        this.#commitFailures = 0;
        if (this.#backgroundCommit === controller) this.#backgroundCommit = undefined;
        this.#maybeCommit();
      },
      (err: unknown) => {
        if (this.#backgroundCommit === controller) this.#backgroundCommit = undefined;
        // Aborted by a flush (which commits itself) or by close.
        if (signal.aborted) return this.#maybeCommit();
        this.#commitFailures++;
        this.#logger.warn({ err: describeError(err), failures: this.#commitFailures }, 'checkpoint commit failed; will retry');
        this.#recordFailure('commit', null, describeError(err));
        this.#commitRetryTimer = setTimeout(
          () => {
            this.#commitRetryTimer = undefined;
            this.#maybeCommit();
          },
          Math.min(FAILURE_BACKOFF_MAX_MS, 1000 * 2 ** Math.min(this.#commitFailures - 1, 10)),
        );
        this.#commitRetryTimer.unref();
      },
    );
  }

  #serialCommit(reason: string, signal: AbortSignal, flush?: FlushAccount): Promise<boolean> {
    const run = this.#commitChain.then(() => this.#commit(reason, signal, flush));
    this.#commitChain = run.catch(() => undefined);
    return run;
  }

  async #latestSeq(signal: AbortSignal): Promise<number> {
    if (this.#lastSeq === undefined) {
      const keys = await this.#store.list(checkpointKeys.manifestsPrefix('', this.runId), { signal });
      let max = 0;
      for (const key of keys) max = Math.max(max, checkpointKeys.seqOf(key) ?? 0);
      this.#lastSeq = max;
    }
    return this.#lastSeq;
  }

  /**
   * Writes a manifest of every current file's latest uploaded version, if that differs from the
   * last one written (false: nothing changed). Every object it names is already confirmed in the store.
   */
  async #commit(reason: string, signal: AbortSignal, flush?: FlushAccount): Promise<boolean> {
    signal.throwIfAborted();
    const gen = this.#gen;
    if (gen === this.#committedGen) return false;
    const files = [...this.#entries.values()]
      .flatMap((e) => (e.uploaded ? [e.uploaded] : []))
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const uploadedTotal = this.#uploadedBytesTotal;
    const seq = (await this.#latestSeq(signal)) + 1;
    const manifest: CheckpointManifest = { version: 1, runId: this.runId, seq, createdAt: Date.now(), reason, files };
    const body = Buffer.from(`${JSON.stringify(manifest)}\n`);
    await this.#store.put(checkpointKeys.manifest('', this.runId, seq), body, { sha256: sha256Hex(body), size: body.length, signal });
    this.#lastSeq = seq;
    this.#committedGen = gen;
    if (this.#gen === gen) this.#uncommittedSince = undefined;
    const bytes = files.reduce((sum, f) => sum + f.size, 0);
    this.#lastCommitted = { seq, files: files.length, bytes };
    // A flush's set reports what that flush sent and how long it took, not earlier uploads.
    const event: CheckpointCommittedEvent = {
      seq,
      files: files.length,
      bytes,
      uploadedBytes: uploadedTotal - (flush?.uploadedAtStart ?? this.#uploadedBytesCommitted),
      reason,
      durationMs: Date.now() - (flush?.startedAt ?? this.#batchStartedAt ?? Date.now()),
    };
    this.#uploadedBytesCommitted = uploadedTotal;
    this.#batchStartedAt = undefined;
    this.#commitFailures = 0;
    this.#clearFailuresIfRecovered();
    this.#logger.info({ ...event, store: this.#store.location }, 'checkpoint committed');
    try {
      this.#onCommitted?.(event);
    } catch (err) {
      this.#logger.error({ err: describeError(err) }, 'onCommitted threw');
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // Flushing

  /** Walks the folder: the watcher may lag behind, a flush must not. */
  async #rescan(signal: AbortSignal): Promise<void> {
    const seen = new Set<string>();
    const walk = async (absDir: string, depth: number): Promise<void> => {
      signal.throwIfAborted();
      if (depth > 64) return;
      let names: string[];
      try {
        names = await readdir(absDir);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      for (const name of names) {
        if (this.#isIgnored(name)) continue;
        const abs = path.join(absDir, name);
        let st: Stats;
        try {
          st = await lstat(abs);
        } catch (err) {
          if (isNotFound(err)) continue;
          throw err;
        }
        if (st.isDirectory()) await walk(abs, depth + 1);
        else if (st.isFile()) {
          const rel = toRel(this.dir, abs);
          seen.add(rel);
          this.#observe(rel, st.size, st.mtimeMs);
        }
      }
    };
    await walk(this.dir, 0);
    for (const rel of [...this.#entries.keys()]) if (!seen.has(rel)) this.#forget(rel);
  }

  /**
   * Hashes `entries` one after the other until `untilAt` (the one in progress then finishes), for
   * `#uploadFile` to use if the file's size and mtime are still the same then. In the background;
   * a failure only means the upload hashes the file itself.
   */
  #hashAhead(entries: readonly Entry[], untilAt: number, signal: AbortSignal): void {
    const run = async (): Promise<void> => {
      for (const entry of entries) {
        if (Date.now() >= untilAt || signal.aborted) return;
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
    const file = path.join(this.dir, entry.rel);
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

  /** Size and mtime now, or undefined if the file is gone. */
  async #statOf(rel: string): Promise<{ size: number; mtimeMs: number } | undefined> {
    try {
      const st = await lstat(path.join(this.dir, rel));
      return st.isFile() ? { size: st.size, mtimeMs: st.mtimeMs } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Uploads what can be uploaded now and commits a set. Waits for uploads in flight, then uploads
   * every settled file (for a final flush: every file not being written at this moment), then writes
   * the manifest. Never throws: failures are reported in `error`, and whatever was uploaded is
   * still committed (a file that could not be uploaded keeps its previous version in the set).
   */
  async flush(reason: string, options: FlushOptions = {}): Promise<FlushResult> {
    const startedAt = Date.now();
    try {
      return await this.#flush(reason, options, startedAt);
    } catch (err) {
      // #flush reports its own failures; this only guards the promise never to reject.
      return {
        committedSeq: this.#lastCommitted?.seq ?? null,
        files: this.#lastCommitted?.files ?? 0,
        bytes: this.#lastCommitted?.bytes ?? 0,
        uploadedBytes: 0,
        durationMs: Date.now() - startedAt,
        error: describeError(err),
      };
    }
  }

  async #flush(reason: string, options: FlushOptions, startedAt: number): Promise<FlushResult> {
    const uploadedAtStart = this.#uploadedBytesTotal;
    const final = options.final ?? (reason === 'interruption' || reason === 'exit');
    const problems: string[] = [];
    let unchanged = false;
    const result = (): FlushResult => ({
      committedSeq: this.#lastCommitted?.seq ?? null,
      files: this.#lastCommitted?.files ?? 0,
      bytes: this.#lastCommitted?.bytes ?? 0,
      uploadedBytes: Math.max(0, this.#uploadedBytesTotal - uploadedAtStart),
      durationMs: Date.now() - startedAt,
      error: problems.length ? problems.join('; ') : null,
      ...(unchanged ? { unchanged: true } : {}),
    });
    if (this.#closing) {
      problems.push('checkpoint sync is closed');
      return result();
    }
    // Uploads stop being waited for a little before the deadline, leaving time for the manifest.
    const deadlineAt = options.deadlineAt;
    const remainingMs = deadlineAt !== undefined && Number.isFinite(deadlineAt) ? Math.max(0, Math.floor(deadlineAt - startedAt)) : undefined;
    if (deadlineAt !== undefined && remainingMs === 0) {
      // Say so plainly: anything else would surface as an abort from somewhere in the middle.
      problems.push(`the deadline had already passed when the flush began (${Math.max(0, Math.round(startedAt - deadlineAt))} ms late): nothing was uploaded`);
      this.#logger.warn({ reason, deadlineAt }, 'checkpoint flush skipped: deadline already passed');
      return result();
    }
    const reserveMs = remainingMs !== undefined ? Math.min(3000, Math.floor(remainingMs / 4)) : 0;
    // Owned deadlines (see @spotctl/shared's `deadline`): a collected timeout would never fire.
    using commitDeadline = deadline(remainingMs ?? Number.POSITIVE_INFINITY, this.#closeController.signal, options.signal);
    using uploadDeadline = deadline(remainingMs !== undefined ? remainingMs - reserveMs : Number.POSITIVE_INFINITY, commitDeadline.signal);
    const commitSignal = commitDeadline.signal;
    const uploadSignal = uploadDeadline.signal;
    this.#flushing++;
    clearTimeout(this.#commitDelayTimer);
    this.#commitDelayTimer = undefined;
    clearTimeout(this.#commitRetryTimer);
    this.#commitRetryTimer = undefined;
    // A background commit stuck in an outage must not hold the flush's own commit back.
    this.#backgroundCommit?.abort();
    let committing = false;
    try {
      await this.#rescan(uploadSignal);
      let candidates = [...this.#entries.values()].filter((e) => !isUpToDate(e));
      if (candidates.length > 0) {
        // The set must hold the files as they are now, so whatever is not sent yet is sent, once
        // it has been quiet for a window: the short re-check for a final flush (the job is gone or
        // going, nothing will settle later), the usual settle time while the job runs (a
        // rebalance). What a file's last change left of that window is waited out, not skipped;
        // whatever still changes across it is being written and must not be sent.
        const first = new Map(candidates.map((e) => [e.rel, { size: e.size, mtimeMs: e.mtimeMs }]));
        // Final: the newest mtime (fresh from the rescan) already counts as quiet time, so a job
        // that saved long before it ended is uploaded at once. The slack covers the kernel's coarse
        // timestamp clock; an mtime in the future gets the whole pause. While the job runs: when
        // we last saw each file change.
        const quietMs = final ? this.#finalRecheckMs : this.#settleMs;
        const lastChangeAt = final ? Math.max(...candidates.map((e) => e.mtimeMs)) + MTIME_SLACK_MS : Math.max(...candidates.map((e) => e.changedAt));
        const pauseMs = Math.min(quietMs, Math.max(0, Math.ceil(lastChangeAt + quietMs - Date.now())));
        if (pauseMs > 0) {
          // The pause is idle time: hash what we can meanwhile, so the uploads start right after it.
          this.#hashAhead(candidates, Date.now() + pauseMs, uploadSignal);
          await sleep(pauseMs, undefined, { signal: uploadSignal });
        }
        const stable: Entry[] = [];
        for (const entry of candidates) {
          const was = first.get(entry.rel);
          const st = await this.#statOf(entry.rel);
          if (!st) {
            this.#forget(entry.rel);
          } else if (was && st.size === was.size && st.mtimeMs === was.mtimeMs) {
            stable.push(entry);
          } else {
            this.#observe(entry.rel, st.size, st.mtimeMs);
            this.#logger.warn(
              { file: entry.rel, keptVersion: entry.uploaded?.sha256 ?? null },
              'checkpoint file is still being written; not included in this set',
            );
          }
        }
        candidates = stable;
      }
      // With a deadline, a failed upload is tried again until the deadline: an outage that spans
      // the notice (or a retry budget the SDK already spent) must not cost the final set. Without
      // one, the background retries take over after a single pass.
      const failed = (): Entry[] =>
        candidates.filter((e) => this.#entries.get(e.rel) === e && !isUpToDate(e) && e.lastError !== undefined && !e.busy);
      for (let pass = 0; ; pass++) {
        for (const entry of pass === 0 ? candidates : failed()) this.#enqueue(entry);
        try {
          await this.#whenIdle(uploadSignal);
        } catch {
          const left = [...this.#entries.values()].filter((e) => e.busy).map((e) => e.rel);
          problems.push(`uploads unfinished at the deadline: ${left.join(', ') || 'none'}`);
          break;
        }
        if (remainingMs === undefined || failed().length === 0) break;
        const delayMs = Math.min(FLUSH_RETRY_MAX_MS, FLUSH_RETRY_FIRST_MS * 2 ** Math.min(pass, 10));
        try {
          await sleep(delayMs, undefined, { signal: uploadSignal });
        } catch {
          break;
        }
      }
      for (const entry of failed()) problems.push(`${entry.rel}: ${entry.lastError}`);
      committing = true;
      unchanged = !(await this.#serialCommit(reason, commitSignal, { startedAt, uploadedAtStart }));
    } catch (err) {
      const what = commitSignal.aborted && !this.#closeController.signal.aborted ? `flush deadline passed: ${describeError(err)}` : describeError(err);
      problems.push(committing ? `commit failed: ${what}` : what);
      if (committing && !this.#closeController.signal.aborted) this.#recordFailure('commit', null, describeError(err));
    } finally {
      this.#flushing--;
    }
    const out = result();
    this.#logger.info({ reason, ...out }, 'checkpoint flush done');
    this.#maybeCommit();
    return out;
  }

  // ---------------------------------------------------------------------------------------------

  /** Stops watching and abandons uploads in flight; idempotent. Call `flush` first to keep work. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#commitDelayTimer);
      clearTimeout(this.#commitRetryTimer);
      for (const entry of this.#entries.values()) this.#clearTimer(entry);
      this.#queue.length = 0;
      this.#closeController.abort(new Error('checkpoint sync closed'));
      // Aborted uploads end quickly and the watcher closes at once; bounded anyway (a loaded
      // machine, a stuck file system): closing must not hang the agent.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([this.#watcher?.close(), ...this.#running, this.#commitChain]),
        new Promise((resolve) => (timer = setTimeout(resolve, 5000))),
      ]);
      clearTimeout(timer);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
