import type { JobStatus } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { formatDuration, table } from '../output/output.ts';
import { openSession } from '../providers/index.ts';
import type { RunRecord } from '../runs/run-store.ts';

async function freshStatus(record: RunRecord, store: import('../runs/run-store.ts').RunStore): Promise<JobStatus | undefined> {
  if (record.status && record.status.state !== 'running' && record.status.state !== 'starting') return record.status;
  if (!record.agent) return record.status;
  const session = openSession(record, store);
  try {
    return (await Promise.race([session.readStatus(AbortSignal.timeout(10_000)), new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000).unref())])) ?? record.status;
  } catch {
    return record.status;
  } finally {
    await session.close();
  }
}

export default defineCommand<{ json?: boolean; limit?: string }>({
  name: 'ps',
  description: 'List runs started from this machine, newest first, with their state',
  examples: ['spotctl ps', 'spotctl ps --json'],
  configure: (cmd) => cmd.option('--json', 'one JSON array on stdout').option('-n, --limit <n>', 'show at most this many runs', '20'),
  run: async (_args, options, { out, store }) => {
    const limit = Math.max(1, Number.parseInt(options.limit ?? '20', 10) || 20);
    const records = store.list().slice(0, limit);
    const statuses = await Promise.all(records.map((r) => freshStatus(r, store)));
    const rows = records.map((r, i) => {
      const s = statuses[i];
      return {
        runId: r.runId,
        provider: r.provider,
        host: r.target ? r.target.host : 'localhost',
        state: s?.state ?? (r.agent ? 'unknown' : 'setup'),
        exitCode: s?.exitCode ?? null,
        signal: s?.signal ?? null,
        createdAt: r.createdAt,
        command: r.command,
      };
    });
    const now = Date.now();
    out.data(
      rows,
      rows.length === 0
        ? 'no runs yet — start one with: spotctl run -- <command>'
        : table(
            ['RUN', 'PROVIDER', 'HOST', 'STATE', 'EXIT', 'AGE', 'COMMAND'],
            rows.map((r) => [r.runId, r.provider, r.host, r.state, r.signal ?? (r.exitCode === null ? '-' : String(r.exitCode)), formatDuration(now - r.createdAt), r.command.join(' ')]),
          ),
    );
    return 0;
  },
});
