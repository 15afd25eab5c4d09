import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { UserError, formatBytes } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { parseWholeNumber } from '../cli/numbers.ts';
import { listCheckpointSets, pullCheckpointSet } from '../checkpoints/index.ts';
import { formatDuration, table } from '../output/output.ts';
import type { RunRecord } from '../runs/run-store.ts';
import type { SshTarget } from '../transport/ssh.ts';
import { describeCheckpointTarget } from '../session/checkpoint-options.ts';

/** A word for a POSIX shell, quoted only when it needs to be. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./~-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** rsync's `-e` for the run's host: the port, key, known_hosts and config the run itself used. */
function rsyncSsh(target: SshTarget): string {
  const ssh = [
    'ssh',
    ...(target.port !== undefined ? ['-p', String(target.port)] : []),
    ...(target.identityFile ? ['-i', target.identityFile, '-o', 'IdentitiesOnly=yes'] : []),
    ...(target.knownHostsFile ? ['-o', `UserKnownHostsFile=${target.knownHostsFile}`] : []),
    ...(target.configFile ? ['-F', target.configFile] : []),
  ];
  return ssh.length === 1 ? '' : `-e ${shellWord(ssh.map(shellWord).join(' '))} `;
}

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
    const copy = record.target
      ? `rsync -a ${rsyncSsh(record.target)}${shellWord(`${host}:${describeCheckpointTarget(cp.target, record.runId)}`)} ./`
      : 'rsync';
    throw new UserError('SPOTCTL_CHECKPOINT_NOT_FOUND', `run ${record.runId} kept its checkpoints in a directory on ${host}, not here`, {
      remediation: `copy them with: ${copy} (or use --checkpoint-to s3://... next time)`,
    });
  }
  return cp.target;
}

/** Why a pull must not write into `dir` without --force, or undefined (missing or empty: fine). */
function occupied(dir: string): string | undefined {
  try {
    if (!statSync(dir).isDirectory()) return `${dir} is a file, not a directory`;
    return readdirSync(dir).length > 0 ? `${dir} is not empty: a pull would replace files of the same name` : undefined;
  } catch {
    return undefined; // missing: pull creates it
  }
}

export default defineCommand<{ json?: boolean; seq?: string; force?: boolean }>({
  name: 'checkpoints',
  description: "List a run's committed checkpoint sets (ls), or download one with its checksums verified (pull)",
  examples: [
    'spotctl checkpoints ls last',
    'spotctl checkpoints pull last ./restored',
    'spotctl checkpoints pull 20261125-213000-a1b2 --seq 3',
  ],
  configure: (cmd) =>
    cmd
      .argument('<action>', 'ls | pull')
      .argument('<run>', "run id, a unique prefix of one, or 'last'")
      .argument('[dir]', 'pull: where the files go (default: ./checkpoints-<run-id>)')
      .option('--seq <n>', 'pull: this set instead of the latest')
      .option('--force', 'pull: write into a DIR that is not empty (files of the set replace files of the same name)')
      .option('--json', 'JSON on stdout'),
  run: async ([action, ref, dir], options, { out, store }) => {
    if (action !== 'ls' && action !== 'pull') {
      throw new UserError('SPOTCTL_USAGE', `unknown action '${action}'`, {
        remediation: 'use: spotctl checkpoints ls RUN, or spotctl checkpoints pull RUN [DIR]',
        exitCode: 2,
      });
    }
    if (action === 'ls' && (options.seq !== undefined || options.force !== undefined || dir !== undefined)) {
      throw new UserError(
        'SPOTCTL_USAGE',
        `${dir !== undefined ? `a directory ('${dir}')` : options.seq !== undefined ? '--seq' : '--force'} only applies to pull`,
        {
          remediation: `spotctl checkpoints ls ${ref ?? 'RUN'}`,
          exitCode: 2,
        },
      );
    }
    const seq =
      options.seq === undefined
        ? 'latest'
        : parseWholeNumber(
            options.seq,
            '--seq',
            `spotctl checkpoints pull ${ref ?? 'last'} --seq 3 (the numbers: spotctl checkpoints ls ${ref ?? 'last'})`,
          );
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
              [...sets]
                .reverse()
                .map((s) => [String(s.seq), formatDuration(now - s.createdAt), s.reason, String(s.files), formatBytes(s.bytes)]),
            ),
      );
      return 0;
    }
    const dest = path.resolve(dir ?? `checkpoints-${record.runId}`);
    const taken = options.force === true ? undefined : occupied(dest);
    if (taken !== undefined) {
      throw new UserError('SPOTCTL_USAGE', taken, {
        remediation: `pull into a new directory (spotctl checkpoints pull ${record.runId} ./restored-${record.runId}), or add --force to write into it anyway`,
        exitCode: 2,
      });
    }
    const pulled = await pullCheckpointSet(target, record.runId, seq, dest);
    out.result(
      { ...pulled },
      `pulled checkpoint #${pulled.seq} of run ${record.runId}: ${pulled.files} files, ${formatBytes(pulled.bytes)} into ${pulled.destDir} (checksums verified, ${formatDuration(pulled.durationMs)})`,
    );
    return 0;
  },
});
