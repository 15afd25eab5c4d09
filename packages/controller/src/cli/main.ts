/**
 * The CLI's composition root: builds the commander program from the command registry and owns
 * the one top-level error handler and the one exit path.
 */
import { Command, CommanderError } from 'commander';
import { SpotctlError, UserError, type ErrorCode } from '@spotctl/shared';
import { Output } from '../output/output.ts';
import { commands } from '../commands/index.ts';
import { contextFor } from './define-command.ts';
import { refuseInvalidUtf8 } from './argv-text.ts';
import { optionGiven, refuseEmptyOptions } from './option-checks.ts';
import { ForcedExit } from '../session/tail.ts';
import { readTestOverrides } from '../providers/test-overrides.ts';

export const VERSION = '0.1.0';

const BUG = 'this looks like a bug; re-run with DEBUG=spotctl:* and report the output';

/** What to do about expected failures that carry no remediation of their own. */
const DEFAULT_REMEDIATION: Partial<Record<ErrorCode, string>> = {
  SPOTCTL_SSH_UNREACHABLE: 'check that the host is up and reachable, then retry (spotctl attach RUN resumes a running job)',
  SPOTCTL_SSH_FAILED: 'check disk space and permissions on the host (ssh into it), then retry',
  SPOTCTL_AGENT_START: "the agent's own log is agent.out in the run's agent/ directory on the host",
  SPOTCTL_AGENT_UNREACHABLE: 'the job keeps running; once the host is reachable, resume with: spotctl attach RUN',
  SPOTCTL_SYNC_FAILED: 'check disk space and permissions on the host, then retry',
  SPOTCTL_JOB_STATE: 'see the run with: spotctl ps',
};

export function buildProgram(onExitCode: (code: number) => void): Command {
  const program = new Command('spotctl')
    .description('Run a command on a cheap (spot) machine without losing work, logs or money.')
    .version(VERSION, '-V, --version')
    .enablePositionalOptions()
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ outputError: () => undefined });

  for (const def of commands) {
    const cmd = program.command(def.name).description(def.description).exitOverride().configureOutput({ outputError: () => undefined });
    def.configure(cmd);
    // Only `run` and `ssh` hand everything after their first operand(s) to the job or shell
    // untouched; other commands take options anywhere (`spotctl logs RUN -f`).
    if (def.name === 'run' || def.name === 'ssh') cmd.passThroughOptions();
    cmd.addHelpText('after', `\nExamples:\n${def.examples.map((e) => `  $ ${e}`).join('\n')}\n`);
    cmd.action(async (...actionArgs: unknown[]) => {
      const command = actionArgs[actionArgs.length - 1] as Command;
      const options = command.opts();
      refuseEmptyOptions(command);
      // commander passes each declared argument (a variadic one as an array), then options, then the command.
      const positional = (actionArgs.slice(0, -2) as (string | string[] | undefined)[]).flat().filter((a): a is string => a !== undefined);
      // Test-only settings enter here, once, and travel down in the context.
      onExitCode(await def.run(positional, options, contextFor(options, readTestOverrides(process.env), (name) => optionGiven(command, name))));
    });
  }
  program.addHelpText('after', `\nExamples:\n  $ spotctl run train.py\n  $ spotctl run --host ubuntu@my-box -- python3 train.py --epochs 10\n  $ spotctl ps\n\nRun 'spotctl <command> --help' for a command's options.\n`);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // The AWS SDK warns on Node < 22 straight to stderr, past our output module; Node 20 is supported here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  let exitCode = 0;
  const program = buildProgram((code) => {
    exitCode = code;
  });
  const json = argv.includes('--json');
  const out = new Output({ json });
  try {
    if (argv.length === 0) {
      program.outputHelp();
      return 0;
    }
    refuseInvalidUtf8(argv);
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    return reportError(error, out, argv);
  }
}

function reportError(error: unknown, out: Output, argv: string[]): number {
  if (error instanceof CommanderError) {
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return 0;
    const message = error.message.replace(/^error:\s*/, '');
    const sub = argv.find((a) => commands.some((c) => c.name === a));
    out.error(message, sub ? `see: spotctl ${sub} --help` : 'see: spotctl --help', 'SPOTCTL_USAGE');
    return 2;
  }
  if (error instanceof ForcedExit) return 130;
  if (error instanceof UserError) {
    out.error(error.message, error.remediation, error.code);
    if (process.env.DEBUG) out.debugDetail(String(error.stack));
    return error.exitCode;
  }
  const err = error instanceof Error ? error : new Error(String(error));
  const code = error instanceof SpotctlError ? error.code : 'SPOTCTL_INTERNAL';
  const remediation = error instanceof SpotctlError ? (error.remediation ?? DEFAULT_REMEDIATION[error.code] ?? BUG) : BUG;
  out.error(err.message, remediation, code);
  if (process.env.DEBUG) out.debugDetail(String(err.stack));
  return 1;
}

