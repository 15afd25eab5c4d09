import { MAX_TIMER_MS, UserError } from '@spotctl/shared';
import { describe, expect, it } from 'vitest';
import { parseDuration } from './durations.ts';

function usageError(fn: () => unknown): UserError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).exitCode).toBe(2);
    return error as UserError;
  }
  throw new Error('expected a usage error');
}

describe('parseDuration', () => {
  it('reads seconds, units and sums', () => {
    expect(parseDuration('90', '--grace')).toBe(90_000);
    expect(parseDuration('1500ms', '--grace')).toBe(1500);
    expect(parseDuration('1h30m', '--grace')).toBe(5_400_000);
    expect(parseDuration('0', '--max-runtime')).toBe(0);
  });

  it('refuses an empty value instead of meaning the default', () => {
    for (const value of ['', '  ']) expect(usageError(() => parseDuration(value, '--grace')).message).toBe('empty duration for --grace');
  });

  it('refuses what a Node.js timer cannot hold, naming the limit', () => {
    expect(parseDuration('24d', '--grace')).toBe(24 * 86_400_000);
    expect(parseDuration(`${MAX_TIMER_MS}ms`, '--grace')).toBe(MAX_TIMER_MS);
    for (const value of ['30d', `${MAX_TIMER_MS + 1}ms`, '99999999999h', '9'.repeat(400)]) {
      expect(usageError(() => parseDuration(value, '--max-runtime')).message).toMatch(
        /--max-runtime .* is too long: the limit is .*2\^31-1 ms/,
      );
    }
  });

  it('lets ages (not timers) go past the timer limit', () => {
    expect(parseDuration('30d', '--min-age', { timer: false })).toBe(30 * 86_400_000);
  });
});
