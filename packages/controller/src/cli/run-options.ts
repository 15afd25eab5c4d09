/**
 * `spotctl run`'s option checks that need no I/O, run at the top of its action so a bad command
 * line is refused before a run record, a connection or an instance exists.
 */
import os from 'node:os';
import { UserError } from '@spotctl/shared';
import { AWS_ONLY_RUN_FLAGS, parseWorkersOption } from '../aws/cli-options.ts';
import { parseDuration } from './durations.ts';

export interface RunOptionValues {
  idleTimeout?: string;
  maxRuntime?: string;
  grace?: string;
  simulateInterruption?: string;
  onRebalance?: string;
  workers?: string;
}

/** Checks `--on-rebalance`: checkpoint, ignore, or signal:NAME with a signal this OS has. */
export function checkOnRebalance(action: string): void {
  const match = /^signal:(.*)$/.exec(action);
  if (match) {
    const name = (match[1] ?? '').replace(/^SIG/, '');
    if (name !== '' && `SIG${name}` in os.constants.signals && match[1] === name) return;
    throw new UserError('SPOTCTL_USAGE', `--on-rebalance: unknown signal '${match[1] ?? ''}'`, {
      remediation: `use a signal name without SIG, e.g. --on-rebalance signal:USR1 (known: ${Object.keys(os.constants.signals)
        .map((s) => s.slice(3))
        .join(', ')})`,
      exitCode: 2,
    });
  }
  if (action === 'checkpoint' || action === 'ignore') return;
  throw new UserError('SPOTCTL_USAGE', `--on-rebalance: unknown action '${action}'`, {
    remediation: 'use checkpoint, ignore or signal:NAME (e.g. signal:USR1)',
    exitCode: 2,
  });
}

/**
 * Every run option that can be checked without touching anything: durations (empty, malformed or
 * longer than a timer holds), --on-rebalance, --workers, and aws-only flags given to another provider.
 * `given` says whether the user typed an option (by attribute name) rather than getting its default.
 */
export function checkRunOptions(
  options: RunOptionValues,
  provider: 'aws' | 'ssh' | 'local',
  given: (attributeName: string) => boolean,
): void {
  if (provider !== 'aws') {
    const stray = Object.entries(AWS_ONLY_RUN_FLAGS).find(([name]) => given(name));
    if (stray) {
      throw new UserError('SPOTCTL_USAGE', `${stray[1]} only applies to --provider aws, not ${provider}`, {
        remediation: `drop ${stray[1]}, or run on EC2 with --provider aws`,
        exitCode: 2,
      });
    }
  } else {
    parseWorkersOption(options.workers, 'spotctl run --provider aws {} train.py');
  }
  const durations: [keyof RunOptionValues, string][] = [
    ['idleTimeout', '--idle-timeout'],
    ['maxRuntime', '--max-runtime'],
    ['grace', '--grace'],
    ['simulateInterruption', '--simulate-interruption'],
  ];
  for (const [key, flag] of durations) {
    const value = options[key];
    if (value !== undefined) parseDuration(value, flag);
  }
  if (options.idleTimeout !== undefined && parseDuration(options.idleTimeout, '--idle-timeout') < 1000) {
    throw new UserError('SPOTCTL_USAGE', '--idle-timeout must be at least 1s', { remediation: 'e.g. --idle-timeout 5m', exitCode: 2 });
  }
  if (options.onRebalance !== undefined) checkOnRebalance(options.onRebalance);
}
