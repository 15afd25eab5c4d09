/**
 * The agent's side of a launch, the same for every provider: the config it starts with, and
 * reading the line `agent start` prints. Providers differ only in where the config is written
 * and what the agent does when it goes idle (`shutdownAction`).
 */
import { SpotctlError, UserError, parseAgentState, type AgentConfig, type AgentState, type ShutdownAction } from '@spotctl/shared';
import type { RunRecord } from '../runs/run-store.ts';
import { spotAgentConfig } from '../session/checkpoint-options.ts';
import type { LaunchContext } from './provider.ts';
import { lastLine } from '../transport/shell.ts';

export interface AgentConfigOptions {
  /** What the agent does once it is idle (aws: power the instance off). @default { kind: 'exit' } */
  shutdownAction?: ShutdownAction;
}

export function agentConfigFor(record: RunRecord, spec: LaunchContext['spec'], options: AgentConfigOptions = {}): AgentConfig {
  return {
    runId: record.runId,
    workdir: record.layout.workdir,
    stateDir: record.layout.stateDir,
    command: spec.command,
    token: record.token,
    port: 0,
    idleTimeoutMs: spec.idleTimeoutMs,
    maxRuntimeMs: spec.maxRuntimeMs,
    graceMs: spec.graceMs,
    shutdownAction: options.shutdownAction ?? { kind: 'exit' },
    env: spec.env,
    ...(spec.gpus ? { gpus: spec.gpus } : {}),
    ...spotAgentConfig(spec.spot, record.layout),
  };
}

/** The agent config for a run; records where its checkpoints go so `spotctl checkpoints` finds them. */
export function prepareAgentConfig(ctx: LaunchContext, record: RunRecord, options: AgentConfigOptions = {}): AgentConfig {
  const config = agentConfigFor(record, ctx.spec, options);
  if (config.checkpoint) {
    const { dir, target, credentials } = config.checkpoint;
    ctx.store.update(record.runId, {
      checkpoint: { dir: dir ?? 'checkpoints', target, ...(credentials === 'forwarded' ? { credentials } : {}) },
    });
  }
  return config;
}

export function parseStartOutput(result: { code: number; stdout: string; stderr: string }): AgentState {
  if (result.code !== 0) {
    throw new SpotctlError(
      'SPOTCTL_AGENT_START',
      `the agent did not start: ${lastLine(result.stderr || result.stdout) || `exit ${result.code}`}`,
    );
  }
  const parsed = parseAgentState(lastLine(result.stdout));
  if (!parsed.ok)
    throw new SpotctlError(
      'SPOTCTL_AGENT_START',
      `the agent printed an unexpected start line (${parsed.error}): ${lastLine(result.stdout)}`,
    );
  return parsed.value;
}

/** A run whose setup never got as far as the agent: nothing to reconnect to, ever. */
export function notStarted(runId: string): UserError {
  return new UserError('SPOTCTL_AGENT_START', `the setup of run ${runId} did not get as far as starting its agent`, {
    remediation: 'see its state with: spotctl ps; start the job again with: spotctl run ...',
  });
}
