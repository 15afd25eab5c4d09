import path from 'node:path';
import { UserError, formatBytes } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { listCheckpointSets, pullCheckpointSet } from '../checkpoints/index.ts';
import { formatDuration, table } from '../output/output.ts';
import type { RunRecord } from '../runs/run-store.ts';
import { describeCheckpointTarget } from '../session/checkpoint-options.ts';

/** The run's checkpoint target, as this machine can read it. */
function readableTarget(record: RunRecord) {
  const cp = record.checkpoint;
  if (!cp) {
    throw new UserError('SPOTCTL_CHECKPOINT_NOT_FOUND', `run ${record.runId} kept no checkpoints`, {
      remediation: 'start runs with --checkpoint-to s3://BUCKET/PREFIX (or a directory) to keep them',
    });
  }
  if (cp.target.kind === 'dir' && record.provider !== 'local') {
    const host = record.target ? `${record.target.user ? `${record.target.user}@` : ''}${record.target.host}` : 'the host';
    throw new UserError('SPOTCTL_CHECKPOINT_NOT_FOUND', `run ${record.runId} kept its checkpoints in a directory on ${host}, not here`, {
      remediation: `copy them with: rsync -a ${host}:${describeCheckpointTarget(cp.target, record.runId)} ./ (or use --checkpoint-to s3://... next time)`,
    });
  }
  return cp.target;
}

export default defineCommand<{ json?: boolean; seq?: string }>({
  name: 'checkpoints',
  description: "List a run's committed checkpoint sets (ls), or download one with its checksums verified (pull)",
  examples: ['spotctl checkpoints ls last', 'spotctl checkpoints pull last ./restored', 'spotctl checkpoints pull 20261125-213000-a1b2 --seq 3'],
  configure: (cmd) =>
    cmd
      .argument('<action>', 'ls | pull')
      .argument('<run>', "run id, a unique prefix of one, or 'last'")
      .argument('[dir]', 'pull: where the files go (default: ./checkpoints-<run-id>)')
      .option('--seq <n>', 'pull: this set instead of the latest')
      .option('--json', 'JSON on stdout'),
  run: async ([action, ref, dir], options, { out, store }) => {
    if (action !== 'ls' && action !== 'pull') {
      throw new UserError('SPOTCTL_USAGE', `unknown action '${action}'`, { remediation: 'use: spotctl checkpoints ls RUN, or spotctl checkpoints pull RUN [DIR]', exitCode: 2 });
    }
    const record = store.resolve(ref as string);
    const target = readableTarget(record);
    if (action === 'ls') {
      const sets = await listCheckpointSets(target, record.runId);
      const now = Date.now();
      out.data(
        sets,
        sets.length === 0
          ? `run ${record.runId} has no committed checkpoint set yet (${describeCheckpointTarget(target, record.runId)})`
          : table(
              ['SEQ', 'AGE', 'REASON', 'FILES', 'SIZE'],
              [...sets].reverse().map((s) => [String(s.seq), formatDuration(now - s.createdAt), s.reason, String(s.files), formatBytes(s.bytes)]),
            ),
      );
      return 0;
    }
    const seq = options.seq === undefined ? 'latest' : Number.parseInt(options.seq, 10);
    if (seq !== 'latest' && !(seq >= 1)) throw new UserError('SPOTCTL_USAGE', `--seq wants a set number, got '${options.seq}'`, { remediation: 'see the numbers with: spotctl checkpoints ls RUN', exitCode: 2 });
    const dest = path.resolve(dir ?? `checkpoints-${record.runId}`);
    const pulled = await pullCheckpointSet(target, record.runId, seq, dest);
    out.result({ ...pulled }, `pulled checkpoint #${pulled.seq} of run ${record.runId}: ${pulled.files} files, ${formatBytes(pulled.bytes)} into ${pulled.destDir} (checksums verified, ${formatDuration(pulled.durationMs)})`);
    return 0;
  },
});
