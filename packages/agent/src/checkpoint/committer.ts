/**
 * The committer: writes a set (a manifest naming every current file's latest uploaded version)
 * once a batch of uploads is done, and only then, so the objects of a set always exist before the
 * set does. Commits run one after the other (two never pick the same seq); a background commit
 * waits for files of the same batch still settling, retries with backoff, and steps aside for a
 * flush, which commits itself.
 */
import { checkpointKeys, type CheckpointManifest, type ManifestFile } from '@spotctl/shared';
import { sha256Hex } from './hashing.ts';
import { describeError, type CheckpointLogger } from './retry.ts';
import type { CheckpointClock } from './settle-tracker.ts';
import type { ObjectStore } from './store.ts';

const FAILURE_BACKOFF_MAX_MS = 60_000;

export interface CheckpointCommittedEvent {
  seq: number;
  /** Files in the committed set. */
  files: number;
  /** Total size of the committed set. */
  bytes: number;
  /** Bytes sent for this set: since the previous commit, or by the flush that wrote it. */
  uploadedBytes: number;
  reason: string;
  /** From the first upload of the batch (or the start of the flush) to the manifest written. */
  durationMs: number;
}

/** What a flush's own commit reports: its start and the upload total then. */
export interface FlushAccount {
  startedAt: number;
  uploadedAtStart: number;
}

export interface CommitterOptions {
  runId: string;
  store: ObjectStore;
  clock: CheckpointClock;
  logger: CheckpointLogger;
  maxCommitDelayMs: number;
  /** Aborts commits for good (the sync is closing). */
  signal: AbortSignal;
  /** Every current file's latest uploaded version. */
  files(): ManifestFile[];
  /** Uploads are queued or running: the batch is not done. */
  uploading(): boolean;
  /** A file not yet uploaded is still settling. */
  settling(): boolean;
  /** Bytes uploaded so far, in total. */
  uploadedBytesTotal(): number;
  onCommitted(event: CheckpointCommittedEvent): void;
  /** A background commit failed (it is retried with backoff). */
  onFailed(error: string): void;
}

export class Committer {
  readonly #o: CommitterOptions;
  /** Bumped whenever the set of uploaded versions changes; committed when it differs from `#committedGen`. */
  #gen = 0;
  #committedGen = 0;
  /** Highest seq in the store, once looked up. */
  #lastSeq: number | undefined;
  #lastCommitted: { seq: number; files: number; bytes: number } | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  /** Aborts the background commit in progress: a flush commits a newer state itself. */
  #background: AbortController | undefined;
  /** Waits for files still settling before a background commit (see `maxCommitDelayMs`). */
  #delayTimer: unknown;
  /** Backoff after a failed background commit. */
  #retryTimer: unknown;
  #failures = 0;
  #flushing = 0;
  #closed = false;
  /** When the first upload not yet in a committed set finished (for `maxCommitDelayMs`). */
  #uncommittedSince: number | undefined;
  /** When the current batch started (for the commit's `durationMs`). */
  #batchStartedAt: number | undefined;
  #uploadedBytesCommitted = 0;

  constructor(options: CommitterOptions) {
    this.#o = options;
  }

  get lastCommitted(): { seq: number; files: number; bytes: number } | undefined {
    return this.#lastCommitted;
  }

  /** The last commit attempt failed. */
  get failing(): boolean {
    return this.#failures > 0;
  }

  /** A flush's own commit failed: the commit counts as failing until one gets through. */
  noteFailure(): void {
    this.#failures++;
  }

  /** The set of uploaded versions changed. */
  changed(): void {
    this.#gen++;
    this.#uncommittedSince ??= this.#o.clock.now();
  }

  /** An upload of the batch starts. */
  batchStarted(): void {
    this.#batchStartedAt ??= this.#o.clock.now();
  }

  /** A flush takes over: no background commit until `endFlush`, and the one in progress is aborted. */
  beginFlush(): void {
    this.#flushing++;
    this.#clearTimers();
    // A background commit stuck in an outage must not hold the flush's own commit back.
    this.#background?.abort();
  }

  endFlush(): void {
    this.#flushing--;
    this.maybeCommit();
  }

