import { UserError } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { providerFor } from '../providers/index.ts';
import { defaultPullDir, pullAndReport } from '../session/outputs.ts';
import { checkPullPattern } from '../transport/workdir-files.ts';

export default defineCommand<{ to?: string; json?: boolean }>({
  name: 'pull',
  description: "Copy files from a run's workdir to this machine (any time the host is up; checksums verified)",
  examples: ['spotctl pull last results', "spotctl pull last 'outputs/*.pt' model.pt --to ./out"],
  configure: (cmd) =>
    cmd
      .argument('<run>', "run id, a unique prefix of one, or 'last'")
      .argument('<path...>', 'paths relative to the workdir; sh globs (*, ?, [abc]) allowed')
      .option('--to <dir>', 'where the files go (default: ./spotctl-out/<run-id>/)')
      .option('--json', 'JSON lines on stdout instead of text'),
  run: async (args, options, { out, store, testOverrides }) => {
    const [ref, ...patterns] = args as [string, ...string[]];
    for (const pattern of patterns) checkPullPattern(pattern, 'spotctl pull RUN');
    const record = store.resolve(ref);
    if (record.aws?.terminatedAt !== undefined) {
      throw new UserError('SPOTCTL_JOB_STATE', `the instance of run ${record.runId} was terminated: its workdir is gone`, {
        remediation: 'name outputs with spotctl run --pull PATH next time, so they come back before the instance goes',
      });
    }
    await using session = providerFor(record.provider, { store, out, testOverrides }).locate(record).session;
    const result = await pullAndReport({ session, record, patterns, dir: options.to ?? defaultPullDir(record.runId), out });
    if (result.matched.length === 0) {
      throw new UserError('SPOTCTL_USAGE', `nothing matched ${patterns.join(' ')} in the workdir of run ${record.runId}`, {
        remediation: `look around with: spotctl ssh ${record.runId} -- ls -la`,
      });
    }
    return 0;
  },
});
