/**
 * Bringing a run's outputs back (`run --pull`, `spotctl pull`) and opening a shell in its workdir
 * (`spotctl ssh`, `run --ssh`), on top of the provider session.
 */
import path from 'node:path';
import { formatBytes } from '@spotctl/shared';
import type { Output } from '../output/output.ts';
import type { ProviderSession } from '../providers/provider.ts';
import type { RunRecord } from '../runs/run-store.ts';
import type { PullResult } from '../transport/workdir-files.ts';
import { tryConnect } from './connect-once.ts';

/** Where pulled files land without `--pull-to` / `--to`: `./spotctl-out/<run-id>/`. */
export function defaultPullDir(runId: string, cwd = process.cwd()): string {
  return path.join(cwd, 'spotctl-out', runId);
}

/** Copies what `patterns` match into `dir` and says so in one line (each pattern that matched nothing in a warning). */
export async function pullAndReport(options: {
  session: ProviderSession;
  record: RunRecord;
  patterns: string[];
  dir: string;
  out: Output;
  signal?: AbortSignal;
}): Promise<PullResult> {
  const { session, record, patterns, dir, out } = options;
  const result = await session.pull(patterns, dir, { signal: options.signal });
  for (const pattern of result.missing)
    out.warn(`nothing matched ${pattern} in the workdir of run ${record.runId}`, { event: 'pull-missing', pattern });
  if (result.matched.length === 0) return result;
  out.info(`pulled ${result.files} file${result.files === 1 ? '' : 's'} (${formatBytes(result.bytes)}) into ${result.dir}`, {
    event: 'pulled',
    runId: record.runId,
    files: result.files,
    bytes: result.bytes,
    dir: result.dir,
    matched: result.matched,
    missing: result.missing,
  });
  return result;
}

/**
 * A shell (or one command line) in the run's workdir. While it is open a websocket to the agent
 * stays open, so the agent's idle watchdog counts it as a client and the host does not go away
 * under the user.
 */
export async function shellInRun(options: {
  session: ProviderSession;
  record: RunRecord;
  commandLine: string | undefined;
  out: Output;
  tty: boolean;
}): Promise<number> {
  const { session, record, out } = options;
  const client = await tryConnect(session);
  if (!client)
    out.warn(`the agent of run ${record.runId} did not answer: this shell does not keep the host from idling out`, {
      event: 'shell-no-agent',
    });
  try {
    return await session.shell(options.commandLine, { tty: options.tty });
  } finally {
    await client?.close();
  }
}
