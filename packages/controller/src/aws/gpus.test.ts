import { UserError } from '@spotctl/shared';
import { describe, expect, it } from 'vitest';
import { describeGpuRequest, gpuMismatch, parseGpuMemory, parseGpuRequest, parseGpuSpec } from './gpus.ts';

describe('--gpus', () => {
  it('reads every form: a count, a model, model:count, and alternatives', () => {
    expect(parseGpuSpec('1')).toEqual({ count: 1 });
    expect(parseGpuSpec('4')).toEqual({ count: 4 });
    expect(parseGpuSpec('A10G')).toEqual({ names: ['A10G'], count: 1 });
    expect(parseGpuSpec('l4:1')).toEqual({ names: ['L4'], count: 1 });
    expect(parseGpuSpec('A100:8')).toEqual({ names: ['A100'], count: 8 });
    expect(parseGpuSpec('T4|L4')).toEqual({ names: ['T4', 'L4'], count: 1 });
    expect(parseGpuSpec(' T4 | L4 :2')).toEqual({ names: ['T4', 'L4'], count: 2 });
  });

  it('refuses bad specs with a usage error (exit 2) and examples', () => {
    for (const bad of ['', '0', 'A10G:0', 'A10G:x', 'A10G:1:2', 'T4||L4', 'A10G;rm', '65']) {
      const error = (() => {
        try {
          parseGpuSpec(bad);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(error, bad).toBeInstanceOf(UserError);
      expect((error as UserError).exitCode, bad).toBe(2);
      expect((error as UserError).remediation, bad).toMatch(/--gpus A100:8/);
    }
  });

  it('--gpu-memory takes M, G and T (GiB-based, as AWS and nvidia-smi count)', () => {
    expect(parseGpuMemory('20G')).toBe(20480);
    expect(parseGpuMemory('20GB')).toBe(20480);
    expect(parseGpuMemory('22.5g')).toBe(23040);
    expect(parseGpuMemory('16384M')).toBe(16384);
    expect(() => parseGpuMemory('20')).toThrow(/--gpu-memory must be a size with a unit/);
    expect(() => parseGpuMemory('0G')).toThrow(UserError);
    expect(parseGpuRequest({ gpuMemory: '20G' })).toEqual({ count: 1, minMemoryMiB: 20480 });
    expect(parseGpuRequest({})).toBeUndefined();
  });

  it('matches a type by maker, model, exact count and memory per GPU', () => {
    const a10g = { name: 'A10G', manufacturer: 'NVIDIA', count: 1, memoryMiB: 22888 };
    expect(gpuMismatch('g5.xlarge', a10g, { count: 1 })).toBeUndefined();
    expect(gpuMismatch('g5.xlarge', a10g, { names: ['A10G'], count: 1, minMemoryMiB: 20480 })).toBeUndefined();
    expect(gpuMismatch('g5.xlarge', a10g, { names: ['L4'], count: 1 })).toBe('g5.xlarge has A10G, not L4');
    expect(gpuMismatch('g5.xlarge', a10g, { count: 4 })).toBe('g5.xlarge has 1 GPU, 4 asked for');
    expect(gpuMismatch('g5.xlarge', a10g, { count: 1, minMemoryMiB: 24576 })).toMatch(/has 22\.4G, 24G asked for/);
    expect(gpuMismatch('g4ad.xlarge', { ...a10g, manufacturer: 'AMD' }, { count: 1 })).toMatch(/NVIDIA only/);
    expect(gpuMismatch('c7a.large', undefined, { count: 1 })).toBe('c7a.large has no GPU');
    expect(describeGpuRequest({ names: ['T4', 'L4'], count: 2, minMemoryMiB: 20480 })).toBe('2× T4|L4 with ≥ 20G each');
  });
});
