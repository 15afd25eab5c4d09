import { UserError, type JobStatus } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { parseWholeNumber } from '../cli/numbers.ts';
import { Ec2Clients } from '../aws/clients.ts';
import { listManagedInstances, spendOf } from '../aws/lifecycle.ts';
import { lifecycleRegions } from '../aws/lifecycle-regions.ts';
import { TAG } from '../aws/tags.ts';
import { spendSoFar } from '../providers/aws-teardown.ts';
import { formatDuration, table } from '../output/output.ts';
import { providerFor } from '../providers/index.ts';
import type { Output } from '../output/output.ts';
import type { TestOverrides } from '../providers/test-overrides.ts';
import { attemptsSpend, type AttemptRecord, type RunRecord, type RunStore } from '../runs/run-store.ts';

async function freshStatus(
  record: RunRecord,
  deps: { store: RunStore; out: Output; testOverrides: TestOverrides },
): Promise<JobStatus | undefined> {
  if (record.status && record.status.state !== 'running' && record.status.state !== 'starting') return record.status;
  if (!record.agent) return record.status;
  const session = providerFor(record.provider, deps).locate(record).session;
  try {
    return (
      (await Promise.race([
        session.readStatus(AbortSignal.timeout(10_000)),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000).unref()),
      ])) ?? record.status
    );
  } catch {
    return record.status;
  } finally {
    await session.close();
  }
}

/** A run whose checkpoints are not getting through: failing now, or its final flush gave up. */
function checkpointsFailing(status: JobStatus | undefined): Pick<PsRow, 'checkpointsFailing'> | undefined {
  const health = status?.checkpoints;
  if (!health) return undefined;
  const final = health.finalFlush?.error ?? null;
  if (!health.failing && final === null) return undefined;
  return { checkpointsFailing: { failures: health.failures, since: health.failingSince, lastError: health.lastError ?? final } };
}

interface PsRow {
  runId: string;
  provider: string;
  host: string;
  state: string;
  exitCode: number | null;
  signal: string | null;
  createdAt: number;
  command: string[];
  /** Why the setup failed (state `failed` before the job started). */
  reason?: string;
  /** aws runs: USD per hour at launch, and the spend so far (to termination, or now). */
  pricePerHour?: number;
  spend?: number;
  /** Set while the run's checkpoints are not getting through (uploads or commits failing). */
  checkpointsFailing?: { failures: number; since: number | null; lastError: string | null };
  /** Managed aws runs: every instance the run ran on, in order (the spend above covers them all). */
  attempts?: AttemptRecord[];
  /** Found only in the cloud's tags (no record on this machine: `spotctl ls --adopt` makes one). */
  cloudOnly?: boolean;
}

const CLOUD_TIMEOUT_MS = 60_000;

