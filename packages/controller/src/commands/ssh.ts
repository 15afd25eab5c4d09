import { UserError } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { providerFor } from '../providers/index.ts';
import { shellInRun } from '../session/outputs.ts';

export default defineCommand<{ json?: boolean }>({
  name: 'ssh',
  description: "Open a shell (or run one command) on a run's host, in its workdir, with the project's venv active",
  examples: ['spotctl ssh last', 'spotctl ssh last -- nvidia-smi', "spotctl ssh 20261125-213000-a1b2 -- 'ls -la results | head'"],
  configure: (cmd) =>
    cmd
      .argument('<run>', "run id, a unique prefix of one, or 'last'")
      .argument('[command...]', 'one command line to run instead of a shell (after --, as ssh takes it)'),
  run: async (args, _options, { out, store, testOverrides }) => {
    const [ref, ...rest] = args as [string, ...string[]];
    // `spotctl ssh RUN -- cmd`: the separator after RUN reaches us as an operand.
    const words = rest[0] === '--' ? rest.slice(1) : rest;
    const record = store.resolve(ref);
    if (record.aws?.terminatedAt !== undefined) {
      throw new UserError('SPOTCTL_JOB_STATE', `the instance of run ${record.runId} was terminated`, {
        remediation: 'start a new one with a shell: spotctl run --ssh',
      });
    }
    if (!record.agent) {
      throw new UserError('SPOTCTL_JOB_STATE', `the setup of run ${record.runId} did not get as far as its workdir`, {
        remediation: 'see its state with: spotctl ps',
      });
    }
    const commandLine = words.length > 0 ? words.join(' ') : undefined;
    await using session = providerFor(record.provider, { store, out, testOverrides }).locate(record).session;
    return await shellInRun({ session, record, commandLine, out, tty: commandLine === undefined && process.stdin.isTTY === true });
  },
});
