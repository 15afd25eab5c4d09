import type { CommandDefinition } from '../cli/define-command.ts';

/**
 * What `spotctl --help` lists about a command without loading it: its name, the arguments its
 * line shows (`spotctl ps [options]`) and its description. The command's file (its options,
 * examples and `run`) is imported only when that command is the one being run or asked about,
 * so the CLI's start does not compile the protocol schemas, ws or the AWS code. A test keeps
 * these in step with the command files (test/cli-registry.test.ts).
 */
export interface CommandEntry {
  name: string;
  /** The arguments as commander prints them after `[options]` in the command list ('' for none). */
  args: string;
  description: string;
  load: () => Promise<CommandDefinition>;
  /** False for a command without options (its line has no `[options]`). @default true */
  options?: boolean;
}

/** A command's line in the command list, as commander would print it once the command is loaded. */
export function commandTerm(entry: CommandEntry): string {
  return `${entry.name}${entry.options === false ? '' : ' [options]'}${entry.args ? ` ${entry.args}` : ''}`;
}

const entry = (
  name: string,
  args: string,
  description: string,
  load: () => Promise<{ default: unknown }>,
  options = true,
): CommandEntry => ({
  name,
  args,
  description,
  load: async () => (await load()).default as CommandDefinition,
  ...(options ? {} : { options: false }),
});

/** Every command, in the order --help lists them. */
export const commands: CommandEntry[] = [
  entry(
    'run',
    '[command...]',
    'Run a command on a host with its project synced, stream its output, and clean up',
    () => import('./run.ts'),
  ),
  entry(
    'attach',
    '<run>',
    'Re-attach to a run: follow its output from where this machine left off, exit with its code',
    () => import('./attach.ts'),
  ),
  entry(
    'logs',
    '<run>',
    "Print a run's output (stdout lines to stdout, stderr lines to stderr), live or after its host is gone",
    () => import('./logs.ts'),
  ),
  entry(
    'ps',
    '',
    'List runs started from this machine, newest first, with their state (--cloud: also every live spotctl run in AWS, from its tags)',
    () => import('./ps.ts'),
  ),
  entry('stop', '<run>', 'Stop a run: SIGTERM to the job, SIGKILL after the grace; then let the agent go', () => import('./stop.ts')),
  entry(
    'checkpoints',
    '<action> <run> [dir]',
    "List a run's committed checkpoint sets (ls), or download one with its checksums verified (pull)",
    () => import('./checkpoints.ts'),
  ),
  entry(
    'prices',
    '',
    'Show the spot price in effect now for the instance types that fit, per region and Availability Zone, cheapest first',
    () => import('./prices.ts'),
  ),
  entry(
    'gpus',
    '',
    'List the GPU instance types offered as spot, with GPU model, count and memory, vCPUs, and the cheapest spot price now',
    () => import('./gpus.ts'),
  ),
  entry(
    'ls',
    '',
    'List the EC2 instances spotctl launched (tagged spotctl:managed) in the candidate regions, with age, $/h and spend so far',
    () => import('./ls.ts'),
  ),
  entry(
    'teardown',
    '[run]',
    "Terminate a run's EC2 instance (found by its spotctl:run-id tag, so it works from any machine), or every spotctl run instance with --all",
    () => import('./teardown.ts'),
  ),
  entry(
    'gc',
    '',
    'Terminate spotctl instances past their spotctl:expires-at and delete spotctl key pairs, security groups and run roles nothing uses; never touches an untagged resource',
    () => import('./gc.ts'),
  ),
  entry(
    'pull',
    '<run> <path...>',
    "Copy files from a run's workdir to this machine (any time the host is up; checksums verified)",
    () => import('./pull.ts'),
  ),
  entry(
    'ssh',
    '<run> [command...]',
    "Open a shell (or run one command) on a run's host, in its workdir, with the project's venv active",
    () => import('./ssh.ts'),
    false,
  ),
  entry(
    'prune',
    '',
    "Remove old run folders here and on reachable SSH hosts (never a live run's), and cached venvs no run used lately",
    () => import('./prune.ts'),
  ),
  entry('init', '', 'Write a commented spotctl.toml for the project in the current directory', () => import('./init.ts')),
  entry(
    'ami',
    '<action>',
    'Bake a spotctl image (build) from stock Ubuntu 24.04 so runs skip the boot-time install, or list the baked ones (ls)',
    () => import('./ami.ts'),
  ),
];
