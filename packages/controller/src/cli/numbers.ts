import { UserError } from '@spotctl/shared';

/**
 * A count or line number from the command line: digits only, ≥ 1 (`--from 500`, `--limit 20`).
 * `abc`, `0`, `1.5`, `1e3` and `0x10` are refused rather than silently read as something else.
 * `example` is a full command line showing the flag in use.
 */
export function parseWholeNumber(value: string, flag: string, example: string): number {
  const text = value.trim();
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new UserError('SPOTCTL_USAGE', `${flag} wants a whole number ≥ 1, got '${value}'`, {
      remediation: `for example: ${example}`,
      exitCode: 2,
    });
  }
  return n;
}
