/** The agent's configuration: written by the controller, read and validated by the agent. */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { Parsed } from './protocol.ts';

export const ShutdownAction = Type.Union([
  /** Stop the agent process only (local and SSH-host runs). */
  Type.Object({ kind: Type.Literal('exit') }, { additionalProperties: false }),
  /** Run a command, then exit: on EC2 `sudo shutdown -h now` (the instance terminates). */
  Type.Object({ kind: Type.Literal('command'), argv: Type.Array(Type.String(), { minItems: 1 }) }, { additionalProperties: false }),
]);
export type ShutdownAction = Static<typeof ShutdownAction>;

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
    idleTimeoutMs: Type.Optional(Type.Integer({ minimum: 1 })),
    /** 0 = no limit. @default 0 */
    maxRuntimeMs: Type.Optional(Type.Integer({ minimum: 0 })),
    /** @default 90000 */
    graceMs: Type.Optional(Type.Integer({ minimum: 0 })),
    /** @default '/tmp/spotctl-heartbeat' */
    heartbeatPath: Type.Optional(Type.String()),
    /** @default { kind: 'exit' } */
    shutdownAction: Type.Optional(ShutdownAction),
    /** Extra environment for the job. */
    env: Type.Optional(Type.Record(Type.String(), Type.String())),
    /** pino level. @default 'info' */
    logLevel: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);
export type AgentConfig = Static<typeof AgentConfig>;

const check = TypeCompiler.Compile(AgentConfig);

export function parseAgentConfig(value: unknown): Parsed<AgentConfig> {
  if (check.Check(value)) return { ok: true, value };
  const e = check.Errors(value).First();
  return { ok: false, error: e ? `${e.path || '/'}: ${e.message}` : 'invalid' };
}
