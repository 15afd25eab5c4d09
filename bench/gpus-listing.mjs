/**
 * Issue 12 (GPUs): `spotctl gpus` over 8 regions, and the `--gpus` placement search
 * (`spotctl prices --gpus A10G`, the search `run --gpus` does before it launches), against the same
 * number of plain `aws ec2 describe-spot-price-history` calls run in parallel against the same
 * moto endpoint.
 */
import path from 'node:path';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { expectOk, runCommand } from './lib/proc.mjs';
import { awsEnv, startBenchMoto } from './lib/spot.mjs';
import { interleaved } from './lib/stats.mjs';

const RUNS = 5;
const REGIONS = ['us-east-1', 'us-east-2', 'us-west-2', 'eu-west-1', 'eu-central-1', 'ap-south-1', 'ap-southeast-1', 'ap-northeast-1'];

/** The baseline: one `aws ec2 describe-spot-price-history` per region, all at once; wall time until the last exits. */
async function awsParallel(ctx, { endpoint, env, instanceTypes }) {
  const t0 = performance.now();
  const results = await Promise.all(
    REGIONS.map((region) =>
      runCommand(
        'aws',
        [
          '--endpoint-url',
          endpoint,
          '--region',
          region,
          'ec2',
          'describe-spot-price-history',
          '--start-time',
          new Date().toISOString(),
          '--product-descriptions',
          'Linux/UNIX',
          '--instance-types',
          ...instanceTypes,
          '--output',
          'json',
        ],
        { env, signal: ctx.signal, timeoutMs: 60_000 },
      ),
    ),
  );
  const ms = performance.now() - t0;
  for (const r of results) {
    expectOk(r, 'aws ec2 describe-spot-price-history');
    if (!(JSON.parse(r.stdout).SpotPriceHistory?.length > 0)) throw new Error('aws ec2 describe-spot-price-history returned no prices');
  }
  return ms;
}

export default defineBenchmark({
  name: 'gpus-listing',
  row: '12.1',
  title: '`spotctl gpus` and the `--gpus` placement search over 8 regions vs parallel `aws ec2 describe-spot-price-history`',
  target: { gpus: target.ratioAtMost(1.5), placement: target.ratioAtMost(1.5) },
  timeoutMs: 240_000,
  budgetMs: 170_000,
  method: `
A loopback moto_server (dummy credentials, \`AWS_EC2_METADATA_DISABLED=true\`, no AWS config files) stands in for EC2 in 8
regions (${REGIONS.join(', ')}). Measured, wall time from spawn to exit of the CLI bundle:

- **gpus**: \`spotctl gpus --regions <the 8> --json\`: DescribeInstanceTypes for the \`g*\`/\`p*\` families in both
  architectures (GpuInfo decides), then DescribeSpotPriceHistory for every GPU type in the 8 regions (4 at a time), the
  cheapest (region, AZ) per type.
- **placement**: \`spotctl prices --gpus A10G --regions <the 8> --json\`: the search \`run --gpus A10G\` makes before it
  launches (sizing from GpuInfo, prices per AZ, ranking).

Baseline for both: 8 \`aws ec2 describe-spot-price-history\` processes (one per region, \`--start-time\` now, the same
GPU instance types spotctl prices in \`gpus\`), started at once; wall time until the last exits. Interleaved, ${RUNS} pairs
each after one warm-up; target: the median per-pair ratio at most 1.5×. The baseline is mostly process start: the aws
CLI here is v1 (Python), about 0.45 s of CPU each before its one request, 8 of them on 2 cores; spotctl is one Node.js
process making its calls concurrently. Each pair takes some 30 s on a loaded machine, so the time budget allows few pairs.`,
  async run(ctx) {
    const moto = await startBenchMoto(ctx, 'bench-gpus');
    const env = awsEnv(path.join(ctx.tmp, 'aws'), moto.endpoint);
    const regionsArg = REGIONS.join(',');
    const gpus = async () => {
      const r = expectOk(await ctx.spotctl(['gpus', '--regions', regionsArg, '--json'], { env, timeoutMs: 120_000 }), 'spotctl gpus');
      return { ms: r.ms, rows: JSON.parse(r.stdout) };
    };
    const placement = async () => {
      const r = expectOk(
        await ctx.spotctl(['prices', '--gpus', 'A10G', '--regions', regionsArg, '--json'], { env, timeoutMs: 120_000 }),
        'spotctl prices --gpus',
      );
      if (!(JSON.parse(r.stdout).length > 0)) throw new Error('spotctl prices --gpus A10G found nothing');
      return r.ms;
    };
    // Warm-up (and the list of GPU types the baseline asks for).
    const warm = await gpus();
    const instanceTypes = warm.rows.map((row) => row.instanceType);
    if (instanceTypes.length === 0) throw new Error('spotctl gpus listed no GPU type');
    await placement();
    await awsParallel(ctx, { endpoint: moto.endpoint, env, instanceTypes });

    const common = { runs: RUNS, signal: ctx.signal, log: ctx.log };
    const listing = await interleaved({
      ...common,
      deadline: ctx.deadline - 60_000,
      a: async () => (await gpus()).ms,
      b: () => awsParallel(ctx, { endpoint: moto.endpoint, env, instanceTypes }),
    });
    const search = await interleaved({
      ...common,
      deadline: ctx.deadline,
      a: placement,
      b: () => awsParallel(ctx, { endpoint: moto.endpoint, env, instanceTypes }),
    });
    const baselineLabel = `8 × aws ec2 describe-spot-price-history in parallel (${instanceTypes.length} types)`;
    return {
      measures: [
        measure({
          key: 'gpus',
          label: `spotctl gpus, 8 regions (${instanceTypes.length} GPU types listed)`,
          unit: 'ms',
          figure: listing.a,
          baseline: listing.b,
          baselineLabel,
        }),
        measure({
          key: 'placement',
          label: 'spotctl prices --gpus A10G, 8 regions',
          unit: 'ms',
          figure: search.a,
          baseline: search.b,
          baselineLabel,
        }),
      ],
      notes: [
        `moto answers every type in every AZ of every region at one constant price, so these are the costs of the calls and the processing, not of AWS's latency.`,
      ],
    };
  },
});
