import { UserError } from '@spotctl/shared';
import { addGpuOptions, addPlacementOptions, workersFor, type PlacementCliOptions } from '../aws/cli-options.ts';
import { formatGpuMemory, parseGpuRequest } from '../aws/gpus.ts';
import { defineCommand } from '../cli/define-command.ts';
import { parseWholeNumber } from '../cli/numbers.ts';
import { table } from '../output/output.ts';
import { Ec2Clients } from '../aws/clients.ts';
import { findPlacements, type PlacementCandidate } from '../aws/placement.ts';
import { resolveRegions } from '../aws/pricing.ts';
import { parseFamilies, parseInstanceTypes } from '../aws/sizing.ts';

/** The whole search (every region, with retries) must end; regions have their own shorter timeout. */
const COMMAND_TIMEOUT_MS = 120_000;
/** Rows shown without --limit in human output (--json prints every row unless --limit is given). */
const DEFAULT_ROWS = 20;

export interface PricesOptions extends PlacementCliOptions, Record<string, unknown> {
  limit?: string;
  json?: boolean;
}

export function formatPrice(pricePerHour: number): string {
  return pricePerHour >= 0.0001 ? pricePerHour.toFixed(4) : String(pricePerHour);
}

export default defineCommand<PricesOptions>({
  name: 'prices',
  description: 'Show the spot price in effect now for the instance types that fit, per region and Availability Zone, cheapest first',
  examples: [
    'spotctl prices',
    'spotctl prices -w 16 --arm',
    'spotctl prices --gpus A10G',
    'spotctl prices --regions us-east-1,eu-west-1 --families c7a,m7a --json',
  ],
  configure: (cmd) =>
    addGpuOptions(addPlacementOptions(cmd))
      .option('-n, --limit <n>', `show at most this many rows (default ${DEFAULT_ROWS}; all with --json)`)
      .option('--json', 'one JSON array on stdout'),
  run: async (_args, options, { out, given }) => {
    const gpus = parseGpuRequest(options);
    const workers = workersFor(options, 'spotctl prices {}', given?.('workers') ?? false);
    const families = parseFamilies(options.families);
    const instanceTypes = parseInstanceTypes(options.instanceType);
    if (families && instanceTypes) {
      throw new UserError('SPOTCTL_USAGE', '--families and --instance-type both given', {
        remediation: 'use one: --families c7a or --instance-type c7a.2xlarge',
        exitCode: 2,
      });
    }
    const limit =
      options.limit === undefined
        ? out.json
          ? Infinity
          : DEFAULT_ROWS
        : parseWholeNumber(options.limit, '--limit', 'spotctl prices --limit 50');
    const selection = resolveRegions({
      ...(options.regions === undefined ? {} : { regions: options.regions }),
      ...(options.region === undefined ? {} : { region: options.region }),
    });
    // In --json mode stdout carries only the array; progress and warnings would corrupt it.
    const human = !out.json;
    if (human && selection.pinnedBy)
      out.info(`searching only ${selection.regions.join(', ')} (from ${selection.pinnedBy}); pass --regions to search more`);

    using clients = new Ec2Clients();
    const signal = AbortSignal.timeout(COMMAND_TIMEOUT_MS);
    const plan = await findPlacements({
      clientFor: clients.forRegion,
      regions: selection.regions,
      workers,
      arm: options.arm === true,
      noHt: options.ht === false,
      placementScores: options.placementScores === true,
      signal,
      ...(families ? { families } : {}),
      ...(instanceTypes ? { instanceTypes } : {}),
      ...(gpus ? { gpus } : {}),
    }).catch((error: unknown) => {
      if (!signal.aborted) throw error;
      throw new UserError('SPOTCTL_CONFIG', `the price search took longer than ${COMMAND_TIMEOUT_MS / 1000} s`, {
        cause: error,
        remediation: 'check the network connection to AWS, or search fewer regions: spotctl prices --regions us-east-1,us-east-2',
      });
    });

    if (human) {
      out.info(`${plan.need}: ${plan.types.map((t) => `${t.instanceType} (${t.vcpus})`).join(', ')}`);
      for (const note of plan.notes) out.info(note);
      for (const f of plan.failures) out.warn(`${f.region} skipped: ${f.message}${f.remediation ? ` → ${f.remediation}` : ''}`);
    }

    const shown = plan.candidates.slice(0, limit);
    const rows = shown.map((c: PlacementCandidate, i) => ({ ...c, cheapest: i === 0 }));
    const scores = options.placementScores === true;
    const headers = ['REGION', 'AZ', 'TYPE', 'VCPUS', ...(gpus ? ['GPUS'] : []), '$/HOUR', ...(scores ? ['SCORE'] : []), ''];
    const body = rows.map((r) => [
      r.region,
      r.az,
      r.instanceType,
      r.cpuOptions ? `${r.vcpus} (SMT off)` : String(r.vcpus),
      ...(gpus ? [r.gpu ? `${r.gpu.count}× ${r.gpu.name} ${formatGpuMemory(r.gpu.memoryMiB)}` : '-'] : []),
      formatPrice(r.pricePerHour),
      ...(scores ? [r.placementScore === undefined ? '-' : String(r.placementScore)] : []),
      r.cheapest ? '← cheapest' : '',
    ]);
    const more = plan.candidates.length > shown.length ? `, ${shown.length} of ${plan.candidates.length} shown (--limit)` : '';
    const footer = `spot prices (Linux, USD per hour) in effect now in ${plan.regionsAnswered.length} region${plan.regionsAnswered.length === 1 ? '' : 's'}${more}`;
    out.data(rows, `${table(headers, body)}\n\n${footer}`);
    return 0;
  },
});
