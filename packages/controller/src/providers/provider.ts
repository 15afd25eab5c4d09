/**
 * A provider puts the agent somewhere (this machine, an SSH host, an EC2 instance it launches)
 * and gives the controller a way back to it. Commands see only this interface; which provider a
 * run uses is chosen once (providers/index.ts).
 *
 * Lifetimes: an *attempt* is one place the job runs (aws: one instance). `launch` makes one and,
 * when it fails, undoes its own partial work before the error surfaces. `release` ends what an
 * attempt holds once its agent was let go; `releaseRun` ends what the run holds across attempts
 * (aws: the run's IAM role), so a later recovery can launch again without losing them.
 */
import type { GpuRequirement, JobStatus } from '@spotctl/shared';
import type { SpotSpec } from '../session/checkpoint-options.ts';
import type { Output, Progress } from '../output/output.ts';
import type { ProviderKind, RunRecord, RunStore } from '../runs/run-store.ts';
import type { AgentConnection } from '../transport/agent-client.ts';
import type { PullOptions, PullResult } from '../transport/workdir-files.ts';

/** An open way to a run's agent and files. Closing it drops the transport, never the job. */
export interface ProviderSession extends AsyncDisposable {
  /** Opens a websocket to the agent, repairing the transport first when it broke. */
  connect(signal?: AbortSignal): Promise<AgentConnection>;
  /** The agent's status.json, or undefined when it cannot be read. */
  readStatus(signal?: AbortSignal): Promise<JobStatus | undefined>;
  /** Streams the stored log (for when the agent is gone) in chunks, without holding it whole. */
  streamLog(onChunk: (chunk: Buffer) => void, signal?: AbortSignal): Promise<void>;
  /** Copies what `patterns` (workdir-relative, sh globs) match in the run's workdir into `localDir`. */
  pull(patterns: string[], localDir: string, options?: PullOptions): Promise<PullResult>;
  /**
   * Runs `commandLine` (one shell command line, as ssh takes it) or an interactive shell in the
   * run's workdir with its venv active, on this terminal; resolves with its exit code.
   */
  shell(commandLine: string | undefined, options: { tty: boolean; signal?: AbortSignal }): Promise<number>;
  close(): Promise<void>;
}

export interface LaunchSpec {
  command: string[];
  syncPaths: string[];
  install: boolean;
  idleTimeoutMs: number;
  maxRuntimeMs: number;
  graceMs: number;
  detached: boolean;
  env: Record<string, string>;
  /** Base directory on an SSH host (`~/…` is home-relative). @default '~/.spotctl' */
  remoteDir?: string;
  /** Checkpoints, interruption polling and rehearsal. */
  spot: SpotSpec;
  /** A shell command run in the workdir before the dependencies and the job, once per host (providers/setup.ts). */
  setup?: string;
  /** GPUs the job needs (`--gpus`, `--gpu-memory`): the agent checks them before the job starts. */
  gpus?: GpuRequirement;
}

export interface LaunchContext {
  store: RunStore;
  out: Output;
  record: RunRecord;
  spec: LaunchSpec;
  signal?: AbortSignal;
  /** aws recovery: pools (type + AZ) an earlier attempt was interrupted in, left out of placement. */
  exclude?: readonly { instanceType: string; az: string }[];
}

/** One place the job runs: the run's record as the launch left it, and a way to its agent. */
export interface Attempt {
  record: RunRecord;
  session: ProviderSession;
}

export interface Provider {
  readonly kind: ProviderKind;
  /** For the run's first line: `local`, `on HOST`, `on a new EC2 instance`. */
  where(record: RunRecord): string;
  /**
   * Puts an agent somewhere, syncs the project and starts the job. Every way out other than
   * success first undoes what this attempt created (aws: terminates the instance it launched).
   */
  launch(ctx: LaunchContext): Promise<Attempt>;
  /** The attempt an existing run is on (attach, logs, stop, ps); connects lazily. */
  locate(record: RunRecord): Attempt;
  /**
   * Ends what the run's current attempt still holds, once its agent was let go (or never came
   * up). local, ssh: nothing (the agent exits by itself). aws: terminates the instance and says
   * what it cost. Idempotent; never throws; false when something may still be billing.
   */
  release(record: RunRecord, reason?: string): Promise<boolean>;
  /**
   * True only when the attempt's machine is known to be gone (aws: EC2 reports the instance
   * shutting-down or terminated); false when it may still run the job, or nobody can tell.
   * Optional: local and ssh hosts are not ours to declare gone.
   */
  isGone?(record: RunRecord, signal?: AbortSignal): Promise<boolean>;
  /** Ends what the run holds across attempts (aws: deletes the run's IAM role). Never throws. */
  releaseRun(record: RunRecord): Promise<void>;
}

/** What a step shows while it is under way (its past-tense message is printed when it ends). */
const STEP_DOING: Record<string, string> = {
  credentials: 'checking AWS credentials',
  place: 'pricing the fitting instance types',
  infra: 'checking the SSH key, address and image',
  iam: "creating the run's IAM role",
  launch: 'launching the instance',
  boot: 'waiting for the instance to be running',
  ssh: 'waiting for SSH to answer (then for cloud-init to finish)',
  connect: 'connecting over SSH',
  'install-agent': 'installing the agent',
  sync: 'syncing the project',
  deps: 'installing Python dependencies',
  agent: 'starting the agent',
  bake: "installing the image's software",
  image: 'waiting for the image',
};

/**
 * Runs `fn` as a named step and reports its duration. While it runs, a progress line (a TTY) or
 * `step-progress` events (--json) say what it waits for; `fn` may refine that through `progress`.
 */
export async function step<T>(out: Output, name: string, message: string, fn: (progress: Progress) => Promise<T>): Promise<T> {
  const started = performance.now();
  let value: T;
  {
    using progress = out.progress(name, STEP_DOING[name] ?? name);
    value = await fn(progress);
  }
  out.step(name, message, performance.now() - started);
  return value;
}
