import { existsSync } from 'node:fs';
import { UserError } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { providerFor } from '../providers/index.ts';
import { parseWholeNumber } from '../cli/numbers.ts';
import type { Output } from '../output/output.ts';
import type { RunRecord, RunStore } from '../runs/run-store.ts';
import { printArchivedLog, type ArchivedLogResult } from '../session/archived-log.ts';
import { describeCheckpointTarget } from '../session/checkpoint-options.ts';
import { tryConnect } from '../session/connect-once.ts';
import { logCopyPath, printLogCopy } from '../session/log-copy.ts';
import { printStoredLog } from '../session/stored-log.ts';
import { tailRun } from '../session/tail.ts';

export default defineCommand<{ follow?: boolean; from?: string; json?: boolean }>({
  name: 'logs',
  description: "Print a run's output (stdout lines to stdout, stderr lines to stderr), live or after its host is gone",
  examples: ['spotctl logs last', 'spotctl logs 20261125-213000-a1b2 -f', 'spotctl logs last --json --from 500'],
  configure: (cmd) =>
    cmd
      .argument('<run>', "run id, a unique prefix of one, or 'last'")
      .option('-f, --follow', 'keep following live output until the job ends (a finished run just prints)')
      .option('--from <seq>', 'start at this line number', '1')
      .option('--json', 'JSON lines on stdout instead of text'),
  run: async ([ref], options, { out, store, testOverrides }) => {
    const fromSeq = options.from === undefined ? 1 : parseWholeNumber(options.from, '--from', 'spotctl logs last --from 500');
    const record = store.resolve(ref as string);
    await using session = providerFor(record.provider, { store, out, testOverrides }).locate(record).session;
    // An instance spotctl terminated is not asked: the log is in the archive or the copy here.
    const terminated = record.aws?.terminatedAt !== undefined;
    const probe = terminated ? undefined : await tryConnect(session);
    if (probe) {
      await probe.close();
      await tailRun({ store, record, session, out, fromSeq, follow: options.follow === true, saveCursor: false, keepLocalCopy: false });
      return 0;
    }
    // The agent is gone. Its log file, where the host still answers (always, for local runs).
    const progress = { lastSeq: fromSeq - 1 };
    let hostError: unknown;
    if (!terminated) {
      try {
        await printStoredLog(session, out, fromSeq, undefined, progress);
        return 0;
      } catch (error) {
        if (record.provider === 'local') throw error;
        hostError = error;
      }
    }
    await printWithoutHost({ store, record, out, fromSeq: progress.lastSeq + 1, hostError });
    return 0;
  },
});

/** The host is gone or unreachable: the archive on the checkpoint target, then the copy this machine kept. */
async function printWithoutHost(options: {
  store: RunStore;
  record: RunRecord;
  out: Output;
  fromSeq: number;
  hostError: unknown;
}): Promise<void> {
  const { store, record, out } = options;
  const gone = hostGone(record, options.hostError);
  let archived: ArchivedLogResult | undefined;
  const target = record.checkpoint?.target;
  // A directory target is on the host, unless this machine sees the same path (local runs, a shared mount).
  const readable = target && (target.kind === 's3' || record.provider === 'local' || existsSync(target.path));
  if (target && readable) {
    archived = await printArchivedLog({ target, runId: record.runId, out, fromSeq: options.fromSeq });
  }
  const copied = await printLogCopy(logCopyPath(store.runDir(record.runId)), out, Math.max(options.fromSeq, (archived?.lastSeq ?? 0) + 1));
  if (archived && target) {
    const more =
      copied !== undefined && copied > archived.lastSeq ? `, lines ${archived.lastSeq + 1}-${copied} from the copy kept here` : '';
    out.warn(
      `${gone}: printed its log from the archive at ${describeCheckpointTarget(target, record.runId)}${more}. ` +
        (archived.gapAt !== undefined
          ? `A segment after byte ${archived.gapAt} is missing, so the lines after line ${archived.lastSeq} cannot be read.`
          : 'At most the last few seconds of output may be missing.'),
      { event: 'log-source', source: 'archive', lastSeq: Math.max(archived.lastSeq, copied ?? 0) },
    );
    return;
  }
  if (copied !== undefined && copied > 0) {
    out.warn(
      `${gone}: printed the copy of its log this machine kept while following it (lines up to ${copied}); lines written while nothing here followed the run may be missing.`,
      {
        event: 'log-source',
        source: 'local-copy',
        lastSeq: copied,
      },
    );
    return;
  }
  throw new UserError('SPOTCTL_AGENT_UNREACHABLE', `${gone}, and its log was not archived`, {
    remediation: target
      ? `nothing reached the archive at ${describeCheckpointTarget(target, record.runId)}${target.kind === 'dir' && record.provider !== 'local' ? ' (a directory on the host)' : ''}; archive the logs of future runs with --checkpoint-to s3://BUCKET/PREFIX`
      : 'archive the logs of future runs with --checkpoint-to s3://BUCKET/PREFIX (the log goes there with the checkpoints)',
    cause: options.hostError,
  });
}

/** What happened to the run's host, in a few words. */
function hostGone(record: RunRecord, hostError: unknown): string {
  if (record.aws) {
    // No SSH advice here: an instance that is gone has no sshd to check.
    return record.aws.terminatedAt !== undefined
      ? `instance ${record.aws.instanceId} of run ${record.runId} was terminated at ${new Date(record.aws.terminatedAt).toISOString()}`
      : `instance ${record.aws.instanceId} of run ${record.runId} is gone or unreachable`;
  }
  const reason = hostError instanceof Error ? ` (${hostError.message.split('\n')[0]})` : '';
  const host = record.target ? record.target.host : 'its host';
  return `${host}, the host of run ${record.runId}, cannot be reached${reason}`;
}
