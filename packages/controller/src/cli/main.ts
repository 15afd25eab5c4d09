/**
 * The CLI's composition root: builds the commander program from the command registry and owns
 * the one top-level error handler and the one exit path.
 *
 * Only commander, the registry and the error classes load at start: `spotctl --help` lists the
 * commands from the registry, and only the command being run (or asked about) is imported, with
 * its options. Everything else here that needs the protocol (the output module, the test
 * overrides, the run store) is imported when it is first used. Check with esbuild's metafile
 * (test/cli-registry.test.ts) before adding a static import.
 */
import { Command, CommanderError, Help } from 'commander';
import { SpotctlError, UserError, type ErrorCode } from '@spotctl/shared';
import type { Output } from '../output/output.ts';
import { commandTerm, commands, type CommandEntry } from '../commands/index.ts';
import { refuseInvalidUtf8 } from './argv-text.ts';
import { optionGiven, refuseEmptyOptions } from './option-checks.ts';

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

/** The command commander will dispatch `argv` to (`help CMD` asks about CMD), if any. */
export function commandOf(argv: readonly string[]): CommandEntry | undefined {
  const operands = argv.filter((a) => !a.startsWith('-'));
  const name = operands[0] === 'help' ? operands[1] : operands[0];
  return commands.find((c) => c.name === name);
}

/**
 * The program for `argv`: every command is listed (from the registry), and the one `argv` runs or
 * asks about is loaded and configured in full. `argv` undefined loads every command (docs, tests).
 */
export async function buildProgram(onExitCode: (code: number) => void, argv?: readonly string[]): Promise<Command> {
  const program = new Command('spotctl')
    .description('Run a command on a cheap (spot) machine without losing work, logs or money.')
    .version(VERSION, '-V, --version')
    .enablePositionalOptions()
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ outputError: () => undefined })
    .configureHelp({
      // A command that is not loaded has no options or arguments yet: its line comes from the registry.
      subcommandTerm: (cmd) => {
        const known = commands.find((c) => c.name === cmd.name());
        return known ? commandTerm(known) : new Help().subcommandTerm(cmd);
      },
    });

  const wanted = argv === undefined ? undefined : commandOf(argv);
  const loaded = await Promise.all(commands.map((c) => (argv === undefined || c === wanted ? c.load() : Promise.resolve(undefined))));
  commands.forEach((entry, i) => {
    const cmd = program
      .command(entry.name)
      .description(entry.description)
      .exitOverride()
      .configureOutput({ outputError: () => undefined });
    const def = loaded[i];
    if (!def) {
      // commandOf() chose another command, so commander does not dispatch here.
      cmd.action(() => {
        throw new SpotctlError('SPOTCTL_INTERNAL', `command ${entry.name} was not loaded`);
      });
      return;
    }
    def.configure(cmd);
    // Only `run` and `ssh` hand everything after their first operand(s) to the job or shell
    // untouched; other commands take options anywhere (`spotctl logs RUN -f`).
    if (def.name === 'run' || def.name === 'ssh') cmd.passThroughOptions();
    cmd.addHelpText('after', `\nExamples:\n${def.examples.map((e) => `  $ ${e}`).join('\n')}\n`);
    cmd.action(async (...actionArgs: unknown[]) => {
      const command = actionArgs[actionArgs.length - 1] as Command;
      // The project file's values enter before any check, so they are checked like flags.
      const projectFiles = def.projectFile ? await import('./project-file.ts') : undefined;
      const projectFile = projectFiles?.applyProjectFile(command);
      const options = command.opts();
      try {
        refuseEmptyOptions(command);
      } catch (error) {
        throw projectFiles ? projectFiles.attributeToProjectFile(error, projectFile) : error;
      }
      // commander passes each declared argument (a variadic one as an array), then options, then the command.
      const positional = (actionArgs.slice(0, -2) as (string | string[] | undefined)[]).flat().filter((a): a is string => a !== undefined);
      const [{ contextFor }, { readTestOverrides }] = await Promise.all([
        import('./define-command.ts'),
        import('../providers/test-overrides.ts'),
      ]);
      // Test-only settings enter here, once, and travel down in the context.
      const ctx = contextFor(options, readTestOverrides(process.env), (name) => optionGiven(command, name));
      onExitCode(
        await def.run(
          positional,
          options,
          def.projectFile
            ? { ...ctx, ...(projectFile ? { projectFile } : {}), settings: projectFiles!.describeSettings(command, projectFile) }
            : ctx,
        ),
      );
    });
  });
  program.addHelpText(
    'after',
    `\nExamples:\n  $ spotctl run train.py\n  $ spotctl run --host ubuntu@my-box -- python3 train.py --epochs 10\n  $ spotctl ps\n\nRun 'spotctl <command> --help' for a command's options.\n`,
  );
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // The AWS SDK warns on Node < 22 straight to stderr, past our output module; Node 20 is supported here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  let exitCode = 0;
  const json = argv.includes('--json');
  try {
    const program = await buildProgram((code) => {
      exitCode = code;
    }, argv);
    if (argv.length === 0) {
      program.outputHelp();
      return 0;
    }
    refuseInvalidUtf8(argv);
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError && ['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(error.code))
      return 0;
    // The second Ctrl-C. session/tail.ts is not imported at start (it needs the protocol); a run
    // that was forced out has loaded it already.
    if (
      error instanceof SpotctlError &&
      error.code === 'SPOTCTL_JOB_STATE' &&
      error instanceof (await import('../session/tail.ts')).ForcedExit
    )
      return 130;
    const { Output } = await import('../output/output.ts');
    return reportError(error, new Output({ json }), argv);
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
