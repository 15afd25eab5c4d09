import { UserError } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { table } from '../output/output.ts';
import { Ec2Clients } from '../aws/clients.ts';
import { isAbort } from '../aws/errors.ts';
import { formatGpuMemory } from '../aws/gpus.ts';
import { priceRegions, resolveRegions, type SpotPriceQuote } from '../aws/pricing.ts';
import { describeInstanceTypes, type InstanceTypeSpec } from '../aws/sizing.ts';
import { formatPrice } from './prices.ts';

/** The whole search must end; each region has its own shorter timeout (pricing.ts). */
const COMMAND_TIMEOUT_MS = 120_000;

interface GpusOptions extends Record<string, unknown> {
  region?: string;
  regions?: string;
  json?: boolean;
}

export interface GpuTypeRow {
  instanceType: string;
  gpu: string;
  manufacturer: string;
  gpuCount: number;
  /** Memory of each GPU. */
  gpuMemoryMiB: number;
  vcpus: number;
  memoryMiB: number | null;
  architecture: string;
  /** Cheapest spot price now, USD per hour, and where. */
  pricePerHour: number;
  region: string;
  az: string;
}

/** One row per GPU type with a spot price somewhere: its cheapest (region, AZ). By GPU model, then count, then price. */
export function gpuRows(specs: readonly InstanceTypeSpec[], quotes: readonly SpotPriceQuote[]): GpuTypeRow[] {
  const cheapest = new Map<string, SpotPriceQuote>();
  for (const q of quotes) {
    const seen = cheapest.get(q.instanceType);
    if (
      !seen ||
      q.pricePerHour < seen.pricePerHour ||
      (q.pricePerHour === seen.pricePerHour && `${q.region}/${q.az}` < `${seen.region}/${seen.az}`)
    )
      cheapest.set(q.instanceType, q);
  }
  const rows: GpuTypeRow[] = [];
  for (const spec of specs) {
    const q = cheapest.get(spec.instanceType);
    if (!spec.gpu || !q) continue;
    rows.push({
      instanceType: spec.instanceType,
      gpu: spec.gpu.name,
      manufacturer: spec.gpu.manufacturer,
      gpuCount: spec.gpu.count,
      gpuMemoryMiB: spec.gpu.memoryMiB,
      vcpus: spec.defaultVcpus,
      memoryMiB: spec.memoryMiB ?? null,
      architecture: spec.architectures.join(','),
      pricePerHour: q.pricePerHour,
      region: q.region,
      az: q.az,
    });
  }
  return rows.sort(
    (a, b) =>
      a.gpu.localeCompare(b.gpu) ||
      a.gpuCount - b.gpuCount ||
      a.pricePerHour - b.pricePerHour ||
      a.instanceType.localeCompare(b.instanceType),
  );
}

export default defineCommand<GpusOptions>({
  name: 'gpus',
  description: 'List the GPU instance types offered as spot, with GPU model, count and memory, vCPUs, and the cheapest spot price now',
  examples: ['spotctl gpus', 'spotctl gpus --region us-east-1', 'spotctl gpus --regions us-east-1,eu-west-1 --json'],
  configure: (cmd) =>
    cmd
      .option('--region <region>', 'only this region (AWS_REGION does the same)')
      .option('--regions <list>', 'comma-separated regions to search (default: 8 common regions)')
      .option('--json', 'one JSON array on stdout'),
  run: async (_args, options, { out }) => {
    const selection = resolveRegions({
      ...(options.regions === undefined ? {} : { regions: options.regions }),
      ...(options.region === undefined ? {} : { region: options.region }),
    });
    const human = !out.json;
    if (human && selection.pinnedBy)
      out.info(`searching only ${selection.regions.join(', ')} (from ${selection.pinnedBy}); pass --regions to search more`);
    using clients = new Ec2Clients();
    const signal = AbortSignal.timeout(COMMAND_TIMEOUT_MS);
    try {
      // Type specs are global: ask the first region (both architectures at once).
      const home = await clients.forRegion(selection.regions[0] ?? 'us-east-1');
      const specs = (
        await Promise.all(
          (['x86_64', 'arm64'] as const).map((architecture) => describeInstanceTypes(home, { architecture, gpuOnly: true, signal })),
        )
      ).flat();
      const unique = [...new Map(specs.map((s) => [s.instanceType, s])).values()];
      if (unique.length === 0) {
        throw new UserError(
          'SPOTCTL_CONFIG',
          `DescribeInstanceTypes in ${selection.regions[0] ?? 'us-east-1'} lists no GPU instance type sold as spot`,
          {
            remediation: 'try another region: spotctl gpus --region us-east-1',
          },
        );
      }
      const prices = await priceRegions({
        regions: selection.regions,
        instanceTypes: unique.map((s) => s.instanceType),
        clientFor: clients.forRegion,
        signal,
      });
      if (human)
        for (const f of prices.failures) out.warn(`${f.region} skipped: ${f.message}${f.remediation ? ` → ${f.remediation}` : ''}`);
      const rows = gpuRows(unique, prices.quotes);
      const body = rows.map((r) => [
        r.gpu,
        r.manufacturer,
        String(r.gpuCount),
        formatGpuMemory(r.gpuMemoryMiB),
        r.instanceType,
        String(r.vcpus),
        r.memoryMiB === null ? '-' : formatGpuMemory(r.memoryMiB),
        r.architecture,
        formatPrice(r.pricePerHour),
        `${r.az}`,
      ]);
      const unpriced = unique.length - rows.length;
      const footer =
        `${rows.length} GPU type${rows.length === 1 ? '' : 's'} with a spot price now in ${prices.answered.length} region${prices.answered.length === 1 ? '' : 's'} (Linux, USD per hour, cheapest AZ)` +
        (unpriced > 0 ? `; ${unpriced} more not sold as spot there` : '') +
        '\nrun on one with: spotctl run --gpus A10G train.py (or --gpus 1 for the cheapest NVIDIA GPU)';
      out.data(
        rows,
        `${table(['GPU', 'MAKER', 'COUNT', 'GPU MEM', 'TYPE', 'VCPUS', 'MEMORY', 'ARCH', '$/HOUR', 'WHERE'], body)}\n\n${footer}`,
      );
      return 0;
    } catch (error) {
      if (!signal.aborted || !isAbort(error)) throw error;
      throw new UserError('SPOTCTL_CONFIG', `the GPU search took longer than ${COMMAND_TIMEOUT_MS / 1000} s`, {
        cause: error,
        remediation: 'check the network connection to AWS, or search fewer regions: spotctl gpus --regions us-east-1,us-west-2',
      });
    }
  },
});
