/**
 * A provider puts the agent somewhere (this machine, an SSH host, later an EC2 instance) and
 * gives the controller a way back to it.
 */
import type { JobStatus } from '@spotctl/shared';
import type { SpotSpec } from '../session/checkpoint-options.ts';
import type { Output } from '../output/output.ts';
import type { RunRecord, RunStore } from '../runs/run-store.ts';
import type { AgentConnection } from '../transport/agent-client.ts';

/** An open way to a run's agent and files. Closing it drops the transport, never the job. */
export interface ProviderSession extends AsyncDisposable {
  /** Opens a websocket to the agent, repairing the transport first when it broke. */
  connect(signal?: AbortSignal): Promise<AgentConnection>;
  /** The agent's status.json, or undefined when it cannot be read. */
  readStatus(signal?: AbortSignal): Promise<JobStatus | undefined>;
  /** Streams the stored log (for when the agent is gone) in chunks, without holding it whole. */
  streamLog(onChunk: (chunk: Buffer) => void, signal?: AbortSignal): Promise<void>;
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
}

export interface LaunchContext {
  store: RunStore;
  out: Output;
  record: RunRecord;
  spec: LaunchSpec;
  signal?: AbortSignal;
}

/** Runs `fn` as a named step and reports its duration. */
export async function step<T>(out: Output, name: string, message: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const value = await fn();
  out.step(name, message, performance.now() - started);
  return value;
}
