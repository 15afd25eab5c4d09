/**
 * GPUs against a real moto_server: `spotctl gpus` and `spotctl prices --gpus` through the real CLI
 * (moto's DescribeInstanceTypes carries GpuInfo for the g4dn/g5/g6/p4 families), and the image a GPU
 * run boots (the Deep Learning Base image entries in test/fixtures/moto-amis.json).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ec2Clients, ensureLocalKey, ensureRegionInfra } from '@spotctl/controller';
import { TEST_CREDENTIALS, startMotoEc2, type MotoEc2 } from './helpers/aws-moto.ts';
import { runSpotctl, type CliResult } from './helpers/cli.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';

interface GpuRow {
  instanceType: string;
  gpu: string;
  manufacturer: string;
  gpuCount: number;
  gpuMemoryMiB: number;
  vcpus: number;
  architecture: string;
  pricePerHour: number;
  region: string;
  az: string;
}
interface PriceRow {
  region: string;
  instanceType: string;
  vcpus: number;
  gpu?: { name: string; count: number; memoryMiB: number; manufacturer: string };
}

describe('GPUs against moto', () => {
  let moto: MotoEc2;
  let home: TmpDir;

  beforeAll(async () => {
    moto = await startMotoEc2();
    home = await tmpDir('spotctl-gpus-');
  });
  afterAll(async () => {
    await home?.[Symbol.asyncDispose]();
    await moto?.[Symbol.asyncDispose]();
  });

  const spotctl = (...args: string[]): Promise<CliResult> =>
    runSpotctl(args, {
      home: home.path,
      env: {
        AWS_ENDPOINT_URL: moto.endpoint,
        AWS_ENDPOINT_URL_EC2: '',
        AWS_REGION: '',
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_ACCESS_KEY_ID: 'testing',
        AWS_SECRET_ACCESS_KEY: 'testing',
      },
      timeoutMs: 90_000,
    });
  const types = (rows: { instanceType: string }[]): Set<string> => new Set(rows.map((r) => r.instanceType));

  it('spotctl gpus lists every GPU type from GpuInfo with its cheapest spot price, and no CPU type', async () => {
    const { code, stdout, stderr } = await spotctl('gpus', '--regions', 'us-east-1,eu-west-1', '--json');
    expect(code, stderr).toBe(0);
    const rows = JSON.parse(stdout) as GpuRow[];
    const byType = new Map(rows.map((r) => [r.instanceType, r]));
    expect(byType.get('g5.xlarge')).toMatchObject({
      gpu: 'A10G',
      manufacturer: 'NVIDIA',
      gpuCount: 1,
      gpuMemoryMiB: 22888,
      vcpus: 4,
      architecture: 'x86_64',
      pricePerHour: 0.00001,
    });
    expect(byType.get('g4dn.12xlarge')).toMatchObject({ gpu: 'T4', gpuCount: 4, gpuMemoryMiB: 16384, vcpus: 48 });
    expect(byType.get('g6.xlarge')).toMatchObject({ gpu: 'L4', gpuCount: 1 });
    expect(byType.get('p4d.24xlarge')).toMatchObject({ gpu: 'A100', gpuCount: 8, gpuMemoryMiB: 40960, vcpus: 96 });
    // Graviton GPU types too (both architectures are listed), and other makers, labelled as such.
    expect(byType.get('g5g.xlarge')).toMatchObject({ gpu: 'T4g', architecture: 'arm64' });
    expect(byType.get('g4ad.xlarge')).toMatchObject({ manufacturer: 'AMD' });
    expect([...byType.keys()].some((t) => /^(c|m|r|t)\d/.test(t))).toBe(false);
    for (const r of rows) expect(['us-east-1', 'eu-west-1']).toContain(r.region);
    // Sorted by model, then count.
    const a10g = rows.filter((r) => r.gpu === 'A10G').map((r) => r.gpuCount);
    expect(a10g).toEqual([...a10g].sort((x, y) => x - y));
  });

  it('spotctl gpus prints a table with the model, count, memory and price', async () => {
    const { code, stdout, stderr } = await spotctl('gpus', '--region', 'us-east-1');
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(/^GPU\s+MAKER\s+COUNT\s+GPU MEM\s+TYPE\s+VCPUS/m);
    expect(stdout).toMatch(/^A10G\s+NVIDIA\s+1\s+22\.4G\s+g5\.xlarge\s+4\s/m);
    expect(stdout).toMatch(/GPU types with a spot price now in 1 region/);
  });

  it('prices --gpus A10G: only A10G types, sized for one worker by default (the 4-vCPU g5.xlarge fits)', async () => {
    const { code, stdout, stderr } = await spotctl('prices', '--gpus', 'A10G', '--regions', 'us-east-1', '--json');
    expect(code, stderr).toBe(0);
    const rows = JSON.parse(stdout) as PriceRow[];
    expect(types(rows)).toEqual(new Set(['g5.xlarge', 'g5.2xlarge']));
    for (const r of rows) expect(r.gpu).toMatchObject({ name: 'A10G', count: 1, manufacturer: 'NVIDIA' });
  });

  it('prices --gpus with --workers sizes the vCPUs as for CPU runs', async () => {
    const { code, stdout, stderr } = await spotctl('prices', '--gpus', 'a10g', '--workers', '8', '--regions', 'us-east-1', '--json');
    expect(code, stderr).toBe(0);
    // 8 workers on SMT → 18 vCPUs: g5.8xlarge (32) and one size up with a single GPU (g5.16xlarge).
    expect(types(JSON.parse(stdout) as PriceRow[])).toEqual(new Set(['g5.8xlarge', 'g5.16xlarge']));
  });

  it('prices --gpus "T4|L4" --gpu-memory 20G: any of the models, with enough memory each (T4 has 16G)', async () => {
    const { code, stdout, stderr } = await spotctl('prices', '--gpus', 'T4|L4', '--gpu-memory', '20G', '--regions', 'us-east-1', '--json');
    expect(code, stderr).toBe(0);
    const rows = JSON.parse(stdout) as PriceRow[];
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) expect(r.gpu?.name).toBe('L4');
    const withoutMemory = JSON.parse((await spotctl('prices', '--gpus', 'T4|L4', '--regions', 'us-east-1', '--json')).stdout) as PriceRow[];
    expect(new Set(withoutMemory.map((r) => r.gpu?.name))).toEqual(new Set(['T4', 'L4']));
  });

  it('prices --gpus A100:8 finds the eight-GPU types; --gpus 1 only single-GPU NVIDIA types', async () => {
    const eight = await spotctl('prices', '--gpus', 'A100:8', '--regions', 'us-east-1', '--json');
    expect(eight.code, eight.stderr).toBe(0);
    const rows = JSON.parse(eight.stdout) as PriceRow[];
    expect(types(rows)).toEqual(new Set(['p4d.24xlarge', 'p4de.24xlarge']));
    const one = await spotctl('prices', '--gpus', '1', '--regions', 'us-east-1', '--json');
    expect(one.code, one.stderr).toBe(0);
    const ones = JSON.parse(one.stdout) as PriceRow[];
    expect(ones.length).toBeGreaterThan(0);
    for (const r of ones) expect(r.gpu).toMatchObject({ count: 1, manufacturer: 'NVIDIA' });
  });

  it('refuses bad GPU specs and specs no type has, with the fix', async () => {
    const bad = await spotctl('prices', '--gpus', 'A10G:0', '--regions', 'us-east-1');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--gpus 'A10G:0': the GPU count must be a whole number/);
    expect(bad.stderr).toMatch(/--gpus A100:8/);
    const memory = await spotctl('prices', '--gpu-memory', 'lots', '--regions', 'us-east-1');
    expect(memory.code).toBe(2);
    expect(memory.stderr).toMatch(/--gpu-memory must be a size with a unit, got 'lots'.*--gpu-memory 20G/s);
    const none = await spotctl('prices', '--gpus', 'T4:3', '--regions', 'us-east-1');
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/no x86_64 spot instance type has 3× T4/);
    expect(none.stderr).toMatch(/spotctl gpus/);
  });

  it('a GPU run boots the newest Deep Learning Base image for Ubuntu of its architecture; a CPU run stock Ubuntu', async () => {
    const keysDir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-gpu-keys-'));
    const clients = new Ec2Clients({ endpoint: moto.endpoint, config: { credentials: TEST_CREDENTIALS } });
    try {
      const key = await ensureLocalKey(keysDir);
      const ec2 = await clients.forRegion('us-east-2');
      const base = { ec2, region: 'us-east-2', owner: 'arn:aws:iam::123456789012:user/moto', key, sshCidr: '198.51.100.23/32' };
      const gpu = await ensureRegionInfra({ ...base, architecture: 'x86_64', gpu: true });
      // Not the older build, and not the newer Amazon Linux one.
      expect(gpu.image).toMatchObject({ imageId: 'ami-0d1a2b3c4d5e60002', baked: false, gpu: true });
      const arm = await ensureRegionInfra({ ...base, architecture: 'arm64', gpu: true });
      expect(arm.image).toMatchObject({ imageId: 'ami-0d1a2b3c4d5e60003', gpu: true });
      const cpu = await ensureRegionInfra({ ...base, architecture: 'x86_64' });
      expect(cpu.image).toMatchObject({ imageId: 'ami-0a1b2c3d4e5f60002', baked: false });
      expect(cpu.image.gpu).toBeUndefined();
    } finally {
      clients.close();
      rmSync(keysDir, { recursive: true, force: true });
    }
  });
});
