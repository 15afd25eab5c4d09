import { UserError } from '@spotctl/shared';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PROVIDER, resolveProvider } from './run.ts';

describe('resolveProvider', () => {
  it('is aws without --provider, --host or SPOTCTL_PROVIDER', () => {
    expect(DEFAULT_PROVIDER).toBe('aws');
    expect(resolveProvider({}, {})).toBe('aws');
  });

  it('is ssh with --host, whatever SPOTCTL_PROVIDER says', () => {
    expect(resolveProvider({ host: 'u@h' }, { SPOTCTL_PROVIDER: 'local' })).toBe('ssh');
  });

  it('takes SPOTCTL_PROVIDER as the default, and --provider over it', () => {
    expect(resolveProvider({}, { SPOTCTL_PROVIDER: 'local' })).toBe('local');
    expect(resolveProvider({ provider: 'aws' }, { SPOTCTL_PROVIDER: 'local' })).toBe('aws');
  });

  it('refuses an unknown SPOTCTL_PROVIDER with a usage error that names it', () => {
    expect(() => resolveProvider({}, { SPOTCTL_PROVIDER: 'gcp' })).toThrow(UserError);
    expect(() => resolveProvider({}, { SPOTCTL_PROVIDER: 'gcp' })).toThrow(/SPOTCTL_PROVIDER: unknown provider 'gcp'/);
  });
});
