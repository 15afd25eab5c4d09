/** How interruption notices, rebalance recommendations and checkpoints show up in the terminal. */
import {
  formatBytes,
  type CheckpointFailedEvent,
  type CheckpointHealth,
  type FlushResult,
  type InterruptionReport,
  type ServerEvent,
} from '@spotctl/shared';
import { formatDuration, type Output } from '../output/output.ts';

type SpotEvent = Extract<ServerEvent, { event: 'interruption' | 'rebalance' | 'checkpoint' | 'checkpoint-failed' | 'interruption-report' }>;

/** After the first failure is shown, failing checkpoints are summed up at most this often. */
export const CHECKPOINT_FAILURE_SUMMARY_MS = 30_000;

/** What a set saved by a flush (final, interruption) says; one sentence per outcome. */
function describeFlush(flush: FlushResult, target: string | null): string {
  const where = target ? ` → ${target}` : '';
  if (flush.error) {
    const kept =
      flush.committedSeq !== null
        ? `the newest set that got through is #${flush.committedSeq} (${flush.files} files, ${formatBytes(flush.bytes)})`
        : 'no set got through';
    return `final checkpoint failed after ${formatDuration(flush.durationMs)}: ${flush.error}; ${kept}`;
  }
  if (flush.committedSeq === null) return 'the checkpoint folder was empty: nothing to save';
  if (flush.unchanged)
    return `final checkpoint: nothing changed since set #${flush.committedSeq} (${flush.files} files, ${formatBytes(flush.bytes)})${where}`;
  return `final checkpoint #${flush.committedSeq}: ${flush.files} files, ${formatBytes(flush.bytes)} (sent ${formatBytes(flush.uploadedBytes)} in ${formatDuration(flush.durationMs)})${where}`;
}

export function describeReport(report: InterruptionReport): string {
  const { notice, flush } = report;
  const stopped =
    report.jobEndedAt !== null
      ? `job ended ${formatDuration(report.jobEndedAt - report.sigtermAt)} after SIGTERM${report.killed ? ' (killed when the grace ran out)' : ''}`
      : 'job still running';
  const saved = !flush ? 'no checkpointing configured: nothing saved' : describeFlush(flush, report.target);
  const margin = notice.deadlineAt - (report.jobEndedAt ?? notice.noticedAt) - (flush?.durationMs ?? 0);
  return `${report.simulated ? 'rehearsed interruption' : 'spot interruption'} (${notice.action}): ${stopped}; ${saved}; ${formatDuration(Math.max(0, margin))} to spare before the deadline`;
}

/** What to do about checkpoints that do not get through to `target`. */
export function checkpointRemediation(target: string): string {
  return target.startsWith('s3://')
    ? `check that the host can write to ${target}: its AWS credentials (the instance role, or the keys spotctl forwards), the bucket's name and region, and the endpoint (try: aws s3 ls ${target})`
    : `check that ${target} exists on the host, is writable, and its disk is not full`;
}

/**
 * The final word on checkpoints when the job's end comes: undefined when all went well or a
 * report (the interruption's) already said it.
 */
export function describeFinalCheckpoints(health: CheckpointHealth | undefined, target: string | undefined): string | undefined {
  const flush = health?.finalFlush;
  if (!health || !flush?.error) return undefined;
  return `${describeFlush(flush, null)}${target ? `. ${checkpointRemediation(target)}` : ''}`;
}

export interface SpotEventPrinterOptions {
  /** @default Date.now */
  now?: () => number;
}

/**
 * Returns a handler for the follow loop. Periodic checkpoints are shown at most every 10 s; a
 * set the interruption saved is left to the report, so each set is told once. Failing uploads: the
 * first failure at once, then a summary at most every 30 s, and a word when they get through again.
 */
export function spotEventPrinter(out: Output, options: SpotEventPrinterOptions = {}): (event: SpotEvent) => void {
  const now = options.now ?? Date.now;
  let lastCheckpointShownAt = 0;
  /** Failures seen and not yet shown, since the last time they were. */
  let failing: { shownAt: number; unshown: number; files: Set<string>; commits: number } | undefined;
  const showFailure = (event: CheckpointFailedEvent, first: boolean, unshown: number, files: number, commits: number): void => {
    const what = event.what === 'upload' ? `upload of ${event.file ?? 'a file'}` : 'commit of a set';
    const text = first
      ? `checkpoint ${what} failed: ${event.message}; retrying. ${checkpointRemediation(event.target)}`
      : `checkpoints still not getting through: ${unshown} more failures in the last ${formatDuration(now() - (failing?.shownAt ?? now()))} (${files} files${commits ? `, ${commits} commits` : ''}), ${event.failures} since ${formatDuration(Math.max(0, now() - event.failingSince))} ago; last error: ${event.message}. ${checkpointRemediation(event.target)}`;
    out.warn(text, {
      event: 'checkpoint-failed',
      what: event.what,
      file: event.file,
      message: event.message,
      failures: event.failures,
      failingSince: event.failingSince,
      target: event.target,
    });
  };
  return (event) => {
    switch (event.event) {
      case 'interruption': {
        const n = event.notice;
        out.warn(
          `spot interruption notice: ${n.action} at ${n.time} (in ${formatDuration(Math.max(0, n.deadlineAt - n.noticedAt))}); SIGTERM sent to the job, SIGKILL after ${formatDuration(n.graceMs)}; ${formatBytes(n.pendingBytes)} of checkpoints not yet uploaded`,
          { event: 'interruption', notice: n },
        );
        return;
      }
      case 'rebalance':
        out.warn(`rebalance recommendation (${event.noticeTime}): interruption risk is elevated; action: ${event.action}`, {
          event: 'rebalance',
          noticeTime: event.noticeTime,
        });
        return;
      case 'checkpoint': {
        const at = now();
        if (failing) {
          failing = undefined;
          out.info(`checkpoints get through again: set #${event.seq} committed`, { event: 'checkpoint-recovered', seq: event.seq });
        }
        // The interruption report describes the set its flush saved.
        if (event.reason === 'interruption' && !out.json) return;
        if (event.reason === 'periodic' && at - lastCheckpointShownAt < 10_000 && !out.json) return;
        lastCheckpointShownAt = at;
        out.info(
          `checkpoint #${event.seq} committed (${event.reason}): ${event.files} files, ${formatBytes(event.bytes)}, sent ${formatBytes(event.uploadedBytes)} in ${formatDuration(event.durationMs)}`,
          {
            event: 'checkpoint',
            seq: event.seq,
            files: event.files,
            bytes: event.bytes,
            uploadedBytes: event.uploadedBytes,
            durationMs: event.durationMs,
            reason: event.reason,
          },
        );
        return;
      }
      case 'checkpoint-failed': {
        const at = now();
        if (!failing) {
          failing = { shownAt: at, unshown: 0, files: new Set(), commits: 0 };
          showFailure(event, true, 0, 0, 0);
          return;
        }
        failing.unshown++;
        if (event.file) failing.files.add(event.file);
        if (event.what === 'commit') failing.commits++;
        if (at - failing.shownAt < CHECKPOINT_FAILURE_SUMMARY_MS) return;
        showFailure(event, false, failing.unshown, failing.files.size, failing.commits);
        failing = { shownAt: at, unshown: 0, files: new Set(), commits: 0 };
        return;
      }
      case 'interruption-report':
        // The job's final status carries the same report; finishRun prints it once, for run and attach alike.
        return;
      default: {
        const never: never = event;
        void never;
      }
    }
  };
}
