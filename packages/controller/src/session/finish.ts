import os from 'node:os';
import { exitCodeOf, type JobStatus } from '@spotctl/shared';
import type { Output } from '../output/output.ts';
import { describeCheckpointTarget } from './checkpoint-options.ts';
import { describeFinalCheckpoints, describeReport } from './spot-events.ts';
import type { ProviderSession } from '../providers/provider.ts';
import type { RunRecord, RunStore } from '../runs/run-store.ts';

export function describeEnd(status: JobStatus): string {
  if (status.state === 'failed-to-start') return `job failed to start: ${status.error ?? 'unknown error'}`;
  if (status.signal) return `job killed by ${status.signal}${status.stopReason ? ` (${status.stopReason})` : ''}`;
  return `job exited with code ${status.exitCode ?? '?'}`;
}

/**
 * After the job ended and every line arrived: record the result, let the agent go (its log stays
 * on disk for `spotctl logs`), and return the job's exit code.
 */
export async function finishRun(options: { store: RunStore; record: RunRecord; session: ProviderSession; out: Output; status: JobStatus }): Promise<number> {
  const { store, record, session, out, status } = options;
  store.update(record.runId, { status });
  try {
    const connection = await session.connect();
    await connection.request('shutdown', {}, { timeoutMs: 5000 }).catch(() => undefined);
    await connection.close();
  } catch {
    // The agent is already gone, or will stop itself after its idle timeout.
  }
  if (status.interruption) out.warn(describeReport(status.interruption), { event: 'interruption-report', report: status.interruption });
  else {
    // The flush after the job ended gave up (its budget spent): said once, with what to do.
    const target = record.checkpoint ? describeCheckpointTarget(record.checkpoint.target, record.runId) : undefined;
    const failed = describeFinalCheckpoints(status.checkpoints, target);
    if (failed) out.warn(failed, { event: 'checkpoint-final-failed', flush: status.checkpoints?.finalFlush });
  }
  const code = exitCodeOf(status, os.constants.signals as Record<string, number>);
  const took = status.startedAt && status.endedAt ? ` after ${((status.endedAt - status.startedAt) / 1000).toFixed(1)} s` : '';
  out.result({ runId: record.runId, exitCode: code, status }, `${describeEnd(status)}${took} · run ${record.runId}`);
  return code;
}
