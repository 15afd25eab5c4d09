import { existsSync, mkdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DEFAULT_GRACE_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  UserError,
  exitCodeOf,
  type CredentialsParams,
  type InterruptionReport,
  type JobStatus,
} from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { parseDuration } from '../cli/durations.ts';
import { checkRunOptions } from '../cli/run-options.ts';
import { attributeToProjectFile, type AppliedProjectFile, type ConfigSetting } from '../cli/project-file.ts';
import { addGpuOptions } from '../aws/cli-options.ts';
import { parseGpuRequest } from '../aws/gpus.ts';
import type { Output } from '../output/output.ts';
import { s3CheckpointAccess } from '../providers/aws.ts';
import { configureAwsRunOptions, parseAwsOptions, type AwsCliOptions, type AwsLaunchOptions } from '../providers/aws-options.ts';
import { providerFor } from '../providers/index.ts';
import { localLayout } from '../providers/local.ts';
import { step, type Attempt, type LaunchContext, type LaunchSpec, type Provider, type ProviderSession } from '../providers/provider.ts';
import { newRunId, newToken, type AttemptRecord, type ProviderKind, type RunRecord, type RunStore } from '../runs/run-store.ts';
import { parseCheckpointTo, type CheckpointSpec, type SpotSpec } from '../session/checkpoint-options.ts';
import { parseHostSpec, type SshTarget } from '../transport/ssh.ts';
import { rsyncTo } from '../transport/rsync.ts';
import { finishRun, letAgentGo } from '../session/finish.ts';
import { defaultPullDir, pullAndReport, shellInRun } from '../session/outputs.ts';
import { checkPullPattern } from '../transport/workdir-files.ts';
import { describeReport } from '../session/spot-events.ts';
import { formatDuration } from '../output/output.ts';
import { parseWholeNumber } from '../cli/numbers.ts';
import { DETACHED_EXIT_CODE, Detached, RunSignals } from '../session/run-signals.ts';
import {
  CredentialForwarder,
  DETACHED_CREDENTIALS_S,
  ATTACHED_CREDENTIALS_S,
  hostChainWarning,
  runCredentialMinter,
  type MintCredentials,
} from '../session/credential-forwarder.ts';
import { tailRun } from '../session/tail.ts';
import { HostGone } from '../session/follow.ts';

