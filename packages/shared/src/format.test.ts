import { describe, expect, it } from 'vitest';
import { formatBytes } from './format.ts';

describe('formatBytes', () => {
  it('speaks binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(2_097_171)).toBe('2.0 MiB');
    expect(formatBytes(37 * 1024 ** 3)).toBe('37 GiB');
    expect(formatBytes(Number.NaN)).toBe('0 B');
  });
});
