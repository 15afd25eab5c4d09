import { defineCommand } from '../cli/define-command.ts';
import { providerFor } from '../providers/index.ts';
import { DETACHED_EXIT_CODE, Detached, RunSignals } from '../session/run-signals.ts';
import { parseWholeNumber } from '../cli/numbers.ts';
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
  run: async ([ref], options, { out, store, testOverrides }) => {
    const from = options.from === undefined ? undefined : parseWholeNumber(options.from, '--from', 'spotctl attach last --from 500');
    const record = store.resolve(ref as string);
    const provider = providerFor(record.provider, { store, out, testOverrides });
    await using session = provider.locate(record).session;
    const fromSeq = from ?? store.readCursor(record.runId) + 1;
    const probe = await tryConnect(session);
    if (!probe) {
      const status = await session.readStatus().catch(() => undefined);
      if (status && status.state !== 'running' && status.state !== 'starting') {
        out.info(`the agent of run ${record.runId} is gone; printing its stored log from line ${fromSeq}`);
        await printStoredLog(session, out, fromSeq);
        return await finishRun({ store, record, provider, session, out, status });
      }
      out.warn('the agent did not answer yet; retrying');
    } else {
      await probe.close();
    }
    out.info(`attached to run ${record.runId}; resuming at line ${fromSeq} (Ctrl-C detaches; the job keeps running)`);
    // Forwarded S3 credentials are renewed again while someone follows the run.
    await using _forwarder = await resumeForwarding({ ...record, connect: (signal) => session.connect(signal), out });
    // attach only watches: Ctrl-C detaches, it never stops the job.
    using signals = new RunSignals(process, { interrupt: 'detach' });
    try {
      const { status } = await tailRun({ store, record, session, out, fromSeq, signals });
      return await finishRun({ store, record, provider, session, out, status });
    } catch (error) {
      // Ctrl-C, or the terminal went away: the job goes on; attach again later.
      if (error instanceof Detached) {
        out.info(
          `detached; the job keeps running. Follow it again with: spotctl attach ${record.runId}   (stop it with: spotctl stop ${record.runId})`,
          { event: 'detached', runId: record.runId },
        );
        return error.by === 'interrupt' ? 0 : DETACHED_EXIT_CODE;
      }
      throw error;
    }
  },
});