interface RunOptions extends Record<string, unknown>, AwsCliOptions {
  provider?: string;
  host?: string;
  identity?: string;
  knownHosts?: string;
  sshConfig?: string;
  sync: string[];
  install: boolean;
  idleTimeout?: string;
  maxRuntime?: string;
  grace?: string;
  detach?: boolean;
  json?: boolean;
  env: string[];
  remoteDir?: string;
  checkpointDir?: string;
  checkpointTo?: string;
  checkpointFlushTimeout?: string;
  restoreFrom?: string;
  onRebalance?: string;
  simulateInterruption?: string;
  imdsEndpoint?: string;
  // Project file and setup (issue 12).
  profile?: string;
  showConfig?: boolean;
  setup?: string;
  pull: string[];
  pullTo?: string;
  ssh?: boolean;
  // Managed aws runs (issue 10): recovery from spot interruptions.
  recover: boolean;
  maxAttempts?: string;
  recoveryCooldown?: string;
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** `train.py --lr 3` runs as `python3 train.py --lr 3` (the venv's python once it is activated). */
export function jobArgv(words: string[]): string[] {
  const [first] = words;
  if (first === undefined || first.trim() === '') {
    throw new UserError('SPOTCTL_USAGE', 'no command given', {
      remediation: 'say what to run, e.g.: spotctl run -- python3 train.py',
      exitCode: 2,
    });
  }
  return first.endsWith('.py') ? ['python3', ...words] : words;
}

function fileMustExist(file: string, flag: string): string {
  const abs = path.resolve(file.replace(/^~(?=\/|$)/, os.homedir()));
  if (!existsSync(abs) || !statSync(abs).isFile()) {
    throw new UserError('SPOTCTL_USAGE', `${flag} file not found: ${file}`, {
      remediation: `check the path given to ${flag}`,
      exitCode: 2,
    });
  }
  return abs;
}

/** Where a run goes without --provider or --host: SPOTCTL_PROVIDER, else a new EC2 spot instance. */
export const DEFAULT_PROVIDER: ProviderKind = 'aws';

export function resolveProvider(
  options: Pick<RunOptions, 'provider' | 'host' | 'identity' | 'knownHosts'>,
  env: NodeJS.ProcessEnv = process.env,
): ProviderKind {
  const fromEnv = env.SPOTCTL_PROVIDER?.trim() || undefined;
  if (
    options.provider === undefined &&
    !options.host &&
    !options.identity &&
    fromEnv !== undefined &&
    !['local', 'ssh', 'aws'].includes(fromEnv)
  ) {
    throw new UserError('SPOTCTL_USAGE', `SPOTCTL_PROVIDER: unknown provider '${fromEnv}'`, {
      remediation: 'set SPOTCTL_PROVIDER to local, ssh or aws (or unset it)',
      exitCode: 2,
    });
  }
  const wanted = options.provider ?? (options.host || options.identity ? 'ssh' : (fromEnv ?? DEFAULT_PROVIDER));
  if (wanted === 'aws') {
    if (options.host || options.identity || options.knownHosts) {
      throw new UserError('SPOTCTL_USAGE', '--host, --identity and --known-hosts do not apply to --provider aws', {
        remediation: 'spotctl launches the host and manages its key and host key itself: drop those flags',
        exitCode: 2,
      });
    }
    return wanted;
  }
  if (wanted !== 'local' && wanted !== 'ssh') {
    throw new UserError('SPOTCTL_USAGE', `unknown provider '${wanted}'`, { remediation: 'use --provider local|ssh|aws', exitCode: 2 });
  }
  if (wanted === 'ssh' && !options.host) {
    throw new UserError('SPOTCTL_USAGE', 'the ssh provider needs a host', { remediation: 'add --host user@host[:port]', exitCode: 2 });
  }
  if (wanted === 'local' && options.host) {
    throw new UserError('SPOTCTL_USAGE', '--host cannot be used with --provider local', {
      remediation: 'drop --provider local, or drop --host',
      exitCode: 2,
    });
  }
  return wanted;
}

function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0)
      throw new UserError('SPOTCTL_USAGE', `--env wants NAME=VALUE, got '${pair}'`, {
        remediation: 'e.g. --env WANDB_MODE=offline',
        exitCode: 2,
      });
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

function spotSpec(options: RunOptions, store: RunStore): SpotSpec {
  if (options.onRebalance && !/^(checkpoint|ignore|signal:[A-Z0-9]+)$/.test(options.onRebalance)) {
    throw new UserError('SPOTCTL_USAGE', `--on-rebalance: unknown action '${options.onRebalance}'`, {
      remediation: 'use checkpoint, ignore or signal:NAME (e.g. signal:USR1)',
      exitCode: 2,
    });
  }
  if (options.checkpointTo !== undefined) parseCheckpointTo(options.checkpointTo);
  const simulateMs =
    options.simulateInterruption !== undefined ? parseDuration(options.simulateInterruption, '--simulate-interruption') : undefined;
  let restoreFrom: CheckpointSpec['restoreFrom'];
  if (options.restoreFrom) {
    const source = store.resolve(options.restoreFrom);
    if (!source.checkpoint) {
      throw new UserError('SPOTCTL_USAGE', `run ${source.runId} kept no checkpoints`, {
        remediation: 'restore from a run that ran with checkpointing (see: spotctl checkpoints ls RUN)',
        exitCode: 2,
      });
    }
    restoreFrom = { runId: source.runId, target: source.checkpoint.target };
  }
  // Checkpointing is on when asked for, or when it has a use: a rehearsal, a restore, an explicit folder.
  const wantsCheckpoints =
    options.checkpointTo !== undefined || simulateMs !== undefined || restoreFrom !== undefined || options.checkpointDir !== undefined;
  const flushTimeoutMs =
    options.checkpointFlushTimeout !== undefined ? parseDuration(options.checkpointFlushTimeout, '--checkpoint-flush-timeout') : undefined;
  if (flushTimeoutMs !== undefined && !wantsCheckpoints) {
    throw new UserError('SPOTCTL_USAGE', '--checkpoint-flush-timeout applies only to a run with checkpoints', {
      remediation: 'add --checkpoint-to s3://BUCKET/PREFIX (or --checkpoint-dir), or drop --checkpoint-flush-timeout',
      exitCode: 2,
    });
  }
  return {
    ...(wantsCheckpoints
      ? {
          checkpoint: {
            dir: options.checkpointDir ?? 'checkpoints',
            ...(options.checkpointTo ? { to: options.checkpointTo } : {}),
            ...(restoreFrom ? { restoreFrom } : {}),
            ...(flushTimeoutMs !== undefined ? { exitFlushBudgetMs: flushTimeoutMs } : {}),
            ...(options.pull.length > 0 ? { outputs: options.pull } : {}),
          },
        }
      : {}),
    ...(options.imdsEndpoint ? { imdsEndpoint: options.imdsEndpoint } : {}),
    ...(simulateMs !== undefined ? { simulateInterruptionAfterMs: simulateMs } : {}),
    ...(options.onRebalance ? { onRebalance: options.onRebalance } : {}),
  };
}

export default defineCommand<RunOptions>({
  name: 'run',
  description: 'Run a command on a host with its project synced, stream its output, and clean up',
  examples: [
    'spotctl run train.py --epochs 3',
    'spotctl run --provider local -- python3 train.py',
    'spotctl run --host ubuntu@10.0.0.5 --identity ~/.ssh/id_ed25519 -- python3 train.py',
    'spotctl run --detach --idle-timeout 10m -- ./long-job.sh',
    'spotctl run --provider aws --workers 8 --region us-east-1 train.py',
  ],
  configure: (cmd) => {
    cmd
      .argument('[command...]', 'the command to run (a leading .py file runs with python3)')
      .option('--provider <name>', 'where to run: aws | ssh | local (default: ssh with --host, else $SPOTCTL_PROVIDER, else aws)')
      .option('--host <user@host[:port]>', 'an SSH host to run on (implies --provider ssh)')
      .option('--identity <file>', 'SSH private key for --host')
      .option('--known-hosts <file>', 'known_hosts file to verify the host key against (strict)')
      .option('--ssh-config <file>', 'ssh client config file to use instead of ~/.ssh/config')
      .option('--remote-dir <dir>', 'where runs and the agent live on an SSH host', '~/.spotctl')
      .option('--sync <path>', 'a path to copy to the host (repeatable; default: the current directory)', collect, [])
      .option('--no-install', 'skip installing Python dependencies (requirements.txt, pyproject.toml, uv.lock)')
      .option('--idle-timeout <duration>', 'stop the agent after this long without job, client or heartbeat', '5m')
      .option('--max-runtime <duration>', 'stop the job after this long (0 = no limit)', '0')
      .option('--grace <duration>', 'time between SIGTERM and SIGKILL when the job is stopped', '90s')
      .option('--env <NAME=VALUE>', 'environment for the job (repeatable)', collect, [])
      .option('--checkpoint-dir <dir>', 'folder the job writes checkpoints to, watched and synced (default: checkpoints)')
      .option('--checkpoint-to <s3-url|dir>', 'where checkpoint sets go: s3://BUCKET/PREFIX or an absolute directory on the host')
      .option(
        '--checkpoint-flush-timeout <duration>',
        'how long the last checkpoint upload after the job ends may take, retries included, before the run ends without it (default: 5m)',
      )
      .option('--restore-from <run>', "restore that run's latest committed checkpoint set before the job starts ('last' works)")
      .option('--on-rebalance <action>', 'on a rebalance recommendation: checkpoint | signal:USR1 | ignore', 'checkpoint')
      .option(
        '--simulate-interruption <duration>',
        'rehearse a spot interruption this long after the job starts (emulated metadata service)',
      )
      .option(
        '--imds-endpoint <url>',
        'poll this instance metadata endpoint for interruption notices: a URL (an emulator), or default (169.254.169.254, for EC2 hosts)',
      )
      .option('--detach', 'start the job and return; see it later with spotctl attach')
      .option('--pull <path>', 'copy this workdir path back when the job ends, however it ends (repeatable; sh globs allowed)', collect, [])
      .option('--pull-to <dir>', 'where --pull copies to (default: ./spotctl-out/<run-id>/)')
      .option('--ssh', 'open a shell in the workdir instead of running a command; the run ends when the shell exits')
      .option('--json', 'JSON lines on stdout instead of text');
    addGpuOptions(cmd);
    configureAwsRunOptions(cmd);
    // Project file and setup: one block, so other option additions merge cleanly.
    cmd
      .option('--profile <name>', 'use [profile.NAME] of spotctl.toml on top of its top-level settings')
      .option('--show-config', 'print the merged settings (flags, spotctl.toml, defaults) and where each came from, then exit')
      .option(
        '--setup <command>',
        'a shell command run in the workdir before the job, once per host (again when it or the dependency files change)',
      );
    // Managed aws runs: an interrupted attempt is followed by another, elsewhere.
    cmd
      .option(
        '--no-recover',
        `aws: after a spot interruption, end the run (exit ${INTERRUPTED_EXIT_CODE}) instead of relaunching elsewhere`,
      )
      .option('--max-attempts <n>', 'aws: instances a run may use across interruptions', String(DEFAULT_MAX_ATTEMPTS))
      .option('--recovery-cooldown <duration>', 'aws: how long an interrupted pool (type + AZ) is left out of placement', '30m');
  },
  projectFile: true,
  run: async (words, options, { out, store, testOverrides, given, projectFile, settings }) => {
    if (options.showConfig) {
      showConfig(out, projectFile, settings ?? []);
      return 0;
    }
    // Every option is parsed and checked before anything exists: no record, no sync, no instance.
    let plan: RunPlan;
    try {
      plan = planRun(words, options, store, given);
    } catch (error) {
      throw attributeToProjectFile(error, projectFile);
    }
    const provider = providerFor(plan.provider, { store, out, testOverrides }, plan.aws ? { aws: plan.aws } : undefined);
    using signals = new RunSignals();
    return await runLoop({ plan, provider, signals, store, out });
  },
});

function showConfig(out: Output, projectFile: AppliedProjectFile | undefined, settings: ConfigSetting[]): void {
  const file = projectFile ? path.relative(process.cwd(), projectFile.file) || projectFile.file : undefined;
  const header = file
    ? `# ${file}${projectFile?.profile ? `, profile ${projectFile.profile}` : ''}`
    : '# no spotctl.toml found (here or in a parent directory)';
  const width = Math.max(0, ...settings.map((s) => `${s.key} = ${JSON.stringify(s.value)}`.length));
  const lines = settings.map((s) => `${`${s.key} = ${JSON.stringify(s.value)}`.padEnd(width)}  # ${s.source}`);
  out.data({ file: projectFile?.file ?? null, profile: projectFile?.profile ?? null, settings }, [header, ...lines].join('\n'));
}

/** Everything `spotctl run` was asked to do, parsed and checked; nothing has happened yet. */
export interface RunPlan {
  provider: ProviderKind;
  /** aws only: where and how to launch the instance. */
  aws?: AwsLaunchOptions;
  /** ssh only: the host. */
  target?: SshTarget;
  spec: LaunchSpec;
  /** `--pull`: workdir paths copied back when the job ends, and where to. */
  pull?: { patterns: string[]; to?: string };
  /** `--ssh`: a shell instead of a command. */
  ssh: boolean;
  /** aws was picked by default (no --provider, no SPOTCTL_PROVIDER): a credentials error may suggest local. */
  awsByDefault: boolean;
  /** aws without --no-recover: an interrupted attempt is followed by another. */
  recovery?: { maxAttempts: number; cooldownMs: number };
}

export function planRun(
  words: string[],
  options: RunOptions,
  store: RunStore,
  given: (attributeName: string) => boolean = () => false,
): RunPlan {
  const provider = resolveProvider(options);
  checkRunOptions(options, provider, given);
  const aws: AwsLaunchOptions | undefined =
    provider === 'aws'
      ? parseAwsOptions(
          { ...options, ...(options.sshConfig ? { sshConfig: fileMustExist(options.sshConfig, '--ssh-config') } : {}) },
          given,
        )
      : undefined;
  const { pull, ssh } = outputsPlan(words, options);
  const gpus = parseGpuRequest(options);
  // The agent still supervises a job under a shell (the run's lifetime, the idle watchdog): one that ends at once.
  const command = ssh ? ['true'] : jobArgv(words);
  const target: SshTarget | undefined = options.host
    ? {
        ...parseHostSpec(options.host),
        ...(options.identity ? { identityFile: fileMustExist(options.identity, '--identity') } : {}),
        ...(options.knownHosts ? { knownHostsFile: fileMustExist(options.knownHosts, '--known-hosts') } : {}),
        ...(options.sshConfig ? { configFile: fileMustExist(options.sshConfig, '--ssh-config') } : {}),
      }
    : undefined;
  const syncPaths = (options.sync.length ? options.sync : [process.cwd()]).map((p) => {
    const abs = path.resolve(p);
    if (!existsSync(abs))
      throw new UserError('SPOTCTL_USAGE', `--sync path not found: ${p}`, {
        remediation: 'give an existing file or directory',
        exitCode: 2,
      });
    return abs;
  });
  const spec: LaunchSpec = {
    command,
    syncPaths,
    install: options.install,
    idleTimeoutMs: options.idleTimeout ? parseDuration(options.idleTimeout, '--idle-timeout') : DEFAULT_IDLE_TIMEOUT_MS,
    maxRuntimeMs: options.maxRuntime ? parseDuration(options.maxRuntime, '--max-runtime') : 0,
    graceMs: options.grace ? parseDuration(options.grace, '--grace') : DEFAULT_GRACE_MS,
    detached: options.detach === true,
    env: parseEnv(options.env),
    ...(options.remoteDir ? { remoteDir: options.remoteDir } : {}),
    spot: spotSpec(options, store),
    ...(options.setup !== undefined ? { setup: options.setup } : {}),
    ...(gpus
      ? {
          gpus: {
            count: gpus.count,
            ...(gpus.names ? { names: gpus.names } : {}),
            ...(gpus.minMemoryMiB === undefined ? {} : { minMemoryMiB: gpus.minMemoryMiB }),
          },
        }
      : {}),
  };
  if (spec.idleTimeoutMs < 1000)
    throw new UserError('SPOTCTL_USAGE', '--idle-timeout must be at least 1s', { remediation: 'e.g. --idle-timeout 5m', exitCode: 2 });
  // An S3 restore on EC2 needs an S3 destination of its own (the instance role reads and writes S3 only).
  if (aws) s3CheckpointAccess(spec);
  const maxAttempts = parseWholeNumber(
    options.maxAttempts ?? String(DEFAULT_MAX_ATTEMPTS),
    '--max-attempts',
    'spotctl run --max-attempts 3 train.py',
  );
  const cooldownMs = parseDuration(options.recoveryCooldown ?? '30m', '--recovery-cooldown');
  const recovery = aws && options.recover !== false ? { maxAttempts, cooldownMs } : undefined;
  return {
    provider,
    ...(aws ? { aws } : {}),
    ...(target ? { target } : {}),
    spec,
    ...(pull ? { pull } : {}),
    ssh,
    awsByDefault: options.provider === undefined && !process.env.SPOTCTL_PROVIDER,
    ...(recovery ? { recovery } : {}),
  };
}

/** `--pull`, `--pull-to` and `--ssh`, checked. */
function outputsPlan(words: string[], options: RunOptions): { pull?: RunPlan['pull']; ssh: boolean } {
  for (const pattern of options.pull) checkPullPattern(pattern, '--pull');
  if (options.pullTo !== undefined && options.pull.length === 0) {
    throw new UserError('SPOTCTL_USAGE', '--pull-to needs something to pull', {
      remediation: 'add --pull PATH (e.g. --pull results), or drop --pull-to',
      exitCode: 2,
    });
  }
  if (options.detach && (options.pull.length > 0 || options.ssh)) {
    throw new UserError(
      'SPOTCTL_USAGE',
      `${options.ssh ? '--ssh' : '--pull'} cannot be used with --detach: nothing here waits for the end`,
      {
        remediation: 'drop --detach; for a detached run, fetch files with spotctl pull RUN PATH or open a shell with spotctl ssh RUN',
        exitCode: 2,
      },
    );
  }
  if (options.ssh && words.length > 0) {
    throw new UserError('SPOTCTL_USAGE', '--ssh opens a shell instead of running a command', {
      remediation: `drop the command (${words.join(' ')}) or drop --ssh`,
      exitCode: 2,
    });
  }
  const pull =
    options.pull.length > 0
      ? { patterns: options.pull, ...(options.pullTo !== undefined ? { to: path.resolve(options.pullTo) } : {}) }
      : undefined;
  return { ...(pull ? { pull } : {}), ssh: options.ssh === true };
}

interface RunContext {
  plan: RunPlan;
  provider: Provider;
  signals: RunSignals;
  store: RunStore;
  out: Output;
}

/** Exit code of an aws run a spot interruption ended before its job finished (EX_TEMPFAIL: try again). */
export const INTERRUPTED_EXIT_CODE = 75;
/** @default 10 */
export const DEFAULT_MAX_ATTEMPTS = 10;

/** The job ended because of a real spot interruption (a rehearsal is not one). */
function interruptedBy(status: JobStatus): InterruptionReport | undefined {
  return status.interruption && !status.interruption.simulated ? status.interruption : undefined;
}

/**
 * The run loop on top of the Provider interface: attempt → follow → interrupted? → next attempt
 * (aws) → ended. Each attempt's instance goes when the attempt ends; the run's IAM role once, at
 * the run's end.
 */
async function runLoop(run: RunContext): Promise<number> {
  const { provider, signals, store, out, plan } = run;
  let attemptNo = 1;
  const first = await startAttempt(run, createRecord(run), attemptNo);
  let { record, session } = first;
  // Pushed before anything else: the agent's restore and first upload wait (bounded) for them.
  await using _forwarder = first.credentials
    ? await CredentialForwarder.start({ ...first.credentials, connect: (signal) => session.connect(signal), out })
    : undefined;
  if (plan.spec.detached) {
    await session.close();
    out.result(
      { runId: record.runId, detached: true },
      `job is running detached. Follow it with: spotctl attach ${record.runId}   (or spotctl logs ${record.runId} -f; stop it with spotctl stop ${record.runId})`,
    );
    return 0;
  }
  const exclude: { instanceType: string; az: string; until: number }[] = [];
  let detached = false;
  try {
    if (plan.ssh) return await shellThenEnd(run, record, session);
    for (;;) {
      if (signals.hungUp) {
        detached = true;
        return detach(run, record);
      }
      let status: JobStatus | undefined;
      const current = record;
      const isGone = provider.isGone?.bind(provider);
      try {
        ({ status } = await tailRun({
          store,
          record,
          session,
          out,
          fromSeq: 1,
          signals,
          ...(isGone ? { hostGone: () => isGone(current) } : {}),
        }));
      } catch (error) {
        if (error instanceof Detached) {
          detached = true;
          return detach(run, record);
        }
        // Terminated without notice: EC2 says the instance is gone, so no copy of the job runs on.
        if (!(error instanceof HostGone)) throw error;
      }
      const interruption = status && provider.kind === 'aws' ? interruptedBy(status) : undefined;
      if (status && !interruption) {
        endAttempt(store, record.runId, 'ended', status);
        await pullAtEnd(run, record, session);
        return await finishRun({ store, record, provider, session, out, status });
      }
      // Attempt N ends here: its final set is committed (or known lost), its instance goes.
      if (status) store.update(record.runId, { status });
      endAttempt(store, record.runId, 'interrupted', status);
      const aws = store.load(record.runId).aws!;
      let lastSet: number | null | undefined;
      if (interruption && status) {
        out.warn(describeReport(interruption), { event: 'interruption-report', report: interruption });
        lastSet = interruption.flush?.committedSeq ?? status.checkpoints?.lastCommittedSeq ?? null;
        out.warn(`attempt ${attemptNo} interrupted on ${aws.instanceId} (${aws.instanceType} ${aws.az})`, {
          event: 'attempt-interrupted',
          attempt: attemptNo,
          instanceId: aws.instanceId,
          committedSet: lastSet,
        });
        await letAgentGo(session);
      } else {
        out.warn(
          `attempt ${attemptNo} interrupted: ${aws.instanceId} (${aws.instanceType} ${aws.az}) was terminated without notice (EC2 says it is gone)`,
          { event: 'attempt-interrupted', attempt: attemptNo, instanceId: aws.instanceId, withoutNotice: true },
        );
      }
      await session.close();
      await provider.release(record, `attempt ${attemptNo} was interrupted`);
      const setText =
        lastSet === undefined
          ? 'its newest committed checkpoint set is in the checkpoint target'
          : lastSet !== null
            ? `the newest committed checkpoint set is #${lastSet}`
            : 'no checkpoint set was committed';
      if (!plan.recovery) {
        out.result(
          { runId: record.runId, exitCode: INTERRUPTED_EXIT_CODE, interrupted: true, committedSet: lastSet, status },
          `the job did not finish: a spot interruption ended attempt ${attemptNo} and --no-recover was given; ${setText}. Resume it with: spotctl run --restore-from ${record.runId} … · run ${record.runId}`,
        );
        return INTERRUPTED_EXIT_CODE;
      }
      if (attemptNo >= plan.recovery.maxAttempts) {
        throw new UserError(
          'SPOTCTL_INTERRUPTED',
          `the job did not finish: ${attemptNo} attempts were interrupted (--max-attempts ${plan.recovery.maxAttempts}); ${setText}; nothing of the run is left running`,
          {
            remediation: `resume it from there: spotctl run --restore-from ${record.runId} …  (or allow more with --max-attempts)`,
            exitCode: INTERRUPTED_EXIT_CODE,
          },
        );
      }
      const now = Date.now();
      exclude.push({ instanceType: aws.instanceType, az: aws.az, until: now + plan.recovery.cooldownMs });
      attemptNo++;
      const restoring =
        lastSet === undefined
          ? 'the newest committed checkpoint set'
          : lastSet !== null
            ? `checkpoint set #${lastSet}`
            : 'no set (none committed): the job starts over';
      out.info(
        `↻ attempt ${attemptNo}: relaunching (${aws.instanceType} ${aws.az} excluded for ${formatDuration(plan.recovery.cooldownMs)}); restoring ${restoring}`,
        { event: 'attempt-relaunch', attempt: attemptNo, excluded: { instanceType: aws.instanceType, az: aws.az } },
      );
      signals.settingUp();
      ({ record, session } = await startAttempt(
        run,
        store.load(record.runId),
        attemptNo,
        exclude.filter((x) => x.until > now),
      ));
    }
  } finally {
    // However the run ended here (done, failed, Ctrl-C, attempts exhausted), what it ran on goes:
    // aws terminates the instance, then deletes the run's IAM role. A detached job keeps both.
    await session.close();
    if (!detached) {
      await provider.release(record);
      await provider.releaseRun(record);
    }
  }
}

/**
 * `--pull`: after the job ended (success, failure, Ctrl-C, max-runtime) and before the agent is let
 * go and the host released. A failed pull is a warning: the job's own exit code still stands.
 */
async function pullAtEnd({ plan, signals, out }: RunContext, record: RunRecord, session: ProviderSession): Promise<void> {
  if (!plan.pull) return;
  const abort = new AbortController();
  // Ctrl-C now cancels the copy; the release after it still runs.
  signals.following(() => abort.abort(new UserError('SPOTCTL_USAGE', 'cancelled', { exitCode: 130 })));
  try {
    await pullAndReport({
      session,
      record,
      patterns: plan.pull.patterns,
      dir: plan.pull.to ?? defaultPullDir(record.runId),
      out,
      signal: abort.signal,
    });
  } catch (error) {
    out.warn(`could not pull ${plan.pull.patterns.join(' ')}: ${error instanceof Error ? error.message : String(error)}`, {
      event: 'pull-failed',
    });
  } finally {
    signals.following(undefined);
  }
}

/** `--ssh`: the shell is the run; when it exits, outputs come back and the agent and host go. */
async function shellThenEnd(run: RunContext, record: RunRecord, session: ProviderSession): Promise<number> {
  const { signals, out } = run;
  // Ctrl-C belongs to the shell, not to the run.
  signals.following(() => undefined);
  const code = await shellInRun({ session, record, commandLine: undefined, out, tty: process.stdin.isTTY === true });
  await pullAtEnd(run, record, session);
  await letAgentGo(session);
  out.result({ runId: record.runId, exitCode: code, shell: true }, `shell exited with code ${code} · run ${record.runId}`);
  return code;
}

/** Closes the current attempt's entry in the run's attempts list (aws). */
function endAttempt(store: RunStore, runId: string, outcome: 'interrupted' | 'ended', status: JobStatus | undefined): void {
  const current = store.load(runId);
  const attempts = current.attempts;
  const last = attempts?.at(-1);
  if (!attempts || !last || last.endedAt !== undefined) return;
  const committedSet = status?.interruption?.flush?.committedSeq ?? status?.checkpoints?.lastCommittedSeq ?? null;
  store.update(runId, { attempts: [...attempts.slice(0, -1), { ...last, endedAt: Date.now(), outcome, committedSet }] });
}

function createRecord({ plan, provider, store, out }: RunContext): RunRecord {
  const runId = newRunId();
  const record: RunRecord = {
    runId,
    provider: plan.provider,
    createdAt: Date.now(),
    command: plan.spec.command,
    syncPaths: plan.spec.syncPaths,
    ...(plan.target ? { target: plan.target } : {}),
    layout: localLayout(store.runDir(runId)),
    token: newToken(),
    graceMs: plan.spec.graceMs,
    ...(plan.spec.maxRuntimeMs > 0 ? { maxRuntimeMs: plan.spec.maxRuntimeMs } : {}),
    detached: plan.spec.detached,
  };
  store.save(record);
  out.info(`run ${runId}: ${plan.ssh ? 'a shell' : plan.spec.command.join(' ')} (${provider.where(record)})`, {
    runId,
    provider: plan.provider,
  });
  return record;
}

/**
 * One attempt, launched through the provider (which undoes its own partial work when it fails).
 * A setup that fails or is cancelled is recorded as `failed` (with the reason) or `cancelled`.
 */
async function startAttempt(
  run: RunContext,
  record: RunRecord,
  attempt: number,
  exclude: LaunchContext['exclude'] = [],
): Promise<Attempt & { credentials?: RunCredentials }> {
  const { plan, provider, signals, store, out } = run;
  try {
    // Every attempt runs the code as it was when the run started, never the tree as edited since.
    if (attempt === 1 && plan.recovery)
      record = await step(out, 'snapshot', 'kept a copy of the code for every attempt', () =>
        snapshotCode(store, record, plan.spec.syncPaths, signals.setupSignal),
      );
    const credentials = attempt === 1 ? await mintCredentials(run, record.runId) : undefined;
    const launched = await provider.launch({
      store,
      out,
      record,
      spec: attemptSpec(plan.spec, record, attempt, provider.kind),
      signal: signals.setupSignal,
      exclude,
    });
    const aws = launched.record.aws;
    if (provider.kind === 'aws' && aws) {
      const entry: AttemptRecord = {
        attempt,
        instanceId: aws.instanceId,
        region: aws.region,
        az: aws.az,
        instanceType: aws.instanceType,
        market: aws.market,
        pricePerHour: aws.pricePerHour,
        launchedAt: aws.launchedAt,
      };
      const updated = store.update(record.runId, { attempts: [...(store.load(record.runId).attempts ?? []), entry] });
      out.info(`attempt ${attempt} started on ${aws.instanceType} ${aws.az} at $${aws.pricePerHour.toFixed(4)}/h (${aws.instanceId})`, {
        event: 'attempt-started',
        ...entry,
      });
      return { record: updated, session: launched.session };
    }
    return { ...launched, ...(credentials ? { credentials } : {}) };
  } catch (error) {
    const cancelled = signals.setupSignal.aborted;
    const reason: unknown = cancelled ? signals.setupSignal.reason : error;
    store.update(record.runId, {
      setup: {
        state: cancelled ? 'cancelled' : 'failed',
        reason: reason instanceof Error ? reason.message : String(reason),
        endedAt: Date.now(),
      },
    });
    // If the agent got as far as starting the job, it must not run on unobserved.
    if (cancelled) await stopStartedJob(provider, store.load(record.runId));
    await provider.releaseRun(store.load(record.runId));
    if (cancelled) throw reason;
    // aws by default, with no credentials: say how to run without an AWS account too.
    if (error instanceof UserError && error.code === 'SPOTCTL_AWS_CREDENTIALS' && plan.awsByDefault) {
      throw new UserError(error.code, `${error.message} (aws is the default provider)`, {
        remediation: `${error.remediation ? `${error.remediation}; ` : ''}or run on this machine: spotctl run --provider local …`,
        cause: error,
      });
    }
    throw error;
  }
}

interface RunCredentials {
  first: CredentialsParams;
  mint: MintCredentials;
}

/**
 * S3 on an SSH host or here: run-scoped credentials minted before the launch, so the agent's config
 * can say to expect them (an aws instance has its own role instead). When STS refuses, one warning
 * and the host's own chain.
 */
async function mintCredentials({ plan, provider, signals, out }: RunContext, runId: string): Promise<RunCredentials | undefined> {
  const { spec } = plan;
  const mint = provider.kind === 'aws' ? undefined : runCredentialMinter(runId, spec.spot);
  if (!mint || !spec.spot.checkpoint) return undefined;
  try {
    const first = await mint(spec.detached ? DETACHED_CREDENTIALS_S : ATTACHED_CREDENTIALS_S, signals.setupSignal);
    spec.spot.checkpoint.credentials = 'forwarded';
    if (spec.detached) {
      out.info(
        `S3 checkpoints: forwarding credentials scoped to this run, valid until ${new Date(first.expiresAt).toISOString()}; ` +
          "only `spotctl attach` renews them; once they expire the agent falls back to the host's own AWS credentials",
      );
    }
    return { first, mint };
  } catch (error) {
    if (signals.setupSignal.aborted) throw error;
    out.warn(hostChainWarning((error as Error).message));
    return undefined;
  }
}

/**
 * What attempt N runs: the same job, told its attempt (SPOTCTL_ATTEMPT); from attempt 2 on it
 * restores the run's own newest committed set, whichever attempt wrote it.
 */
function attemptSpec(spec: LaunchSpec, record: RunRecord, attempt: number, kind: ProviderKind): LaunchSpec {
  if (kind !== 'aws') return spec;
  const env = { ...spec.env, SPOTCTL_ATTEMPT: String(attempt) };
  const syncPaths = record.codeSnapshot ? [record.codeSnapshot] : spec.syncPaths;
  const checkpoint = spec.spot.checkpoint;
  if (attempt === 1 || !checkpoint || !record.checkpoint) return { ...spec, env, syncPaths };
  return {
    ...spec,
    env,
    syncPaths,
    spot: { ...spec.spot, checkpoint: { ...checkpoint, restoreFrom: { runId: record.runId, target: record.checkpoint.target } } },
  };
}

/**
 * Copies what the run syncs, with the same rules (ignored files stay out), into the run's folder
 * here: the paths land in it as they land in the workdir, so syncing the copy is the same sync.
 */
async function snapshotCode(store: RunStore, record: RunRecord, syncPaths: string[], signal: AbortSignal): Promise<RunRecord> {
  const dir = path.join(store.runDir(record.runId), 'code');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  await rsyncTo(null, syncPaths, dir, { signal });
  return store.update(record.runId, { codeSnapshot: dir });
}

async function stopStartedJob(provider: Provider, record: RunRecord): Promise<void> {
  if (!record.agent) return;
  await using session = provider.locate(record).session;
  try {
    const connection = await session.connect(AbortSignal.timeout(10_000));
    await connection.request('stop', { force: true }, { timeoutMs: 5000 }).catch(() => undefined);
    await connection.close();
  } catch {
    // The agent is unreachable: its idle watchdog will end it.
  }
}

/** The terminal went away (SIGHUP): nothing is told to stop; the job runs on and `attach` resumes it. */
function detach({ store, out }: RunContext, record: RunRecord): number {
  store.update(record.runId, { detached: true });
  out.info(`detached: the terminal went away; the job keeps running. Follow it with: spotctl attach ${record.runId}`, {
    event: 'detached',
    runId: record.runId,
  });
  return DETACHED_EXIT_CODE;
}

export { exitCodeOf };
