import {
  DescribeInstanceTypesCommand,
  DescribeSpotPriceHistoryCommand,
  EC2Client,
  EC2ServiceException,
  type SpotPrice,
} from '@aws-sdk/client-ec2';
import { UserError } from '@spotctl/shared';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { typesOf } from '../../../../test/fixtures/ec2-instance-types.ts';
import { Writable } from 'node:stream';
import { Output } from '../output/output.ts';
import { RunStore } from '../runs/run-store.ts';
import prices from './prices.ts';

function sink(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return Object.assign(stream, { text: () => chunks.join('') });
}

/** Runs the `prices` command in-process and captures what it prints. */
async function runPrices(options: Record<string, unknown>): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = sink();
  const stderr = sink();
  const out = new Output({ json: options.json === true, stdout, stderr });
  const code = await prices.run(
    [],
    { workers: '4', ht: true, ...options },
    { out, store: new RunStore('/nonexistent/spotctl-runs'), testOverrides: {} },
  );
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

const ec2 = mockClient(EC2Client);
let savedRegion: string | undefined;
beforeEach(() => {
  savedRegion = process.env.AWS_REGION;
  delete process.env.AWS_REGION;
  ec2.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: typesOf('c6a', 'c7a', 'c6g', 'c7g') });
  ec2.on(DescribeSpotPriceHistoryCommand).callsFake(async (input: { InstanceTypes?: string[] }, getClient) => {
    const client = getClient();
    const region = await client.config.region();
    if (region === 'eu-central-1') {
      throw new EC2ServiceException({
        name: 'UnauthorizedOperation',
        $fault: 'client',
        $metadata: { httpStatusCode: 403 },
        message: 'You are not authorized to perform this operation.',
      });
    }
    const table: Record<string, [string, string, string][]> = {
      'us-east-1': [
        ['us-east-1a', 'c7a.2xlarge', '0.151200'],
        ['us-east-1c', 'c6a.4xlarge', '0.263100'],
      ],
      'eu-west-1': [
        ['eu-west-1b', 'c7a.2xlarge', '0.118100'],
        ['eu-west-1a', 'c7a.4xlarge', '0.236000'],
      ],
    };
    return {
      SpotPriceHistory: (table[region] ?? [])
        .filter(([, type]) => input.InstanceTypes?.includes(type))
        .map(([az, type, price]): SpotPrice => ({
          AvailabilityZone: az,
          InstanceType: type as SpotPrice['InstanceType'],
          ProductDescription: 'Linux/UNIX',
          SpotPrice: price,
          Timestamp: new Date('2026-03-14T08:00:00.000Z'),
        })),
    };
  });
});
afterEach(() => {
  ec2.reset();
  if (savedRegion === undefined) delete process.env.AWS_REGION;
  else process.env.AWS_REGION = savedRegion;
});

describe('spotctl prices', () => {
  it('prints a table, cheapest first and marked, and warns about a region it could not read', async () => {
    const { code, stdout, stderr } = await runPrices({ regions: 'us-east-1,eu-west-1,eu-central-1' });
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^REGION\s+AZ\s+TYPE\s+VCPUS\s+\$\/HOUR/);
    expect(lines[1]).toMatch(/^eu-west-1\s+eu-west-1b\s+c7a\.2xlarge\s+8\s+0\.1181\s+← cheapest$/);
    expect(lines[2]).toMatch(/^us-east-1\s+us-east-1a\s+c7a\.2xlarge\s+8\s+0\.1512\s*$/);
    expect(lines.at(-1)).toBe('spot prices (Linux, USD per hour) in effect now in 2 regions');
    expect(stderr).toMatch(/eu-central-1 skipped: UnauthorizedOperation/);
    expect(stderr).toMatch(/4 workers → .*c7a\.2xlarge \(8\)/);
  });

  it('--json prints one array and nothing else on stdout', async () => {
    const { stdout } = await runPrices({ regions: 'us-east-1,eu-west-1,eu-central-1', json: true });
    const rows = JSON.parse(stdout) as Record<string, unknown>[];
    expect(rows).toHaveLength(4);
    expect(rows[0]).toEqual({
      region: 'eu-west-1',
      az: 'eu-west-1b',
      instanceType: 'c7a.2xlarge',
      vcpus: 8,
      pricePerHour: 0.1181,
      architecture: 'x86_64',
      priceSince: '2026-03-14T08:00:00.000Z',
      cheapest: true,
    });
    expect(rows.slice(1).every((r) => r.cheapest === false)).toBe(true);
  });

  it('--no-ht shows SMT-off types with their CpuOptions', async () => {
    const { stdout } = await runPrices({ regions: 'us-east-1', ht: false, json: true });
    const rows = JSON.parse(stdout) as { instanceType: string; vcpus: number; cpuOptions?: unknown }[];
    expect(rows.find((r) => r.instanceType === 'c6a.4xlarge')).toMatchObject({ vcpus: 8, cpuOptions: { CoreCount: 8, ThreadsPerCore: 1 } });
  });

  it('rejects bad flags as usage errors', async () => {
    await expect(runPrices({ workers: 'four' })).rejects.toThrow(UserError);
    await expect(runPrices({ families: 'c7a', instanceType: 'c7a.2xlarge' })).rejects.toThrow(/both given/);
    await expect(runPrices({ regions: 'us-east-1', region: 'us-east-2' })).rejects.toThrow(/both given/);
  });
});