  #clearTimers(): void {
    if (this.#delayTimer !== undefined) this.#o.clock.clearTimeout(this.#delayTimer);
    this.#delayTimer = undefined;
    if (this.#retryTimer !== undefined) this.#o.clock.clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  /** Commits in the background once a batch is done (see `maxCommitDelayMs`). */
  maybeCommit(): void {
    if (this.#closed || this.#flushing > 0) return;
    // One background commit at a time; when it ends it looks again. After a failure, its backoff.
    if (this.#background || this.#retryTimer !== undefined) return;
    if (this.#gen === this.#committedGen) return;
    if (this.#o.uploading()) return;
    const { clock } = this.#o;
    if (this.#delayTimer !== undefined) clock.clearTimeout(this.#delayTimer);
    this.#delayTimer = undefined;
    const waitedMs = clock.now() - (this.#uncommittedSince ?? clock.now());
    if (this.#o.settling() && waitedMs < this.#o.maxCommitDelayMs) {
      // Files of the same batch are still settling; their uploads end in another look. This timer
      // only covers a file that never settles.
      this.#delayTimer = clock.setTimeout(() => {
        this.#delayTimer = undefined;
        this.maybeCommit();
      }, this.#o.maxCommitDelayMs - waitedMs);
      return;
    }
    const controller = new AbortController();
    this.#background = controller;
    // No timeout here (both sources are held): the store's own request timeouts bound a commit.
    const signal = AbortSignal.any([this.#o.signal, controller.signal]);
    void this.commit('settled', signal).then(
      () => {
        if (this.#background === controller) this.#background = undefined;
        this.maybeCommit();
      },
      (err: unknown) => {
        if (this.#background === controller) this.#background = undefined;
        // Aborted by a flush (which commits itself) or by close.
        if (signal.aborted) return this.maybeCommit();
        this.#failures++;
        this.#o.logger.warn({ err: describeError(err), failures: this.#failures }, 'checkpoint commit failed; will retry');
        this.#o.onFailed(describeError(err));
        this.#retryTimer = clock.setTimeout(
          () => {
            this.#retryTimer = undefined;
            this.maybeCommit();
          },
          Math.min(FAILURE_BACKOFF_MAX_MS, 1000 * 2 ** Math.min(this.#failures - 1, 10)),
        );
      },
    );
  }

  /**
   * Writes a set of every current file's latest uploaded version, if that differs from the last
   * one written; false when nothing changed. After any commit in progress.
   */
  commit(reason: string, signal: AbortSignal, flush?: FlushAccount): Promise<boolean> {
    const run = this.#chain.then(() => this.#commit(reason, signal, flush));
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** Resolves once no commit runs (for close). */
  settled(): Promise<unknown> {
    return this.#chain;
  }

  close(): void {
    this.#closed = true;
    this.#clearTimers();
  }

  async #latestSeq(signal: AbortSignal): Promise<number> {
    if (this.#lastSeq === undefined) {
      const keys = await this.#o.store.list(checkpointKeys.manifestsPrefix('', this.#o.runId), { signal });
      let max = 0;
      for (const key of keys) max = Math.max(max, checkpointKeys.seqOf(key) ?? 0);
      this.#lastSeq = max;
    }
    return this.#lastSeq;
  }

  async #commit(reason: string, signal: AbortSignal, flush?: FlushAccount): Promise<boolean> {
    signal.throwIfAborted();
    const { clock, store, runId, logger } = this.#o;
    const gen = this.#gen;
    if (gen === this.#committedGen) return false;
    const files = this.#o.files().sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const uploadedTotal = this.#o.uploadedBytesTotal();
    const seq = (await this.#latestSeq(signal)) + 1;
    const manifest: CheckpointManifest = { version: 1, runId, seq, createdAt: clock.now(), reason, files };
    const body = Buffer.from(`${JSON.stringify(manifest)}\n`);
    await store.put(checkpointKeys.manifest('', runId, seq), body, { sha256: sha256Hex(body), size: body.length, signal });
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
      durationMs: clock.now() - (flush?.startedAt ?? this.#batchStartedAt ?? clock.now()),
    };
    this.#uploadedBytesCommitted = uploadedTotal;
    this.#batchStartedAt = undefined;
    this.#failures = 0;
    logger.info({ ...event, store: store.location }, 'checkpoint committed');
    try {
      this.#o.onCommitted(event);
    } catch (err) {
      logger.error({ err: describeError(err) }, 'onCommitted threw');
    }
    return true;
  }
}
