/** How interruption notices, rebalance recommendations and checkpoints show up in the terminal. */
import type { InterruptionReport, ServerEvent } from '@spotctl/shared';
import { formatDuration, type Output } from '../output/output.ts';

type SpotEvent = Extract<ServerEvent, { event: 'interruption' | 'rebalance' | 'checkpoint' | 'interruption-report' }>;

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function describeReport(report: InterruptionReport): string {
  const { notice, flush } = report;
  const stopped = report.jobEndedAt !== null ? `job ended ${formatDuration(report.jobEndedAt - report.sigtermAt)} after SIGTERM${report.killed ? ' (killed when the grace ran out)' : ''}` : 'job still running';
  const saved = !flush
    ? 'no checkpointing configured: nothing saved'
    : flush.committedSeq !== null
      ? `final checkpoint #${flush.committedSeq}: ${flush.files} files, ${formatBytes(flush.bytes)} (sent ${formatBytes(flush.uploadedBytes)} in ${formatDuration(flush.durationMs)})${report.target ? ` → ${report.target}` : ''}`
      : `final checkpoint failed: ${flush.error ?? 'unknown error'}`;
  const margin = notice.deadlineAt - (report.jobEndedAt ?? notice.noticedAt) - (flush?.durationMs ?? 0);
  return `${report.simulated ? 'rehearsed interruption' : 'spot interruption'} (${notice.action}): ${stopped}; ${saved}; ${formatDuration(Math.max(0, margin))} to spare before the deadline`;
}

/** Returns a handler for the follow loop; periodic checkpoints are shown at most every 10 s. */
export function spotEventPrinter(out: Output): (event: SpotEvent) => void {
  let lastCheckpointShownAt = 0;
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
        out.warn(`rebalance recommendation (${event.noticeTime}): interruption risk is elevated; action: ${event.action}`, { event: 'rebalance', noticeTime: event.noticeTime });
        return;
      case 'checkpoint': {
        const now = Date.now();
        if (event.reason === 'periodic' && now - lastCheckpointShownAt < 10_000 && !out.json) return;
        lastCheckpointShownAt = now;
        out.info(`checkpoint #${event.seq} committed (${event.reason}): ${event.files} files, ${formatBytes(event.bytes)}, sent ${formatBytes(event.uploadedBytes)} in ${formatDuration(event.durationMs)}`, { event: 'checkpoint', seq: event.seq, files: event.files, bytes: event.bytes });
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
