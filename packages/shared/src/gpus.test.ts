import { describe, expect, it } from 'vitest';
import { gpuShortfall } from './gpus.ts';

describe('gpuShortfall', () => {
  const a10g = { name: 'NVIDIA A10G', memoryMiB: 23028 };
  it('accepts enough GPUs of an asked model (a word of nvidia-smi name), and more than asked', () => {
    expect(gpuShortfall({ count: 1, names: ['A10G'] }, [a10g])).toBeUndefined();
    expect(gpuShortfall({ count: 1 }, [a10g, a10g])).toBeUndefined();
    expect(gpuShortfall({ count: 1, names: ['T4', 'L4'] }, [{ name: 'Tesla T4', memoryMiB: 15360 }])).toBeUndefined();
    expect(gpuShortfall({ count: 1, minMemoryMiB: 20480 }, [a10g])).toBeUndefined();
  });
  it('names what is missing, where, and why the probe saw nothing', () => {
    expect(gpuShortfall({ count: 1, where: 'g5.xlarge with image ami-1 (DLAMI)' }, [], 'nvidia-smi not found')).toBe(
      'the run asked for 1 GPU but the agent sees no GPU on g5.xlarge with image ami-1 (DLAMI) (nvidia-smi not found)',
    );
    expect(gpuShortfall({ count: 2 }, [a10g])).toMatch(/asked for 2 GPUs but the agent sees NVIDIA A10G 23028 MiB/);
    expect(gpuShortfall({ count: 1, names: ['A100'] }, [a10g])).toMatch(/\(A100\)/);
    expect(gpuShortfall({ count: 1, minMemoryMiB: 40960 }, [a10g])).toMatch(/≥ 40960 MiB each/);
    // A10 is not A10G: whole words only.
    expect(gpuShortfall({ count: 1, names: ['A10'] }, [a10g])).toBeDefined();
  });
});
