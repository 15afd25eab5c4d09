import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseNvidiaSmi, probeGpus } from './probe.ts';

// The real nvidia-smi cannot exist here: fake ones on a PATH of their own.
const dirs: string[] = [];
function fakeNvidiaSmi(script: string): NodeJS.ProcessEnv {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-fake-smi-'));
  dirs.push(dir);
  const file = path.join(dir, 'nvidia-smi');
  writeFileSync(file, `#!/bin/sh\n${script}\n`);
  chmodSync(file, 0o755);
  return { PATH: `${dir}:/usr/bin:/bin` };
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('GPU probe', () => {
  it('reads name and memory per GPU from nvidia-smi, asking for exactly those fields', async () => {
    const env = fakeNvidiaSmi(
      [
        'if [ "$1" != "--query-gpu=name,memory.total" ] || [ "$2" != "--format=csv,noheader" ]; then echo "bad args: $*" >&2; exit 2; fi',
        'echo "NVIDIA A10G, 23028 MiB"',
        'echo "NVIDIA A10G, 23028 MiB"',
      ].join('\n'),
    );
    expect(await probeGpus({ env })).toEqual({
      gpus: [
        { name: 'NVIDIA A10G', memoryMiB: 23028 },
        { name: 'NVIDIA A10G', memoryMiB: 23028 },
      ],
    });
  });

  it('a failing nvidia-smi means no GPU, with its last stderr line as the reason', async () => {
    const env = fakeNvidiaSmi('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." >&2; exit 9');
    const probe = await probeGpus({ env });
    expect(probe.gpus).toEqual([]);
    expect(probe.error).toMatch(/nvidia-smi failed: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver/);
  });

  it('no nvidia-smi at all means no GPU, said plainly', async () => {
    const empty = mkdtempSync(path.join(os.tmpdir(), 'spotctl-no-smi-'));
    dirs.push(empty);
    const probe = await probeGpus({ env: { PATH: empty } });
    expect(probe).toEqual({ gpus: [], error: 'nvidia-smi not found: no NVIDIA driver on this machine' });
  });

  it('is bounded: a hanging nvidia-smi is killed and counts as no GPU', async () => {
    const env = fakeNvidiaSmi('exec sleep 60');
    const probe = await probeGpus({ env, timeoutMs: 300 });
    expect(probe.gpus).toEqual([]);
    expect(probe.error).toMatch(/did not answer within/);
  });

  it('skips lines it cannot read', () => {
    expect(parseNvidiaSmi('Tesla T4, 15360 MiB\n\ngarbage\nNVIDIA L4, 23034 MiB\n')).toEqual([
      { name: 'Tesla T4', memoryMiB: 15360 },
      { name: 'NVIDIA L4', memoryMiB: 23034 },
    ]);
  });
});
