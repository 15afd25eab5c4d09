import { defineCommand } from '../cli/define-command.ts';
import { Ec2Clients } from '../aws/clients.ts';
import path from 'node:path';
import { listManagedInstances, spendOf, type ManagedInstance } from '../aws/lifecycle.ts';
import { recoverRunRecord } from '../aws/lifecycle-recover.ts';
import { lifecycleRegions } from '../aws/lifecycle-regions.ts';
import { TAG } from '../aws/tags.ts';
import { formatDuration, table } from '../output/output.ts';
import { spotctlHome } from '../runs/run-store.ts';

/** Every region is asked in parallel with its own timeout; this bounds the whole command. */
const COMMAND_TIMEOUT_MS = 120_000;

interface LsOptions extends Record<string, unknown> {
  regions?: string;
  region?: string;
  all?: boolean;
  adopt?: boolean;
  sshConfig?: string;
  json?: boolean;
}

export default defineCommand<LsOptions>({
  name: 'ls',
  description: 'List the EC2 instances spotctl launched (tagged spotctl:managed) in the candidate regions, with age, $/h and spend so far',
  examples: ['spotctl ls', 'spotctl ls --region us-east-1 --json', 'spotctl ls --all', 'spotctl ls --adopt'],
  configure: (cmd) =>
    cmd
      .option('--regions <list>', 'comma-separated regions to look in (default: 8 common regions and those of runs started here)')
      .option('--region <region>', 'look only in this region (AWS_REGION does the same)')
      .option('--all', 'also instances that have ended (terminated, shutting down)')
      .option(
        '--adopt',
        'rebuild the local record of running runs this machine does not know but holds the key of (then ps, attach, logs, stop work)',
      )
      .option('--ssh-config <file>', 'ssh client config for --adopt')
      .option('--json', 'one JSON array on stdout'),
  run: async (_args, options, { out, store, testOverrides }) => {
    const regions = lifecycleRegions(options, store);
    using clients = new Ec2Clients();
    const { instances, errors } = await listManagedInstances({
      clientFor: clients.forRegion,
      regions,
      includeEnded: options.all === true,
      signal: AbortSignal.timeout(COMMAND_TIMEOUT_MS),
    });
    const now = Date.now();
    if (options.adopt) {
      const known = new Set(store.list().map((r) => r.runId));
      const override = testOverrides.host;
      for (const i of instances) {
        if (!i.runId || known.has(i.runId) || i.tags[TAG.role] !== 'run' || i.state !== 'running') continue;
        try {
          await recoverRunRecord({
            instance: i,
            store,
            keysDir: path.join(spotctlHome(), 'keys'),
            ...(override?.target ? { targetOverride: override.target } : {}),
            ...(options.sshConfig ? { sshConfig: path.resolve(options.sshConfig) } : {}),
            signal: AbortSignal.timeout(60_000),
          });
          known.add(i.runId);
          out.info(`adopted run ${i.runId} (${i.instanceId}): spotctl attach ${i.runId}`, {
            event: 'adopted',
            runId: i.runId,
            instanceId: i.instanceId,
          });
        } catch (error) {
          out.warn(`cannot adopt run ${i.runId}: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
    }
    const local = new Set(store.list().map((r) => r.runId));
    const rows = instances.map((i: ManagedInstance) => ({
      instanceId: i.instanceId,
      region: i.region,
      az: i.az,
      instanceType: i.instanceType,
      state: i.state,
      market: i.market ?? null,
      launchedAt: i.launchedAt ?? null,
      ageMs: i.launchedAt === undefined ? null : now - i.launchedAt,
      pricePerHour: i.pricePerHour ?? null,
      spentUsd: spendOf(i, now) ?? null,
      runId: i.runId ?? null,
      knownHere: i.runId !== undefined && local.has(i.runId),
      expiresAt: i.expiresAt ?? null,
      owner: i.owner ?? null,
      launchedFrom: i.launchedFrom ?? null,
      role: i.role ?? null,
      command: i.command ?? null,
    }));
    if (!out.json) for (const e of errors) out.warn(`${e.region} skipped: ${e.message}`);
    const money = (n: number | null, digits: number) => (n === null ? '-' : `$${n.toFixed(digits)}`);
    const total = rows.reduce((sum, r) => sum + (r.spentUsd ?? 0), 0);
    out.data(
      rows,
      rows.length === 0
        ? `no spotctl instances${options.all ? '' : ' running'} in ${regions.join(', ')}`
        : `${table(
            ['INSTANCE', 'REGION', 'TYPE', 'STATE', 'AGE', '$/H', 'SPENT', 'RUN', 'COMMAND'],
            rows.map((r) => [
              r.instanceId,
              r.az,
              r.instanceType,
              r.state,
              r.ageMs === null ? '-' : formatDuration(r.ageMs),
              money(r.pricePerHour, 4),
              money(r.spentUsd, 4),
              r.runId ? `${r.runId}${r.knownHere ? '' : ' (elsewhere)'}` : '-',
              r.command ?? '',
            ]),
          )}\n\n${rows.length} instance${rows.length === 1 ? '' : 's'} in ${regions.length} region${regions.length === 1 ? '' : 's'}; about ${money(total, 4)} so far at launch prices`,
    );
    return errors.length > 0 && errors.length === regions.length ? 1 : 0;
  },
});
