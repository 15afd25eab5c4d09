/** Loads the agent's config file, applies the environment overrides and the defaults. */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DEFAULT_GRACE_MS,
  DEFAULT_HEARTBEAT_PATH,
  DEFAULT_IDLE_TIMEOUT_MS,
  UserError,
  parseAgentConfig,
  type AgentConfig,
  type CheckpointConfig,
  type GpuRequirement,
  type ImdsConfig,
  type ShutdownAction,
  type SimulateConfig,
} from '@spotctl/shared';

/**
 * A checkpoint file counts as written after this long unchanged. Short, because jobs that save
 * with write-then-rename every second or so must still get each version out.
 */
export const DEFAULT_CHECKPOINT_SETTLE_MS = 500;
/** How long the final checkpoint flush after the job ended may take (retries included). */
export const DEFAULT_EXIT_FLUSH_BUDGET_MS = 5 * 60_000;

/** Levels pino accepts; checked here so a typo is a config error, not a crash inside pino. */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The config with every default applied and every path absolute. */
export interface ResolvedAgentConfig {
  runId: string;
  workdir: string;
  stateDir: string;
  command: string[];
  token: string;
  host: string;
  /** True when the config (not the default) chose the host: only then may it be non-loopback. */
  hostExplicit: boolean;
  port: number;
  idleTimeoutMs: number;
  maxRuntimeMs: number;
  graceMs: number;
  heartbeatPath: string;
  shutdownAction: ShutdownAction;
  env: Record<string, string>;
  logLevel: LogLevel;
  /** Poll the metadata service (set on EC2, against an emulator, or for a rehearsal). */
  imds: ImdsConfig | undefined;
  simulate: SimulateConfig | undefined;
  onRebalance: string;
  /** Checkpoint sync, with `dir` made absolute against the workdir. */
  checkpoint: (CheckpointConfig & { dir: string; settleMs: number; exitFlushBudgetMs: number }) | undefined;
  /** GPUs the job needs; checked before it starts. */
  gpus: GpuRequirement | undefined;
}

/** Environment variables that override config fields, so secrets need not sit in the file. */
export const ENV_OVERRIDES = {
  token: 'SPOTCTL_AGENT_TOKEN',
  port: 'SPOTCTL_AGENT_PORT',
  logLevel: 'SPOTCTL_AGENT_LOG_LEVEL',
} as const;

function configError(message: string, cause?: unknown): UserError {
  return new UserError('SPOTCTL_CONFIG', message, { exitCode: 2, cause });
}

/** Reads and validates a config file. Throws a {@link UserError} (exit code 2) naming the bad field. */
export function loadAgentConfig(file: string, env: NodeJS.ProcessEnv = process.env): ResolvedAgentConfig {
  const configPath = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(configPath, 'utf8');
  } catch (err) {
    throw configError(`cannot read config file ${configPath}: ${(err as Error).message}`, err);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw configError(`config file ${configPath} is not valid JSON: ${(err as Error).message}`, err);
  }
  return resolveAgentConfig(raw, env, configPath);
}

/** Validates an already-parsed config object; `source` names it in error messages. */
export function resolveAgentConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env, source = 'config'): ResolvedAgentConfig {
  const withEnv = applyEnvOverrides(raw, env);
  const parsed = parseAgentConfig(withEnv);
  if (!parsed.ok) throw configError(`invalid config ${source}: ${parsed.error}`);
  const c: AgentConfig = parsed.value;
  const logLevel = c.logLevel ?? 'info';
  if (!isLogLevel(logLevel)) {
    throw configError(`invalid config ${source}: /logLevel: must be one of ${LOG_LEVELS.join(', ')}`);
  }
  const rebalanceSignal = c.onRebalance?.startsWith('signal:') ? c.onRebalance.slice('signal:'.length) : undefined;
  if (rebalanceSignal !== undefined && !(`SIG${rebalanceSignal}` in os.constants.signals)) {
    throw configError(`invalid config ${source}: /onRebalance: unknown signal '${rebalanceSignal}' (use a name like USR1, TERM, INT)`);
  }
  return {
    runId: c.runId,
    workdir: path.resolve(c.workdir),
    stateDir: path.resolve(c.stateDir),
    command: c.command,
    token: c.token,
    host: c.host ?? '127.0.0.1',
    hostExplicit: c.host !== undefined,
    port: c.port ?? 0,
    idleTimeoutMs: c.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    maxRuntimeMs: c.maxRuntimeMs ?? 0,
    graceMs: c.graceMs ?? DEFAULT_GRACE_MS,
    heartbeatPath: path.resolve(c.heartbeatPath ?? DEFAULT_HEARTBEAT_PATH),
    shutdownAction: c.shutdownAction ?? { kind: 'exit' },
    env: c.env ?? {},
    logLevel,
    imds: c.imds,
    simulate: c.simulate,
    onRebalance: c.onRebalance ?? 'checkpoint',
    checkpoint: c.checkpoint
      ? {
          ...c.checkpoint,
          dir: path.resolve(path.resolve(c.workdir), c.checkpoint.dir ?? 'checkpoints'),
          settleMs: c.checkpoint.settleMs ?? DEFAULT_CHECKPOINT_SETTLE_MS,
          exitFlushBudgetMs: c.checkpoint.exitFlushBudgetMs ?? DEFAULT_EXIT_FLUSH_BUDGET_MS,
        }
      : undefined,
    gpus: c.gpus,
  };
}

function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

function applyEnvOverrides(raw: unknown, env: NodeJS.ProcessEnv): unknown {
  // A non-object is left for the schema to reject with its own message.
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const out: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  const token = env[ENV_OVERRIDES.token];
  if (token !== undefined && token !== '') out['token'] = token;
  const port = env[ENV_OVERRIDES.port];
  if (port !== undefined && port !== '') {
    if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) {
      throw configError(`invalid ${ENV_OVERRIDES.port}: must be an integer 0-65535, got ${JSON.stringify(port)}`);
    }
    out['port'] = Number(port);
  }
  const level = env[ENV_OVERRIDES.logLevel];
  if (level !== undefined && level !== '') out['logLevel'] = level;
  return out;
}
