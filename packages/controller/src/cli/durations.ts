import { MAX_TIMER_MS, UserError } from '@spotctl/shared';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** MAX_TIMER_MS in words, for error messages: 24d 20h 31m 23.647s. */
const MAX_TIMER_TEXT = '24d20h31m23s (2^31-1 ms, the longest timer Node.js can hold)';

/**
 * Parses `90`, `90s`, `1500ms`, `5m`, `2h`, `1h30m` into milliseconds; a bare number is seconds.
 * Refuses an empty value (an unset shell variable must not mean "the default") and anything a
 * Node.js timer cannot hold: setTimeout fires at once for delays past 2^31-1 ms. `timer: false`
 * (an age, not a delay) lifts that bound. @default { timer: true }
 */
export function parseDuration(value: string, flag: string, options: { timer?: boolean } = {}): number {
  const text = value.trim();
  let total = 0;
  let consumed = 0;
  if (/^\d+(\.\d+)?$/.test(text)) {
    total = Number(text) * 1000;
    consumed = text.length;
  } else {
    const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
    for (const m of text.matchAll(re)) {
      if (m.index !== consumed) break;
      total += Number(m[1]) * (UNITS[m[2] ?? 's'] ?? 1000);
      consumed += m[0].length;
    }
  }
  if (consumed !== text.length || text.length === 0) {
    throw new UserError('SPOTCTL_USAGE', text.length === 0 ? `empty duration for ${flag}` : `invalid duration for ${flag}: '${value}'`, {
      remediation: `use a number of seconds or a value like 90s, 5m, 2h (e.g. ${flag} 5m)${text.length === 0 ? `, or leave ${flag} out for its default` : ''}`,
      exitCode: 2,
    });
  }
  const ms = Math.round(total);
  if (!(ms <= (options.timer === false ? Number.MAX_SAFE_INTEGER : MAX_TIMER_MS))) {
    if (options.timer === false) {
      throw new UserError('SPOTCTL_USAGE', `${flag} ${value} is too long`, {
        remediation: `give ${flag} a value in days (e.g. ${flag} 30d)`,
        exitCode: 2,
      });
    }
    throw new UserError('SPOTCTL_USAGE', `${flag} ${value} is too long: the limit is ${MAX_TIMER_TEXT}`, {
      remediation: `give ${flag} a value up to 24d (e.g. ${flag} 24d)`,
      exitCode: 2,
    });
  }
  return ms;
}
