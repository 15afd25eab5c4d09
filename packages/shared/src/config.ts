/** The agent's configuration: written by the controller, read and validated by the agent. */
import { Type, type Static } from '@sinclair/typebox';
import type { Parsed } from './protocol.ts';
import { Value } from '@sinclair/typebox/value';
import { MAX_TIMER_MS } from './constants.ts';
import { GpuRequirement } from './gpus.ts';

/** A delay the agent hands to a timer: a whole number of ms that setTimeout can hold (≤ 2^31-1). */
const TimerMs = (minimum: number) => Type.Integer({ minimum, maximum: MAX_TIMER_MS });

export const ShutdownAction = Type.Union([
  /** Stop the agent process only (local and SSH-host runs). */
  Type.Object({ kind: Type.Literal('exit') }, { additionalProperties: false }),
  /** Run a command, then exit: on EC2 `sudo shutdown -h now` (the instance terminates). */
  Type.Object({ kind: Type.Literal('command'), argv: Type.Array(Type.String(), { minItems: 1 }) }, { additionalProperties: false }),
]);
export type ShutdownAction = Static<typeof ShutdownAction>;

export const CheckpointTarget = Type.Union([
  Type.Object(
    {
      kind: Type.Literal('s3'),
      bucket: Type.String({ minLength: 3 }),
      /** Key prefix; the run's sets live under `<prefix>/<run-id>/`. */
      prefix: Type.String(),
      region: Type.Optional(Type.String()),
      /** S3-compatible endpoint (moto, MinIO); path-style addressing is used when set. */
      endpoint: Type.Optional(Type.String()),
    },
    { additionalProperties: false },
  ),
  /** A directory with the same layout: for rehearsals and tests without S3. */
  Type.Object({ kind: Type.Literal('dir'), path: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
]);
export type CheckpointTarget = Static<typeof CheckpointTarget>;

export const CheckpointConfig = Type.Object(
  {
    /** Watched folder, absolute or relative to the workdir. @default 'checkpoints' */
    dir: Type.Optional(Type.String()),
    target: CheckpointTarget,
    /** A file counts as written once it has not changed for this long. @default 500 */
    settleMs: Type.Optional(TimerMs(0)),
    /**
     * How long the final flush after the job ended may take, retries included; past it the failure
     * is reported and the agent lets the run end (an instance must not bill for a store that is down).
     * @default 300000
     */
    exitFlushBudgetMs: Type.Optional(TimerMs(0)),
    /** Run id whose latest committed set is restored into `dir` before the job starts. */
    restoreFrom: Type.Optional(Type.String()),
    /** Where `restoreFrom`'s sets live, when not in `target`. @default target */
    restoreTarget: Type.Optional(CheckpointTarget),
    /**
     * S3 credentials: `forwarded` = the controller pushes short-lived ones over the websocket
     * (request `credentials`), held in memory only; the store waits up to `credentialsWaitMs` for
     * the first, then falls back to the host's own chain. `host` = the host's AWS credential chain.
     * @default 'host'
     */
    credentials: Type.Optional(Type.Union([Type.Literal('host'), Type.Literal('forwarded')])),
    /** How long S3 calls wait for the first forwarded credentials. @default 60000 */
    credentialsWaitMs: Type.Optional(Type.Integer({ minimum: 0 })),
    /**
     * Workdir paths (`--pull`, sh-style globs per segment) uploaded under `<run>/outputs/` after an
     * interrupted job's final flush, so they outlive a reclaimed instance. @default none
     */
    outputs: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
  },
  { additionalProperties: false },
);
export type CheckpointConfig = Static<typeof CheckpointConfig>;

export const ImdsConfig = Type.Object(
  {
    /** Base URL of the instance metadata service. @default 'http://169.254.169.254' */
    endpoint: Type.Optional(Type.String()),
    /** @default 1000 */
    pollIntervalMs: Type.Optional(TimerMs(50)),
    /** @default 5000 */
    rebalancePollIntervalMs: Type.Optional(TimerMs(50)),
    /** @default 21600 */
    tokenTtlS: Type.Optional(Type.Integer({ minimum: 1, maximum: 21600 })),
  },
  { additionalProperties: false },
);
export type ImdsConfig = Static<typeof ImdsConfig>;

/** Rehearsal: the agent runs its own metadata emulator and schedules an interruption. */
export const SimulateConfig = Type.Object(
  {
    /** The notice is served this long after the job starts. */
    interruptAfterMs: TimerMs(0),
    /** @default 'terminate' */
    action: Type.Optional(Type.Union([Type.Literal('terminate'), Type.Literal('stop'), Type.Literal('hibernate')])),
    /** Time between the notice and the deadline, as on AWS. @default 120000 */
    noticeLeadMs: Type.Optional(TimerMs(0)),
  },
  { additionalProperties: false },
);
export type SimulateConfig = Static<typeof SimulateConfig>;

export const AgentConfig = Type.Object(
  {
    runId: Type.String({ minLength: 1, pattern: '^[A-Za-z0-9._-]+$' }),
    /** Where the job runs; a `.venv` here is activated for the job. */
    workdir: Type.String({ minLength: 1 }),
    /** Where the log, status and state files live. */
    stateDir: Type.String({ minLength: 1 }),
    /** argv of the job; run directly, not through a shell. */
    command: Type.Array(Type.String(), { minItems: 1 }),
    /** Bearer token every websocket upgrade must present. */
    token: Type.String({ minLength: 16 }),
    /** @default '127.0.0.1' */
    host: Type.Optional(Type.String()),
    /** 0 picks a free port; the bound one goes to agent.json. @default 0 */
    port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
    /** @default 300000 */
    idleTimeoutMs: Type.Optional(TimerMs(1)),
    /** 0 = no limit. @default 0 */
    maxRuntimeMs: Type.Optional(TimerMs(0)),
    /** @default 90000 */
    graceMs: Type.Optional(TimerMs(0)),
    /** @default '/tmp/spotctl-heartbeat' */
    heartbeatPath: Type.Optional(Type.String()),
    /** @default { kind: 'exit' } */
    shutdownAction: Type.Optional(ShutdownAction),
    /** Extra environment for the job. */
    env: Type.Optional(Type.Record(Type.String(), Type.String())),
    /** Poll the metadata service for interruption and rebalance notices (aws provider, or an emulator). */
    imds: Type.Optional(ImdsConfig),
    /** Rehearse an interruption against an emulated metadata service. */
    simulate: Type.Optional(SimulateConfig),
    /** What a rebalance recommendation does besides the event. @default 'checkpoint' */
    onRebalance: Type.Optional(Type.String({ pattern: '^(checkpoint|ignore|signal:[A-Z0-9]+)$' })),
    checkpoint: Type.Optional(CheckpointConfig),
    /** GPUs the job needs: checked with nvidia-smi before it starts; a shortfall fails the start. */
    gpus: Type.Optional(GpuRequirement),
    /** pino level. @default 'info' */
    logLevel: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
export type AgentConfig = Static<typeof AgentConfig>;

/**
 * Checked once per process, so the schema is interpreted (`Value.Check`) rather than compiled to a
 * validator first, which costs 2–3 ms more, on the way to the agent's ready.
 */
export function parseAgentConfig(value: unknown): Parsed<AgentConfig> {
  if (Value.Check(AgentConfig, value)) return { ok: true, value };
  const e = Value.Errors(AgentConfig, value).First();
  return { ok: false, error: e ? `${e.path || '/'}: ${e.message}` : 'invalid' };
}
