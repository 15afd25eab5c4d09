import { existsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_GRACE_MS, DEFAULT_IDLE_TIMEOUT_MS, UserError, exitCodeOf } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { parseDuration } from '../cli/durations.ts';
import { checkRunOptions } from '../cli/run-options.ts';
import { addGpuOptions } from '../aws/cli-options.ts';
import { parseGpuRequest } from '../aws/gpus.ts';
import type { Output } from '../output/output.ts';
import { s3CheckpointAccess } from '../providers/aws.ts';
import { configureAwsRunOptions, parseAwsOptions, type AwsCliOptions, type AwsLaunchOptions } from '../providers/aws-options.ts';
import { providerFor } from '../providers/index.ts';
import { localLayout } from '../providers/local.ts';
import type { Attempt, LaunchSpec, Provider } from '../providers/provider.ts';
import { newRunId, newToken, type ProviderKind, type RunRecord, type RunStore } from '../runs/run-store.ts';
import { parseCheckpointTo, type CheckpointSpec, type SpotSpec } from '../session/checkpoint-options.ts';
import { parseHostSpec, type SshTarget } from '../transport/ssh.ts';
import { finishRun } from '../session/finish.ts';
import { DETACHED_EXIT_CODE, Detached, RunSignals } from '../session/run-signals.ts';
import { tailRun } from '../session/tail.ts';

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
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** `train.py --lr 3` runs as `python3 train.py --lr 3` (the venv's python once it is activated). */
export function jobArgv(words: string[]): string[] {
  const [first] = words;
  if (first === undefined || first.trim() === '') {
    throw new UserError('SPOTCTL_USAGE', 'no command given', { remediation: 'say what to run, e.g.: spotctl run -- python3 train.py', exitCode: 2 });
  }
  return first.endsWith('.py') ? ['python3', ...words] : words;
}

function fileMustExist(file: string, flag: string): string {
  const abs = path.resolve(file.replace(/^~(?=\/|$)/, os.homedir()));
  if (!existsSync(abs) || !statSync(abs).isFile()) {
    throw new UserError('SPOTCTL_USAGE', `${flag} file not found: ${file}`, { remediation: `check the path given to ${flag}`, exitCode: 2 });
  }
  return abs;
}

/** Where a run goes without --provider or --host: SPOTCTL_PROVIDER, else a new EC2 spot instance. */
export const DEFAULT_PROVIDER: ProviderKind = 'aws';

export function resolveProvider(options: Pick<RunOptions, 'provider' | 'host' | 'identity' | 'knownHosts'>, env: NodeJS.ProcessEnv = process.env): ProviderKind {
  const fromEnv = env.SPOTCTL_PROVIDER?.trim() || undefined;
  if (options.provider === undefined && !options.host && !options.identity && fromEnv !== undefined && !['local', 'ssh', 'aws'].includes(fromEnv)) {
    throw new UserError('SPOTCTL_USAGE', `SPOTCTL_PROVIDER: unknown provider '${fromEnv}'`, { remediation: 'set SPOTCTL_PROVIDER to local, ssh or aws (or unset it)', exitCode: 2 });
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
    throw new UserError('SPOTCTL_USAGE', '--host cannot be used with --provider local', { remediation: 'drop --provider local, or drop --host', exitCode: 2 });
  }
  return wanted;
}

function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UserError('SPOTCTL_USAGE', `--env wants NAME=VALUE, got '${pair}'`, { remediation: 'e.g. --env WANDB_MODE=offline', exitCode: 2 });
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

function spotSpec(options: RunOptions, store: RunStore): SpotSpec {
  if (options.onRebalance && !/^(checkpoint|ignore|signal:[A-Z0-9]+)$/.test(options.onRebalance)) {
    throw new UserError('SPOTCTL_USAGE', `--on-rebalance: unknown action '${options.onRebalance}'`, { remediation: 'use checkpoint, ignore or signal:NAME (e.g. signal:USR1)', exitCode: 2 });
  }
  if (options.checkpointTo !== undefined) parseCheckpointTo(options.checkpointTo);
  const simulateMs = options.simulateInterruption !== undefined ? parseDuration(options.simulateInterruption, '--simulate-interruption') : undefined;
  let restoreFrom: CheckpointSpec['restoreFrom'];
  if (options.restoreFrom) {
    const source = store.resolve(options.restoreFrom);
    if (!source.checkpoint) {
      throw new UserError('SPOTCTL_USAGE', `run ${source.runId} kept no checkpoints`, { remediation: 'restore from a run that ran with checkpointing (see: spotctl checkpoints ls RUN)', exitCode: 2 });
    }
    restoreFrom = { runId: source.runId, target: source.checkpoint.target };
  }
  // Checkpointing is on when asked for, or when it has a use: a rehearsal, a restore, an explicit folder.
  const wantsCheckpoints = options.checkpointTo !== undefined || simulateMs !== undefined || restoreFrom !== undefined || options.checkpointDir !== undefined;
  const flushTimeoutMs = options.checkpointFlushTimeout !== undefined ? parseDuration(options.checkpointFlushTimeout, '--checkpoint-flush-timeout') : undefined;
  if (flushTimeoutMs !== undefined && !wantsCheckpoints) {
    throw new UserError('SPOTCTL_USAGE', '--checkpoint-flush-timeout applies only to a run with checkpoints', { remediation: 'add --checkpoint-to s3://BUCKET/PREFIX (or --checkpoint-dir), or drop --checkpoint-flush-timeout', exitCode: 2 });
  }
  return {
    ...(wantsCheckpoints
      ? {
          checkpoint: {
            dir: options.checkpointDir ?? 'checkpoints',
            ...(options.checkpointTo ? { to: options.checkpointTo } : {}),
            ...(restoreFrom ? { restoreFrom } : {}),
            ...(flushTimeoutMs !== undefined ? { exitFlushBudgetMs: flushTimeoutMs } : {}),
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
      .option('--checkpoint-flush-timeout <duration>', 'how long the last checkpoint upload after the job ends may take, retries included, before the run ends without it (default: 5m)')
      .option('--restore-from <run>', "restore that run's latest committed checkpoint set before the job starts ('last' works)")
      .option('--on-rebalance <action>', 'on a rebalance recommendation: checkpoint | signal:USR1 | ignore', 'checkpoint')
      .option('--simulate-interruption <duration>', 'rehearse a spot interruption this long after the job starts (emulated metadata service)')
      .option('--imds-endpoint <url>', 'poll this instance metadata endpoint for interruption notices: a URL (an emulator), or default (169.254.169.254, for EC2 hosts)')
      .option('--detach', 'start the job and return; see it later with spotctl attach')
      .option('--json', 'JSON lines on stdout instead of text');
    addGpuOptions(cmd);
    configureAwsRunOptions(cmd);
  },
  run: async (words, options, { out, store, testOverrides, given }) => {
    // Every option is parsed and checked before anything exists: no record, no sync, no instance.
    const plan = planRun(words, options, store, given);
    const provider = providerFor(plan.provider, { store, out, testOverrides }, plan.aws ? { aws: plan.aws } : undefined);
    using signals = new RunSignals();
    return await runLoop({ plan, provider, signals, store, out });
  },
});

/** Everything `spotctl run` was asked to do, parsed and checked; nothing has happened yet. */
export interface RunPlan {
  provider: ProviderKind;
  /** aws only: where and how to launch the instance. */
  aws?: AwsLaunchOptions;
  /** ssh only: the host. */
  target?: SshTarget;
  spec: LaunchSpec;
  /** aws was picked by default (no --provider, no SPOTCTL_PROVIDER): a credentials error may suggest local. */
  awsByDefault: boolean;
}

export function planRun(words: string[], options: RunOptions, store: RunStore, given: (attributeName: string) => boolean = () => false): RunPlan {
  const provider = resolveProvider(options);
  checkRunOptions(options, provider, given);
  const aws: AwsLaunchOptions | undefined =
    provider === 'aws' ? parseAwsOptions({ ...options, ...(options.sshConfig ? { sshConfig: fileMustExist(options.sshConfig, '--ssh-config') } : {}) }, given) : undefined;
  const gpus = parseGpuRequest(options);
  const command = jobArgv(words);
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
    if (!existsSync(abs)) throw new UserError('SPOTCTL_USAGE', `--sync path not found: ${p}`, { remediation: 'give an existing file or directory', exitCode: 2 });
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
    ...(gpus ? { gpus: { count: gpus.count, ...(gpus.names ? { names: gpus.names } : {}), ...(gpus.minMemoryMiB === undefined ? {} : { minMemoryMiB: gpus.minMemoryMiB }) } } : {}),
  };
  if (spec.idleTimeoutMs < 1000) throw new UserError('SPOTCTL_USAGE', '--idle-timeout must be at least 1s', { remediation: 'e.g. --idle-timeout 5m', exitCode: 2 });
  // An S3 restore on EC2 needs an S3 destination of its own (the instance role reads and writes S3 only).
  if (aws) s3CheckpointAccess(spec);
  return { provider, ...(aws ? { aws } : {}), ...(target ? { target } : {}), spec, awsByDefault: options.provider === undefined && !process.env.SPOTCTL_PROVIDER };
}

interface RunContext {
  plan: RunPlan;
  provider: Provider;
  signals: RunSignals;
  store: RunStore;
  out: Output;
}

/**
 * The run loop on top of the Provider interface: attempt → follow → ended. Spot recovery (an
 * interrupted attempt → the next attempt) belongs between follow and ended.
 */
async function runLoop(run: RunContext): Promise<number> {
  const { provider, signals, store, out } = run;
  const { record, session } = await startAttempt(run, createRecord(run));
  await using _session = session;
  if (run.plan.spec.detached) {
    out.result({ runId: record.runId, detached: true }, `job is running detached. Follow it with: spotctl attach ${record.runId}   (or spotctl logs ${record.runId} -f; stop it with spotctl stop ${record.runId})`);
    return 0;
  }
  if (signals.hungUp) return detach(run, record);
  let detached = false;
  try {
    const { status } = await tailRun({ store, record, session, out, fromSeq: 1, signals });
    return await finishRun({ store, record, provider, session, out, status });
  } catch (error) {
    if (!(error instanceof Detached)) throw error;
    detached = true;
    return detach(run, record);
  } finally {
    // However the run ended here (done, failed, Ctrl-C), what it ran on goes: aws terminates the
    // instance, then deletes the run's IAM role. A detached job keeps both; its agent ends them.
    if (!detached) {
      await provider.release(record);
      await provider.releaseRun(record);
    }
  }
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
    detached: plan.spec.detached,
  };
  store.save(record);
  out.info(`run ${runId}: ${plan.spec.command.join(' ')} (${provider.where(record)})`, { runId, provider: plan.provider });
  return record;
}

/**
 * One attempt, launched through the provider (which undoes its own partial work when it fails).
 * A setup that fails or is cancelled is recorded as `failed` (with the reason) or `cancelled`.
 */
async function startAttempt(run: RunContext, record: RunRecord): Promise<Attempt> {
  const { plan, provider, signals, store, out } = run;
  try {
    return await provider.launch({ store, out, record, spec: plan.spec, signal: signals.setupSignal });
  } catch (error) {
    const cancelled = signals.setupSignal.aborted;
    const reason: unknown = cancelled ? signals.setupSignal.reason : error;
    store.update(record.runId, { setup: { state: cancelled ? 'cancelled' : 'failed', reason: reason instanceof Error ? reason.message : String(reason), endedAt: Date.now() } });
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
  out.info(`detached: the terminal went away; the job keeps running. Follow it with: spotctl attach ${record.runId}`, { event: 'detached', runId: record.runId });
  return DETACHED_EXIT_CODE;
}

export { exitCodeOf };
