/**
 * `spotctl prices` end to end against a real moto_server on loopback, reached only through
 * AWS_ENDPOINT_URL (the SDK resolves it itself; spotctl passes no endpoint). moto serves one
 * constant spot price ("0.00001") for every type and AZ it knows, so this checks the whole path
 * (DescribeInstanceTypes filters, DescribeSpotPriceHistory per region, parsing, ranking, output),
 * not the economics, which the unit tests cover with realistic prices.
 *
 * The command module's run() is also called directly (a deliberate deep import), to look at its
 * errors as objects; the real-CLI test below runs the registered command.
 */
import https from 'node:https';
import { UserError } from '@spotctl/shared';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startMotoEc2, type MotoEc2 } from './helpers/aws-moto.ts';
import { runSpotctl } from './helpers/cli.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { runPrices } from '../packages/controller/src/commands/prices-testkit.ts';



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
  const saved: Record<string, string | undefined> = {};

  beforeAll(async () => {
    moto = await startMotoEc2();
    for (const key of ['AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_EC2', 'AWS_REGION']) saved[key] = process.env[key];
    process.env.AWS_ENDPOINT_URL = moto.endpoint;
    delete process.env.AWS_ENDPOINT_URL_EC2;
    delete process.env.AWS_REGION;
    // Belt and braces: every AWS endpoint is https; moto is plain http on loopback.
    vi.spyOn(https, 'request').mockImplementation(() => {
      throw new Error('an HTTPS request was attempted: the SDK is not pointed at moto');
    });
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    await moto?.[Symbol.asyncDispose]();
  });

  it('prices the fitting x86 types in every AZ of each region (--json)', async () => {
    const { code, stdout } = await runPrices({ regions: 'us-east-1,eu-west-1', json: true });
    expect(code).toBe(0);
    const rows = JSON.parse(stdout) as Row[];
    expect(new Set(rows.map((r) => r.instanceType))).toEqual(new Set(['c6a.4xlarge', 'c6a.8xlarge', 'c7a.2xlarge', 'c7a.4xlarge']));
    expect(new Set(rows.map((r) => r.region))).toEqual(new Set(['us-east-1', 'eu-west-1']));
    for (const r of rows) {
      expect(r.az.startsWith(r.region)).toBe(true);
      expect(r.pricePerHour).toBe(0.00001); // moto's constant
      expect(r.architecture).toBe('x86_64');
    }
    // eu-west-1 has 3 AZs in moto, us-east-1 6: each type priced per AZ.
    expect(rows.filter((r) => r.region === 'eu-west-1' && r.instanceType === 'c7a.2xlarge').map((r) => r.az)).toEqual(['eu-west-1a', 'eu-west-1b', 'eu-west-1c']);
    // All prices tie, so the tie-breakers decide: more vCPUs first, then region and AZ names.
    expect(rows[0]).toMatchObject({ region: 'eu-west-1', az: 'eu-west-1a', instanceType: 'c6a.8xlarge', cheapest: true });
    expect(rows.filter((r) => r.cheapest)).toHaveLength(1);
  });

  it('prints the table for people, Graviton with --arm', async () => {
    const { code, stdout, stderr } = await runPrices({ regions: 'us-west-2', arm: true, limit: '5' });
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^REGION\s+AZ\s+TYPE\s+VCPUS\s+\$\/HOUR/);
    expect(lines[1]).toMatch(/^us-west-2\s+us-west-2\w\s+c[67]g\.4xlarge\s+16\s+0\.00001\s+← cheapest$/);
    expect(lines.at(-1)).toMatch(/in effect now in 1 region, 5 of \d+ shown/);
    expect(stderr).toMatch(/4 workers → ≥ 6 vCPUs \(Graviton/);
  });

  it('turns an unknown --instance-type into a UserError with the fix', async () => {
    const err = await runPrices({ regions: 'us-east-1', instanceType: 'c7a.2xlarg' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).remediation).toMatch(/aws ec2 describe-instance-types/);
  });

  describe('through the real CLI', () => {
    let home: TmpDir;
    beforeAll(async () => {
      home = await tmpDir('spotctl-prices-');
    });
    afterAll(async () => {
      await home?.[Symbol.asyncDispose]();
    });

    it('runs `spotctl prices --json`', async () => {
      const result = await runSpotctl(['prices', '-w', '2', '--regions', 'eu-west-1', '--json'], {
        home: home.path,
        env: { AWS_ENDPOINT_URL: moto.endpoint, AWS_EC2_METADATA_DISABLED: 'true', AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing' },
        timeoutMs: 60_000,
      });
      expect(result.code, result.stderr).toBe(0);
      const rows = JSON.parse(result.stdout) as Row[];
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.every((r) => r.region === 'eu-west-1')).toBe(true);
      expect(result.stderr).not.toMatch(/NodeVersionSupportWarning/);
    });
  });
});
