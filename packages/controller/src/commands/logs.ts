import { defineCommand } from '../cli/define-command.ts';
import { providerFor } from '../providers/index.ts';
import { parseWholeNumber } from '../cli/numbers.ts';
import { tryConnect } from '../session/connect-once.ts';
import { printStoredLog } from '../session/stored-log.ts';
import { tailRun } from '../session/tail.ts';

export default defineCommand<{ follow?: boolean; from?: string; json?: boolean }>({
  name: 'logs',
  description: "Print a run's output (stdout lines to stdout, stderr lines to stderr)",
  examples: ['spotctl logs last', 'spotctl logs 20261125-213000-a1b2 -f', 'spotctl logs last --json --from 500'],
  configure: (cmd) =>
    cmd
      .argument('<run>', "run id, a unique prefix of one, or 'last'")
      .option('-f, --follow', 'keep following live output until the job ends')
      .option('--from <seq>', 'start at this line number', '1')
      .option('--json', 'JSON lines on stdout instead of text'),
  run: async ([ref], options, { out, store, testOverrides }) => {
    const fromSeq = options.from === undefined ? 1 : parseWholeNumber(options.from, '--from', 'spotctl logs last --from 500');
    const record = store.resolve(ref as string);
    await using session = providerFor(record.provider, { store, out, testOverrides }).locate(record).session;
    const probe = await tryConnect(session);
    if (!probe) {
      await printStoredLog(session, out, fromSeq);
      return 0;
    }
    await probe.close();
    await tailRun({ store, record, session, out, fromSeq, follow: options.follow === true, saveCursor: false });
    return 0;
  },
});
