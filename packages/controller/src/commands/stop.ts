import { UserError, type JobStatus } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { parseDuration } from '../cli/durations.ts';
import { providerFor } from '../providers/index.ts';
import { describeEnd, releaseAfterAgent } from '../session/finish.ts';
import { followLogs } from '../session/follow.ts';
import { tryConnect } from '../session/connect-once.ts';

export default defineCommand<{ force?: boolean; grace?: string; json?: boolean }>({
  name: 'stop',
  description: 'Stop a run: SIGTERM to the job, SIGKILL after the grace; then let the agent go',
  examples: ['spotctl stop last', 'spotctl stop 20261125-213000-a1b2 --force'],
  configure: (cmd) =>
    cmd
      .argument('<run>', "run id, a unique prefix of one, or 'last'")
      .option('--force', 'SIGKILL at once')
      .option('--grace <duration>', "override the run's grace for this stop")
      .option('--json', 'JSON output'),
  run: async ([ref], options, { out, store, testOverrides }) => {
    // Checked before anything else: a bad --grace is refused even when the run already ended.
    const graceMs = options.grace !== undefined ? parseDuration(options.grace, '--grace') : undefined;
    const record = store.resolve(ref as string);
    const provider = providerFor(record.provider, { store, out, testOverrides });
    await using session = provider.locate(record).session;
    const connection = await tryConnect(session);
    if (!connection) {
      const status = await session.readStatus().catch(() => undefined);
      if (status && status.state !== 'running' && status.state !== 'starting') {
        out.result({ runId: record.runId, status }, `run ${record.runId} had already ended: ${describeEnd(status, record.maxRuntimeMs)}`);
        return 0;
      }
      throw new UserError('SPOTCTL_AGENT_UNREACHABLE', `cannot reach the agent of run ${record.runId}`, {
        remediation: `check the host is up, then retry: spotctl stop ${record.runId}`,
      });
    }
    const before = await connection.request('stop', {
      ...(options.force ? { force: true } : {}),
      ...(graceMs !== undefined ? { graceMs } : {}),
    });
    if (before.state === 'running' || before.state === 'starting')
      out.info(
        options.force ? 'sent SIGKILL' : `sent SIGTERM; waiting up to ${Math.round((graceMs ?? record.graceMs) / 1000)} s before SIGKILL`,
      );
    // Wait for the end on the connection we already have: another client (an attached `run`)
    // may let the agent go as soon as the job ends, and a reconnect would then find nobody.
    let reuse: typeof connection | undefined = connection;
    let status: JobStatus;
    try {
      ({ status } = await followLogs({
        connect: async (signal) => {
          const c = reuse;
          reuse = undefined;
          return await (c ?? session.connect(signal));
        },
        fromSeq: before.lastSeq + 1,
        onLines: () => true,
        drain: async () => undefined,
        reconnectTimeoutMs: 15_000,
      }));
    } catch (error) {
      // The agent went away: its status file says how the job ended.
      const stored = await session.readStatus().catch(() => undefined);
      if (!stored || stored.state === 'running' || stored.state === 'starting') throw error;
      status = stored;
    }
    store.update(record.runId, { status });
    const bye = await tryConnect(session, 5000);
    const letGo = bye
      ? await bye.request('shutdown', {}, { timeoutMs: 5000 }).then(
          () => true,
          () => false,
        )
      : false;
    await bye?.close();
    // The agent was let go: what it ran on goes too (aws: the instance is terminated).
    if (letGo) await releaseAfterAgent(provider, record, 'the job ended and the agent was let go');
    out.result({ runId: record.runId, status }, `stopped run ${record.runId}: ${describeEnd(status, record.maxRuntimeMs)}`);
    return 0;
  },
});
