/**
 * Checks every command's options share, run before the command does anything: an empty value is
 * never a choice (`--host "$UNSET"` must not fall through to launching an EC2 instance), and a
 * command can ask whether the user typed an option or got its default.
 */
import type { Command, Option } from 'commander';
import { UserError } from '@spotctl/shared';

function flagOf(option: Option): string {
  return option.long ?? option.short ?? option.flags;
}

/** Refuses `--flag ''` (and `--flag=`) for every option that takes a value. */
export function refuseEmptyOptions(command: Command): void {
  const values = command.opts();
  for (const option of command.options) {
    const value = values[option.attributeName()];
    const empty =
      typeof value === 'string' ? value.trim() === '' : Array.isArray(value) && value.some((v) => typeof v === 'string' && v.trim() === '');
    if (!empty) continue;
    const flag = flagOf(option);
    throw new UserError('SPOTCTL_USAGE', `${flag} is empty`, {
      remediation: `give ${flag} a value, or leave it out (an unset shell variable expands to nothing: check the variable in ${flag} "$VAR")`,
      exitCode: 2,
    });
  }
}

/** True when the user gave the option, on the command line or in the project file (not its default). */
export function optionGiven(command: Command, attributeName: string): boolean {
  const source = command.getOptionValueSource(attributeName);
  return source === 'cli' || source === 'env' || source === 'config';
}
