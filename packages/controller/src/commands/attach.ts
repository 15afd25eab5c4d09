import { defineCommand } from '../cli/define-command.ts';
import { openSession } from '../providers/index.ts';
import { finishRun } from '../session/finish.ts';
import { tryConnect } from '../session/connect-once.ts';
import { resumeForwarding } from '../session/credential-forwarder.ts';
import { printStoredLog } from '../session/stored-log.ts';
import { tailRun } from '../session/tail.ts';

export default defineCommand<{ from?: string; json?: boolean }>({
  name: 'attach',
  description: 'Re-attach to a run: follow its output from where this machine left off, exit with its code',
  examples: ['spotctl attach last', 'spotctl attach 20261125-213000-a1b2 --from 1'],
  configure: (cmd) =>
    cmd
      .argument('<run>', "run id, a unique prefix of one, or 'last'")
      .option('--from <seq>', 'start at this line number (default: after the last line printed here)')
      .option('--json', 'JSON lines on stdout instead of text'),
  run: async ([ref], options, { out, store }) => {
    const record = store.resolve(ref as string);
    await using session = openSession(record, store);
    const fromSeq = options.from !== undefined ? Math.max(1, Number.parseInt(options.from, 10) || 1) : store.readCursor(record.runId) + 1;
    const probe = await tryConnect(session);
    if (!probe) {
      const status = await session.readStatus().catch(() => undefined);
      if (status && status.state !== 'running' && status.state !== 'starting') {
        out.info(`the agent of run ${record.runId} is gone; printing its stored log from line ${fromSeq}`);
        await printStoredLog(session, out, fromSeq);
        return await finishRun({ store, record, session, out, status });
      }
      out.warn('the agent did not answer yet; retrying');
    } else {
      await probe.close();
    }
    out.info(`attached to run ${record.runId}; resuming at line ${fromSeq}`);
    // Forwarded S3 credentials are renewed again while someone follows the run.
    await using _forwarder = await resumeForwarding({ ...record, connect: (signal) => session.connect(signal), out });
    const { status } = await tailRun({ store, record, session, out, fromSeq });
    return await finishRun({ store, record, session, out, status });
  },
});
