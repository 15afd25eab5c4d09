/**
 * Keeps the job's checkpoint folder in the store while the job runs, so an interruption loses at
 * most the last moments of work.
 *
 * A file is uploaded once it has settled (size and mtime unchanged for `settleMs`), under a
 * content-addressed key, so an unchanged file is never sent twice. Once a batch of uploads is done,
 * a manifest naming every current file's latest uploaded version is written, and only then: the
 * objects of a set always exist before the set does. The job never waits for any of this.
 *
 * This façade wires four mechanisms, each in its own file: settle tracking (settle-tracker.ts), the
 * upload queue (upload-queue.ts), the committer (committer.ts) and the flush (flush.ts); it owns the
 * watcher, the failure record behind `health()`, and the close.
 */
import type { Stats } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { CheckpointHealth, FlushResult } from '@spotctl/shared';
import { systemClock } from '../clock.ts';
import { Committer, type CheckpointCommittedEvent } from './committer.ts';
import { runFlush, type FlushOptions } from './flush.ts';
import { describeError, silentLogger, type CheckpointLogger } from './retry.ts';
import { SettleTracker, toRel, type CheckpointClock } from './settle-tracker.ts';
import type { ObjectStore } from './store.ts';
import { UploadQueue } from './upload-queue.ts';

export type { CheckpointCommittedEvent } from './committer.ts';
export type { FlushOptions } from './flush.ts';
export type { CheckpointClock } from './settle-tracker.ts';

/**
 * Names that are never uploaded: jobs write `x.tmp` (or `.x`) and rename it into place, so the
 * half-written file is never a candidate.
 */
export const DEFAULT_IGNORE_PATTERNS: readonly RegExp[] = [/\.tmp$/i, /\.partial$/i, /^\./, /~$/];

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
  /**
   * Settle, commit-delay and retry timers and the flush's pauses (flush deadlines stay on real
   * time). Tests drive it instead of sleeping. @default the system clock
   */
  clock?: CheckpointClock;
}

export class CheckpointSync implements AsyncDisposable {
  readonly runId: string;
  readonly dir: string;
  readonly #store: ObjectStore;
  readonly #logger: CheckpointLogger;
  readonly #clock: CheckpointClock;
  readonly #onFailure: ((failure: CheckpointFailure) => void) | undefined;
  readonly #readyTimeoutMs: number;
  readonly #settleMs: number;
  readonly #finalRecheckMs: number;
  readonly #closeController = new AbortController();
  readonly #tracker: SettleTracker;
  readonly #queue: UploadQueue;
  readonly #committer: Committer;
  #watcher: FSWatcher | undefined;
  #closing: Promise<void> | undefined;
  /** The current run of failed uploads and commits; undefined while checkpoints get through. */
  #failing: { since: number; count: number; lastError: string } | undefined;

