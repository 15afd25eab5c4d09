/**
 * `spotctl prices` end to end through the real CLI against a real moto_server on loopback, reached
 * only through AWS_ENDPOINT_URL (the SDK resolves it itself; spotctl passes no endpoint). moto serves
 * one constant spot price ("0.00001") for every type and AZ it knows, so this checks the whole path
 * (DescribeInstanceTypes filters, DescribeSpotPriceHistory per region, parsing, ranking, output),
 * not the economics, which the unit tests cover with realistic prices.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMotoEc2, type MotoEc2 } from './helpers/aws-moto.ts';
import { runSpotctl, type CliResult } from './helpers/cli.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';

interface Row {
  region: string;
  az: string;
  instanceType: string;
  vcpus: number;
  pricePerHour: number;
  architecture: string;
  cheapest: boolean;
}

describe('spotctl prices against moto', () => {
  let moto: MotoEc2;
  let home: TmpDir;

  beforeAll(async () => {
    moto = await startMotoEc2();
    home = await tmpDir('spotctl-prices-');
  });

  afterAll(async () => {
    await home?.[Symbol.asyncDispose]();
    await moto?.[Symbol.asyncDispose]();
  });

  const prices = (...args: string[]): Promise<CliResult> =>
    runSpotctl(['prices', ...args], {
      home: home.path,
      // Every AWS endpoint is https; moto is plain http on loopback, and the only endpoint given.
      env: {
        AWS_ENDPOINT_URL: moto.endpoint,
        AWS_ENDPOINT_URL_EC2: '',
        AWS_REGION: '',
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_ACCESS_KEY_ID: 'testing',
        AWS_SECRET_ACCESS_KEY: 'testing',
      },
      timeoutMs: 60_000,
    });

  it('prices the fitting x86 types in every AZ of each region (--json)', async () => {
    const { code, stdout, stderr } = await prices('--regions', 'us-east-1,eu-west-1', '--json');
    expect(code, stderr).toBe(0);
    const rows = JSON.parse(stdout) as Row[];
    expect(new Set(rows.map((r) => r.instanceType))).toEqual(new Set(['c6a.4xlarge', 'c6a.8xlarge', 'c7a.2xlarge', 'c7a.4xlarge']));
    expect(new Set(rows.map((r) => r.region))).toEqual(new Set(['us-east-1', 'eu-west-1']));
    for (const r of rows) {
      expect(r.az.startsWith(r.region)).toBe(true);
      expect(r.pricePerHour).toBe(0.00001); // moto's constant
      expect(r.architecture).toBe('x86_64');
    }
    // eu-west-1 has 3 AZs in moto, us-east-1 6: each type priced per AZ.
    expect(rows.filter((r) => r.region === 'eu-west-1' && r.instanceType === 'c7a.2xlarge').map((r) => r.az)).toEqual([
      'eu-west-1a',
      'eu-west-1b',
      'eu-west-1c',
    ]);
    // All prices tie, so the tie-breakers decide: more vCPUs first, then region and AZ names.
    expect(rows[0]).toMatchObject({ region: 'eu-west-1', az: 'eu-west-1a', instanceType: 'c6a.8xlarge', cheapest: true });
    expect(rows.filter((r) => r.cheapest)).toHaveLength(1);
    expect(stderr).not.toMatch(/NodeVersionSupportWarning/);
  });

  it('prints the table for people, Graviton with --arm', async () => {
    const { code, stdout, stderr } = await prices('--regions', 'us-west-2', '--arm', '--limit', '5');
    expect(code, stderr).toBe(0);
    const lines = stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^REGION\s+AZ\s+TYPE\s+VCPUS\s+\$\/HOUR/);
    expect(lines[1]).toMatch(/^us-west-2\s+us-west-2\w\s+c[67]g\.4xlarge\s+16\s+0\.00001\s+← cheapest$/);
    expect(lines.at(-1)).toMatch(/in effect now in 1 region, 5 of \d+ shown/);
    expect(stderr).toMatch(/4 workers → ≥ 6 vCPUs \(Graviton/);
  });

  it('turns an unknown --instance-type into a one-line error with the fix', async () => {
    const { code, stderr } = await prices('--regions', 'us-east-1', '--instance-type', 'c7a.2xlarg');
    expect(code).toBe(1);
    expect(stderr).toMatch(/aws ec2 describe-instance-types/);
    expect(stderr).not.toMatch(/looks like a bug/);
  });

  it('-w sizes the machine', async () => {
    const { code, stdout, stderr } = await prices('-w', '2', '--regions', 'eu-west-1', '--json');
    expect(code, stderr).toBe(0);
    const rows = JSON.parse(stdout) as Row[];
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.every((r) => r.region === 'eu-west-1')).toBe(true);
  });
});
