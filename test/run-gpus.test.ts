/**
 * `spotctl run --gpus` on the local provider, end to end (real CLI and agent bundles): the agent
 * probes the GPUs with nvidia-smi before the job starts and refuses to start a job that asked for
 * GPUs the machine lacks. The real nvidia-smi cannot exist here: fake ones on PATH stand in.
 */
import { chmodSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';

async function fakeNvidiaSmi(dir: TmpDir, script: string): Promise<Record<string, string>> {
  const file = path.join(dir.path, 'nvidia-smi');
  writeFileSync(file, `#!/bin/sh\n${script}\n`);
  chmodSync(file, 0o755);
  return { PATH: `${dir.path}:${process.env.PATH ?? '/usr/bin:/bin'}` };
}

describe('spotctl run --gpus (local provider)', () => {
  it('starts the job when the agent sees the GPUs asked for', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    await using bin = await tmpDir();
    const env = await fakeNvidiaSmi(bin, 'echo "NVIDIA A10G, 23028 MiB"');
    const r = await runSpotctl(
      ['run', '--provider', 'local', '--sync', proj.path, '--gpus', 'A10G', '--gpu-memory', '20G', '--', 'sh', '-c', 'echo job-ran'],
      { home: home.path, env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('job-ran');
  });

  it('fails before the job starts when nvidia-smi fails, naming the host and the reason', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    await using bin = await tmpDir();
    const env = await fakeNvidiaSmi(
      bin,
      'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." >&2; exit 9',
    );
    const marker = path.join(proj.path, 'started');
    const r = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, '--gpus', '1', '--', 'sh', '-c', `touch ${marker}`], {
      home: home.path,
      env,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/the run asked for 1 GPU but the agent sees no GPU on host \S+ \(nvidia-smi failed: NVIDIA-SMI has failed/);
    expect(r.stderr).toMatch(/the job was not started/);
    expect(existsSync(marker)).toBe(false);
  });

  it('a bad --gpus is refused before anything exists (no run record), with the fix', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    const r = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, '--gpus', 'A10G:zero', '--', 'true'], {
      home: home.path,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--gpus 'A10G:zero': the GPU count must be a whole number/);
    expect(r.stderr).toMatch(/--gpus A100:8/);
    expect(existsSync(path.join(home.path, 'runs')) ? readdirSync(path.join(home.path, 'runs')) : []).toEqual([]);
  });

  it('fails when the GPUs are the wrong model; a run without --gpus does not care', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    await using bin = await tmpDir();
    const env = await fakeNvidiaSmi(bin, 'echo "Tesla T4, 15360 MiB"');
    const wrong = await runSpotctl(
      ['run', '--provider', 'local', '--sync', proj.path, '--gpus', 'A100', '--', 'sh', '-c', 'echo job-ran'],
      { home: home.path, env },
    );
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/asked for 1 GPU \(A100\) but the agent sees Tesla T4 15360 MiB/);
    expect(wrong.stdout).not.toContain('job-ran');
    const plain = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, '--', 'sh', '-c', 'echo job-ran'], {
      home: home.path,
      env: { PATH: '/usr/bin:/bin' },
    });
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toContain('job-ran');
  });
});
