import os from 'node:os';
import { exitCodeOf, formatLimit, type JobStatus } from '@spotctl/shared';
import type { Output } from '../output/output.ts';
import { describeCheckpointTarget } from './checkpoint-options.ts';
import { describeFinalCheckpoints, describeReport } from './spot-events.ts';
import type { Provider, ProviderSession } from '../providers/provider.ts';
import type { RunRecord, RunStore } from '../runs/run-store.ts';

export function describeEnd(status: JobStatus, maxRuntimeMs?: number): string {
  if (status.stopReason === 'max-runtime') {
    const how = status.signal ? `killed by ${status.signal}` : `exited with code ${status.exitCode ?? '?'}`;
    return `job stopped after max runtime${maxRuntimeMs ? ` ${formatLimit(maxRuntimeMs)}` : ''} (${how})`;
  }
  if (status.state === 'failed-to-start') return `job failed to start: ${status.error ?? 'unknown error'}`;
  if (status.signal)
    return `job killed by ${status.signal}${status.stopReason ? ` (${status.stopReason}${status.error ? `: ${status.error}` : ''})` : ''}`;
  return `job exited with code ${status.exitCode ?? '?'}`;
}

/**
 * Tells the agent it may exit (its log stays on disk for `spotctl logs`). True when it
 * acknowledged; false when it is already gone, or will stop itself after its idle timeout.
 */
export async function letAgentGo(session: ProviderSession, signal?: AbortSignal): Promise<boolean> {
  let connection;
  try {
    connection = await session.connect(signal);
  } catch {
    return false;
  }
  try {
    await connection.request('shutdown', {}, { timeoutMs: 5000 });
    return true;
  } catch {
    return false;
  } finally {
    await connection.close();
  }
}

/**
 * Once the agent was let go, what it ran on goes too: `provider.release()` ends the attempt (aws:
 * terminates the instance) and `releaseRun()` what the run kept (aws: its IAM role).
 */
export async function releaseAfterAgent(provider: Provider, record: RunRecord, reason: string): Promise<void> {
  await provider.release(record, reason);
  await provider.releaseRun(record);
}

/**
 * After the job ended and every line arrived: record the result, let the agent go, release what
 * it ran on, and return the job's exit code.
 */
export async function finishRun(options: {
  store: RunStore;
  record: RunRecord;
  provider: Provider;
  session: ProviderSession;
  out: Output;
  status: JobStatus;
}): Promise<number> {
  const { store, record, session, out, status } = options;
  store.update(record.runId, { status });
  // Reported before the instance is released: what happened to the checkpoints is said even when
  // the release fails, and in the order it happened (flush given up, then the instance ended).
  if (status.interruption) out.warn(describeReport(status.interruption), { event: 'interruption-report', report: status.interruption });
  else {
    // The flush after the job ended gave up (its budget spent): said once, with what to do.
    const target = record.checkpoint ? describeCheckpointTarget(record.checkpoint.target, record.runId) : undefined;
    const failed = describeFinalCheckpoints(status.checkpoints, target);
    if (failed) out.warn(failed, { event: 'checkpoint-final-failed', flush: status.checkpoints?.finalFlush });
  }
  if (await letAgentGo(session)) await releaseAfterAgent(options.provider, record, 'the job ended and the agent was let go');
  const code = exitCodeOf(status, os.constants.signals as Record<string, number>);
  const took = status.startedAt && status.endedAt ? ` after ${((status.endedAt - status.startedAt) / 1000).toFixed(1)} s` : '';
  out.result({ runId: record.runId, exitCode: code, status }, `${describeEnd(status, record.maxRuntimeMs)}${took} · run ${record.runId}`);
  return code;
}
