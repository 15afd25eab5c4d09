/**
 * A flush: uploads what can be uploaded now and commits a set, by a deadline. Used for a rebalance
 * recommendation (the job runs on), an interruption and the job's end (final: nothing will settle
 * later). It never throws: failures are reported in the result's `error`, and whatever was uploaded
 * is still committed (a file that could not be uploaded keeps its previous version in the set).
 */
import { deadline, type FlushResult } from '@spotctl/shared';
import { sleepOn } from '../clock.ts';
import type { Committer } from './committer.ts';
import { describeError, type CheckpointLogger } from './retry.ts';
import { isUpToDate, type CheckpointClock, type Entry, type SettleTracker } from './settle-tracker.ts';
import type { UploadQueue } from './upload-queue.ts';

/** File timestamps come from the kernel's coarse clock, a tick or so behind `Date.now()`. */
const MTIME_SLACK_MS = 20;
/** A flush with a deadline retries failed uploads from this pause, doubling up to the max. */
const FLUSH_RETRY_FIRST_MS = 250;
const FLUSH_RETRY_MAX_MS = 5000;

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

export interface FlushParts {
  tracker: SettleTracker;
  queue: UploadQueue;
  committer: Committer;
  clock: CheckpointClock;
  logger: CheckpointLogger;
  /** Aborts when the sync closes. */
  closeSignal: AbortSignal;
  settleMs: number;
  finalRecheckMs: number;
  /** The flush's own commit failed. */
  onCommitFailed(error: string): void;
}

export async function runFlush(parts: FlushParts, reason: string, options: FlushOptions, startedAt: number): Promise<FlushResult> {
  const { tracker, queue, committer, clock, logger, closeSignal } = parts;
  const uploadedAtStart = queue.uploadedBytesTotal;
  const final = options.final ?? (reason === 'interruption' || reason === 'exit');
  const problems: string[] = [];
  let unchanged = false;
  const result = (): FlushResult => ({
    committedSeq: committer.lastCommitted?.seq ?? null,
    files: committer.lastCommitted?.files ?? 0,
    bytes: committer.lastCommitted?.bytes ?? 0,
    uploadedBytes: Math.max(0, queue.uploadedBytesTotal - uploadedAtStart),
    durationMs: Math.max(0, clock.now() - startedAt),
    error: problems.length ? problems.join('; ') : null,
    ...(unchanged ? { unchanged: true } : {}),
  });
  // Uploads stop being waited for a little before the deadline, leaving time for the manifest.
  const deadlineAt = options.deadlineAt;
  const remainingMs = deadlineAt !== undefined && Number.isFinite(deadlineAt) ? Math.max(0, Math.floor(deadlineAt - startedAt)) : undefined;
  if (deadlineAt !== undefined && remainingMs === 0) {
    // Say so plainly: anything else would surface as an abort from somewhere in the middle.
    problems.push(
      `the deadline had already passed when the flush began (${Math.max(0, Math.round(startedAt - deadlineAt))} ms late): nothing was uploaded`,
    );
    logger.warn({ reason, deadlineAt }, 'checkpoint flush skipped: deadline already passed');
    return result();
  }
  const reserveMs = remainingMs !== undefined ? Math.min(3000, Math.floor(remainingMs / 4)) : 0;
  // Owned deadlines (see @spotctl/shared's `deadline`): a collected timeout would never fire.
  using commitDeadline = deadline(remainingMs ?? Number.POSITIVE_INFINITY, closeSignal, options.signal);
  using uploadDeadline = deadline(remainingMs !== undefined ? remainingMs - reserveMs : Number.POSITIVE_INFINITY, commitDeadline.signal);
  const commitSignal = commitDeadline.signal;
  const uploadSignal = uploadDeadline.signal;
  committer.beginFlush();
  let committing = false;
  try {
    await tracker.rescan(uploadSignal);
    let candidates = [...tracker.entries.values()].filter((e) => !isUpToDate(e));
    if (candidates.length > 0) {
      // The set must hold the files as they are now, so whatever is not sent yet is sent, once it
      // has been quiet for a window: the short re-check for a final flush (the job is gone or
      // going, nothing will settle later), the usual settle time while the job runs (a
      // rebalance). What a file's last change left of that window is waited out, not skipped;
      // whatever still changes across it is being written and must not be sent.
      const first = new Map(candidates.map((e) => [e.rel, { size: e.size, mtimeMs: e.mtimeMs }]));
      // Final: the newest mtime (fresh from the rescan) already counts as quiet time, so a job
      // that saved long before it ended is uploaded at once. The slack covers the kernel's coarse
      // timestamp clock; an mtime in the future gets the whole pause. While the job runs: when we
      // last saw each file change.
      const quietMs = final ? parts.finalRecheckMs : parts.settleMs;
      const lastChangeAt = final
        ? Math.max(...candidates.map((e) => e.mtimeMs)) + MTIME_SLACK_MS
        : Math.max(...candidates.map((e) => e.changedAt));
      const pauseMs = Math.min(quietMs, Math.max(0, Math.ceil(lastChangeAt + quietMs - clock.now())));
      if (pauseMs > 0) {
        // The pause is idle time: hash what we can meanwhile, so the uploads start right after it.
        queue.hashAhead(candidates, clock.now() + pauseMs, uploadSignal);
        await sleepOn(clock, pauseMs, uploadSignal);
      }
      const stable: Entry[] = [];
      for (const entry of candidates) {
        const was = first.get(entry.rel);
        const st = await tracker.statOf(entry.rel);
        if (!st) {
          tracker.forget(entry.rel);
        } else if (was && st.size === was.size && st.mtimeMs === was.mtimeMs) {
          stable.push(entry);
        } else {
          tracker.observe(entry.rel, st.size, st.mtimeMs);
          logger.warn(
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
      candidates.filter((e) => tracker.entries.get(e.rel) === e && !isUpToDate(e) && e.lastError !== undefined && !e.busy);
    for (let pass = 0; ; pass++) {
      for (const entry of pass === 0 ? candidates : failed()) queue.enqueue(entry);
      try {
        await queue.whenIdle(uploadSignal);
      } catch {
        const left = [...tracker.entries.values()].filter((e) => e.busy).map((e) => e.rel);
        problems.push(`uploads unfinished at the deadline: ${left.join(', ') || 'none'}`);
        break;
      }
      if (remainingMs === undefined || failed().length === 0) break;
      const delayMs = Math.min(FLUSH_RETRY_MAX_MS, FLUSH_RETRY_FIRST_MS * 2 ** Math.min(pass, 10));
      try {
        await sleepOn(clock, delayMs, uploadSignal);
      } catch {
        break;
      }
    }
    for (const entry of failed()) problems.push(`${entry.rel}: ${entry.lastError}`);
    committing = true;
    unchanged = !(await committer.commit(reason, commitSignal, { startedAt, uploadedAtStart }));
  } catch (err) {
    const what = commitSignal.aborted && !closeSignal.aborted ? `flush deadline passed: ${describeError(err)}` : describeError(err);
    problems.push(committing ? `commit failed: ${what}` : what);
    if (committing && !closeSignal.aborted) {
      committer.noteFailure();
      parts.onCommitFailed(describeError(err));
    }
  } finally {
    committer.endFlush();
  }
  const out = result();
  logger.info({ reason, ...out }, 'checkpoint flush done');
  return out;
}