export default defineCommand<{ json?: boolean; limit?: string; cloud?: boolean; regions?: string; region?: string }>({
  name: 'ps',
  description:
    'List runs started from this machine, newest first, with their state (--cloud: also every live spotctl run in AWS, from its tags)',
  examples: ['spotctl ps', 'spotctl ps --json', 'spotctl ps --cloud --region us-east-1'],
  configure: (cmd) =>
    cmd
      .option('--json', 'one JSON array on stdout')
      .option('-n, --limit <n>', 'show at most this many runs', '20')
      .option('--cloud', "also list live spotctl runs found by their EC2 tags, even with no record here (another machine's, or a lost one)")
      .option('--regions <list>', '--cloud: comma-separated regions to look in (default: 8 common regions and those of runs started here)')
      .option('--region <region>', '--cloud: look only in this region'),
  run: async (_args, options, { out, store, testOverrides }) => {
    const limit = parseWholeNumber(options.limit ?? '20', '--limit', 'spotctl ps --limit 50');
    if (!options.cloud && (options.regions !== undefined || options.region !== undefined)) {
      const flag = options.regions !== undefined ? '--regions' : '--region';
      throw new UserError('SPOTCTL_USAGE', `${flag} only applies with --cloud`, {
        remediation: `spotctl ps --cloud ${flag} ${options.regions ?? options.region ?? ''}`,
        exitCode: 2,
      });
    }
    const records = store.list().slice(0, limit);
    const statuses = await Promise.all(records.map((r) => freshStatus(r, { store, out, testOverrides })));
    const now = Date.now();
    const rows: PsRow[] = records.map((r, i) => {
      const s = statuses[i];
      return {
        runId: r.runId,
        provider: r.provider,
        host: r.aws
          ? `${r.aws.instanceId} (${r.aws.az})${(r.attempts?.length ?? 0) > 1 ? `, attempt ${r.attempts!.length}` : ''}`
          : r.target
            ? r.target.host
            : 'localhost',
        // A setup that ended without a job says so (failed, cancelled); only one in progress is `setup`.
        state: s?.state ?? (r.agent ? 'unknown' : (r.setup?.state ?? 'setup')),
        exitCode: s?.exitCode ?? null,
        signal: s?.signal ?? null,
        createdAt: r.createdAt,
        command: r.command,
        ...(!s && !r.agent && r.setup ? { reason: r.setup.reason } : {}),
        ...(r.aws
          ? {
              pricePerHour: r.aws.pricePerHour,
              spend: r.attempts?.length
                ? attemptsSpend(r.attempts, now)
                : spendSoFar(r.aws.pricePerHour, r.aws.launchedAt, r.aws.terminatedAt ?? now),
            }
          : {}),
        ...(r.attempts?.length ? { attempts: r.attempts } : {}),
        ...(checkpointsFailing(s) ?? {}),
      };
    });
    let failedRegions = 0;
    if (options.cloud) {
      const regions = lifecycleRegions(options, store);
      using clients = new Ec2Clients();
      const { instances, errors } = await listManagedInstances({
        clientFor: clients.forRegion,
        regions,
        signal: AbortSignal.timeout(CLOUD_TIMEOUT_MS),
      });
      for (const e of errors) out.warn(`${e.region} skipped: ${e.message}`);
      failedRegions = errors.length;
      const known = new Set(records.map((r) => r.runId));
      for (const i of instances) {
        if (i.tags[TAG.role] !== 'run' || !i.runId || known.has(i.runId)) continue;
        const spend = spendOf(i, now);
        rows.push({
          runId: i.runId,
          provider: 'aws',
          host: `${i.instanceId} (${i.az})`,
          state: `instance ${i.state}`,
          exitCode: null,
          signal: null,
          createdAt: i.launchedAt ?? now,
          command: i.command ? [i.command] : [],
          ...(i.pricePerHour !== undefined ? { pricePerHour: i.pricePerHour } : {}),
          ...(spend !== undefined ? { spend } : {}),
          cloudOnly: true,
        });
      }
      rows.sort((a, b) => b.createdAt - a.createdAt);
    }
    const money = (r: PsRow): string =>
      r.pricePerHour === undefined ? '-' : `$${r.pricePerHour.toFixed(4)}/h${r.spend === undefined ? '' : `, $${r.spend.toFixed(4)}`}`;
    const cloudOnly = rows.filter((r) => r.cloudOnly).length;
    out.data(
      rows,
      rows.length === 0
        ? 'no runs yet — start one with: spotctl run -- <command>'
        : `${table(
            ['RUN', 'PROVIDER', 'HOST', 'STATE', 'EXIT', 'AGE', 'COST', 'COMMAND'],
            rows.map((r) => [
              `${r.runId}${r.cloudOnly ? '*' : ''}`,
              r.provider,
              r.host,
              r.checkpointsFailing ? `${r.state} (checkpoints failing)` : r.state,
              r.signal ?? (r.exitCode === null ? '-' : String(r.exitCode)),
              formatDuration(now - r.createdAt),
              money(r),
              r.command.join(' '),
            ]),
          )}${cloudOnly > 0 ? `\n* no record on this machine (found by its tags): spotctl ls --adopt makes one, then attach/logs/stop work` : ''}${rows
            .filter((r) => r.checkpointsFailing)
            .map(
              (r) =>
                `\n${r.runId}: checkpoints not getting through (${r.checkpointsFailing?.failures ?? 0} failures): ${r.checkpointsFailing?.lastError ?? 'unknown'}`,
            )
            .join('')}`,
    );
    return failedRegions > 0 ? 1 : 0;
  },
});
