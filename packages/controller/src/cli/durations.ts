import { UserError } from '@spotctl/shared';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `90`, `90s`, `1500ms`, `5m`, `2h`, `1h30m` into milliseconds; a bare number is seconds. */
export function parseDuration(value: string, flag: string): number {
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
  let total = 0;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * (UNITS[m[2] ?? 's'] ?? 1000);
    consumed += m[0].length;
  }
  if (consumed !== text.length || text.length === 0) {
    throw new UserError('SPOTCTL_USAGE', `invalid duration for ${flag}: '${value}'`, {
      remediation: `use a number of seconds or a value like 90s, 5m, 2h (e.g. ${flag} 5m)`,
    });
  }
  return Math.round(total);
}