  private constructor(options: CheckpointSyncOptions) {
    if (!path.isAbsolute(options.dir)) throw new Error(`checkpoint dir must be absolute: ${options.dir}`);
    this.runId = options.runId;
    this.dir = path.resolve(options.dir);
    this.#store = options.store;
    this.#logger = options.logger ?? silentLogger;
    this.#clock = options.clock ?? systemClock;
    this.#onFailure = options.onFailure;
    this.#readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
    this.#settleMs = options.settleMs ?? 2000;
    this.#finalRecheckMs = options.finalRecheckMs ?? 300;
    const onCommitted = options.onCommitted;
    this.#tracker = new SettleTracker({
      dir: this.dir,
      settleMs: this.#settleMs,
      ignore: options.ignore ?? DEFAULT_IGNORE_PATTERNS,
      clock: this.#clock,
      onSettled: (entry) => this.#queue.enqueue(entry),
      onSettledUpToDate: () => this.#committer.maybeCommit(),
      onForgotten: (entry) => {
        if (entry.uploaded) this.#committer.changed();
        if (entry.lastError !== undefined) this.#clearFailuresIfRecovered();
        this.#committer.maybeCommit();
      },
    });
    this.#queue = new UploadQueue({
      runId: this.runId,
      dir: this.dir,
      store: this.#store,
      concurrency: Math.max(1, options.uploadConcurrency ?? 8),
      tracker: this.#tracker,
      clock: this.#clock,
      logger: this.#logger,
      signal: this.#closeController.signal,
      onStart: () => this.#committer.batchStarted(),
      onUploaded: () => {
        this.#committer.changed();
        this.#clearFailuresIfRecovered();
      },
      onFailed: (entry, error) => this.#recordFailure('upload', entry.rel, error),
      onIdle: () => this.#committer.maybeCommit(),
    });
    this.#committer = new Committer({
      runId: this.runId,
      store: this.#store,
      clock: this.#clock,
      logger: this.#logger,
      maxCommitDelayMs: options.maxCommitDelayMs ?? 30_000,
      signal: this.#closeController.signal,
      files: () => [...this.#tracker.entries.values()].flatMap((e) => (e.uploaded ? [e.uploaded] : [])),
      uploading: () => !this.#queue.idle,
      settling: () => this.#tracker.settling(),
      uploadedBytesTotal: () => this.#queue.uploadedBytesTotal,
      onCommitted: (event) => {
        this.#clearFailuresIfRecovered();
        onCommitted?.(event);
      },
      onFailed: (error) => this.#recordFailure('commit', null, error),
    });
  }

  /** Creates the folder if needed and starts watching it; files already there count. */
  static async start(options: CheckpointSyncOptions): Promise<CheckpointSync> {
    const sync = new CheckpointSync(options);
    await sync.#startWatching();
    return sync;
  }

  async #startWatching(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const tracker = this.#tracker;
    const watcher = watch(this.dir, {
      ignoreInitial: false,
      alwaysStat: true,
      followSymlinks: false,
      // Our own settle timer decides when a file is finished: it also serves pendingBytes() and
      // the final flush, which awaitWriteFinish cannot.
      awaitWriteFinish: false,
      ignored: (file: string) => file !== this.dir && tracker.isIgnored(path.basename(file)),
    });
    this.#watcher = watcher;
    const onFile = (file: string, stats?: Stats): void => {
      if (stats && !stats.isFile()) return;
      const rel = toRel(this.dir, file);
      if (stats) tracker.observe(rel, stats.size, stats.mtimeMs);
      else void tracker.restat(rel);
    };
    watcher.on('add', onFile);
    watcher.on('change', onFile);
    watcher.on('unlink', (file: string) => tracker.forget(toRel(this.dir, file)));
    watcher.on('unlinkDir', (dir: string) => tracker.forgetUnder(toRel(this.dir, dir)));
    watcher.on('error', (err: unknown) => this.#logger.warn({ err: describeError(err) }, 'checkpoint watcher error'));
    let timer: NodeJS.Timeout | undefined;
    const ready = await Promise.race([
      new Promise<boolean>((resolve) => watcher.once('ready', () => resolve(true))),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.#readyTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (!ready) this.#logger.warn({ dir: this.dir }, 'checkpoint watcher is still scanning; continuing');
    this.#logger.info({ dir: this.dir, store: this.#store.location, files: tracker.entries.size }, 'watching checkpoint folder');
  }

  /** Bytes of files seen but not yet uploaded in their current version. */
  pendingBytes(): number {
    return this.#tracker.pendingBytes();
  }

  /** The last set written by this sync, if any. */
  get lastCommitted(): { seq: number; files: number; bytes: number } | undefined {
    return this.#committer.lastCommitted;
  }

  /** Whether checkpoints are getting through (for the job's status). */
  health(): CheckpointHealth {
    return {
      failing: this.#failing !== undefined,
      failures: this.#failing?.count ?? 0,
      failingSince: this.#failing?.since ?? null,
      lastError: this.#failing?.lastError ?? null,
      lastCommittedSeq: this.#committer.lastCommitted?.seq ?? null,
    };
  }

  #recordFailure(what: 'upload' | 'commit', file: string | null, error: string): void {
    // What failed, with the error: `ps` shows this line alone, so it names the file (or the commit).
    const described = `${file ?? what}: ${error}`;
    const failing = (this.#failing ??= { since: this.#clock.now(), count: 0, lastError: described });
    failing.count++;
    failing.lastError = described;
    try {
      this.#onFailure?.({ what, file, message: error, failures: failing.count, failingSince: failing.since });
    } catch (err) {
      this.#logger.error({ err: describeError(err) }, 'onFailure threw');
    }
  }

  /** Once no file is left failing and the last commit worked, the run of failures is over. */
  #clearFailuresIfRecovered(): void {
    if (!this.#failing || this.#committer.failing) return;
    for (const entry of this.#tracker.entries.values()) if (entry.lastError !== undefined) return;
    this.#logger.info(
      { failures: this.#failing.count, failingForMs: this.#clock.now() - this.#failing.since },
      'checkpoint uploads work again',
    );
    this.#failing = undefined;
  }

  /**
   * Uploads what can be uploaded now and commits a set. Waits for uploads in flight, then uploads
   * every file not yet sent once it has been quiet for a moment (see `runFlush`), then writes the
   * manifest. Never throws: failures are reported in `error`, and whatever was uploaded is still
   * committed (a file that could not be uploaded keeps its previous version in the set).
   */
  async flush(reason: string, options: FlushOptions = {}): Promise<FlushResult> {
    const startedAt = this.#clock.now();
    if (this.#closing) {
      const last = this.#committer.lastCommitted;
      return {
        committedSeq: last?.seq ?? null,
        files: last?.files ?? 0,
        bytes: last?.bytes ?? 0,
        uploadedBytes: 0,
        durationMs: 0,
        error: 'checkpoint sync is closed',
      };
    }
    try {
      return await runFlush(
        {
          tracker: this.#tracker,
          queue: this.#queue,
          committer: this.#committer,
          clock: this.#clock,
          logger: this.#logger,
          closeSignal: this.#closeController.signal,
          settleMs: this.#settleMs,
          finalRecheckMs: this.#finalRecheckMs,
          onCommitFailed: (error) => this.#recordFailure('commit', null, error),
        },
        reason,
        options,
        startedAt,
      );
    } catch (err) {
      // runFlush reports its own failures; this only guards the promise never to reject.
      const last = this.#committer.lastCommitted;
      return {
        committedSeq: last?.seq ?? null,
        files: last?.files ?? 0,
        bytes: last?.bytes ?? 0,
        uploadedBytes: 0,
        durationMs: Math.max(0, this.#clock.now() - startedAt),
        error: describeError(err),
      };
    }
  }

  /** Stops watching and abandons uploads in flight; idempotent. Call `flush` first to keep work. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#committer.close();
      this.#tracker.close();
      this.#queue.close();
      this.#closeController.abort(new Error('checkpoint sync closed'));
      // Aborted uploads end quickly and the watcher closes at once; bounded anyway (a loaded
      // machine, a stuck file system): closing must not hang the agent.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([this.#watcher?.close(), ...this.#queue.running, this.#committer.settled()]),
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
