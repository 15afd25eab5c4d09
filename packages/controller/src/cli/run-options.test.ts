import { UserError } from '@spotctl/shared';
import { describe, expect, it } from 'vitest';
import { checkOnRebalance, checkRunOptions } from './run-options.ts';

const none = () => false;

describe('checkRunOptions', () => {
  it('accepts the defaults', () => {
    expect(() =>
      checkRunOptions({ idleTimeout: '5m', maxRuntime: '0', grace: '90s', onRebalance: 'checkpoint', workers: '4' }, 'local', none),
    ).not.toThrow();
    expect(() =>
      checkRunOptions({ idleTimeout: '5m', maxRuntime: '0', grace: '90s', onRebalance: 'checkpoint', workers: '4' }, 'aws', none),
    ).not.toThrow();
  });

  it('refuses empty and too long durations, each by its flag', () => {
    expect(() => checkRunOptions({ grace: '' }, 'local', none)).toThrow(/empty duration for --grace/);
    expect(() => checkRunOptions({ maxRuntime: '' }, 'local', none)).toThrow(/empty duration for --max-runtime/);
    expect(() => checkRunOptions({ idleTimeout: '' }, 'local', none)).toThrow(/empty duration for --idle-timeout/);
    expect(() => checkRunOptions({ grace: '30d' }, 'local', none)).toThrow(/--grace 30d is too long/);
    expect(() => checkRunOptions({ simulateInterruption: '99999999999h' }, 'local', none)).toThrow(
      /--simulate-interruption 99999999999h is too long/,
    );
    expect(() => checkRunOptions({ idleTimeout: '10ms' }, 'local', none)).toThrow(/at least 1s/);
  });

  it('names an aws-only flag given to another provider', () => {
    for (const [name, flag] of [
      ['workers', '--workers'],
      ['ht', '--no-ht'],
      ['region', '--region'],
      ['sshCidr', '--ssh-cidr'],
    ]) {
      expect(() => checkRunOptions({}, 'local', (n) => n === name)).toThrow(
        new RegExp(`^${flag} only applies to --provider aws, not local$`),
      );
      expect(() => checkRunOptions({}, 'ssh', (n) => n === name)).toThrow(UserError);
    }
    expect(() => checkRunOptions({ workers: '8' }, 'aws', (n) => n === 'workers')).not.toThrow();
  });

  it('refuses --workers that is not a whole number', () => {
    for (const workers of ['abc', '0', '1.5', '8x', '0x10', '1e1', '100000'])
      expect(() => checkRunOptions({ workers }, 'aws', none)).toThrow(/--workers must be a whole number from 1 to/);
  });
});

describe('checkOnRebalance', () => {
  it('takes signal names the OS knows, without SIG', () => {
    for (const ok of ['checkpoint', 'ignore', 'signal:USR1', 'signal:TERM', 'signal:INT']) expect(() => checkOnRebalance(ok)).not.toThrow();
    expect(() => checkOnRebalance('signal:NOPE')).toThrow(/unknown signal 'NOPE'/);
    expect(() => checkOnRebalance('signal:SIGUSR1')).toThrow(/unknown signal 'SIGUSR1'/);
    expect(() => checkOnRebalance('signal:')).toThrow(/unknown signal ''/);
    expect(() => checkOnRebalance('flush')).toThrow(/unknown action 'flush'/);
  });
});
