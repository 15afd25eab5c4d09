/**
 * The one source of truth for the agent⇄controller protocol. Both sides validate every inbound
 * message against these schemas; types are inferred from them.
 *
 * Envelopes:
 * - client → agent: a request `{ id, method, params }`;
 * - agent → client: a response `{ id, result }` or `{ id, error }`, or a push `{ type: 'event', ... }`,
 *   all JSON text frames; log lines alone come as binary `logs` frames (log-frames.ts).
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import { MAX_TIMER_MS } from './constants.ts';
import { lazyCompile } from './lazy-check.ts';
import { GpuSeen } from './gpus.ts';
import {
  CheckpointEvent,
  CheckpointFailedEvent,
  CheckpointHealth,
  InterruptionEvent,
  InterruptionReport,
  InterruptionReportEvent,
  RebalanceEvent,
} from './spot.ts';

const Seq = Type.Integer({ minimum: 0 });
const EpochMs = Type.Integer({ minimum: 0 });

export const LogStream = Type.Union([Type.Literal('stdout'), Type.Literal('stderr'), Type.Literal('system')]);
export type LogStream = Static<typeof LogStream>;

/**
 * One line of the job's output. `seq` starts at 1 and grows by exactly 1 per line, per run. On the
 * wire lines travel in bulk, as binary `logs` frames (see log-frames.ts), not as these objects.
 */
export const LogLine = Type.Object(
  {
    seq: Type.Integer({ minimum: 1 }),
    ts: EpochMs,
    stream: LogStream,
    text: Type.String(),
  },
  { additionalProperties: false },
);
export type LogLine = Static<typeof LogLine>;

export const JobState = Type.Union([
  Type.Literal('starting'),
  Type.Literal('running'),
  Type.Literal('exited'),
  Type.Literal('failed-to-start'),
]);
export type JobState = Static<typeof JobState>;

export const JobStatus = Type.Object(
  {
    runId: Type.String(),
    state: JobState,
    command: Type.Array(Type.String()),
    pid: Type.Union([Type.Integer(), Type.Null()]),
    startedAt: Type.Union([EpochMs, Type.Null()]),
    endedAt: Type.Union([EpochMs, Type.Null()]),
    /** Exit code when the job exited by itself; null while running or when killed by a signal. */
    exitCode: Type.Union([Type.Integer(), Type.Null()]),
    /** Signal name (`SIGKILL`) when the job was ended by a signal. */
    signal: Type.Union([Type.String(), Type.Null()]),
    /** Why the job ended when spotctl ended it: `stop`, `force`, `max-runtime`, `idle`, ... */
    stopReason: Type.Union([Type.String(), Type.Null()]),
    /** Seq of the newest line in the log (0 when empty). */
    lastSeq: Seq,
    /** Set when the job could not be started (e.g. command not found), or was killed because the agent could not start. */
    error: Type.Union([Type.String(), Type.Null()]),
    /** Set once a spot interruption was handled. */
    interruption: Type.Optional(InterruptionReport),
    /** Present when the run keeps checkpoints: whether they are getting through. */
    checkpoints: Type.Optional(CheckpointHealth),
  },
  { additionalProperties: false },
);
export type JobStatus = Static<typeof JobStatus>;

/** What `node agent.mjs start` prints and what the agent writes to `agent.json`. */
export const AgentState = Type.Object(
  {
    pid: Type.Integer(),
    host: Type.String(),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    startedAt: EpochMs,
    agentVersion: Type.String(),
    buildId: Type.String(),
    protocolVersion: Type.Integer(),
  },
  { additionalProperties: false },
);
export type AgentState = Static<typeof AgentState>;

// ---------------------------------------------------------------------------------------------
// Requests

const RequestId = Type.Integer({ minimum: 0 });
const Empty = Type.Object({}, { additionalProperties: false });

function request<M extends string, P extends TSchema>(method: M, params: P) {
  return Type.Object({ id: RequestId, method: Type.Literal(method), params }, { additionalProperties: false });
}

export const SubscribeParams = Type.Object(
  {
    /** First seq wanted; lines before it are skipped. 1 (or 0) = from the beginning. */
    fromSeq: Seq,
    /** Keep streaming live lines after the replay. @default true */
    follow: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export const StopParams = Type.Object(
  {
    /** SIGKILL the process group at once instead of SIGTERM + grace. @default false */
    force: Type.Optional(Type.Boolean()),
    /** Override the configured grace for this stop. */
    graceMs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_TIMER_MS })),
  },
  { additionalProperties: false },
);

/**
 * Short-lived AWS credentials the controller forwards to an agent on an SSH host (or this machine)
 * for its S3 checkpoint store: scoped to the run's prefix, held only in the agent's memory.
 */
export const CredentialsParams = Type.Object(
  {
    accessKeyId: Type.String({ minLength: 1 }),
    secretAccessKey: Type.String({ minLength: 1 }),
    sessionToken: Type.String({ minLength: 1 }),
    /** When they stop working (ms since the epoch). */
    expiresAt: EpochMs,
  },
  { additionalProperties: false },
);
export type CredentialsParams = Static<typeof CredentialsParams>;

export const Request = Type.Union([
  request('subscribe', SubscribeParams),
  request('unsubscribe', Empty),
  request('status', Empty),
  request('stop', StopParams),
  request('health', Empty),
  /** Ask the agent to exit once the job has ended (its logs stay on disk). */
  request('shutdown', Empty),
  /** Replace the S3 credentials the agent's checkpoint store uses (see CredentialsParams). */
  request('credentials', CredentialsParams),
]);
export type Request = Static<typeof Request>;
export type Method = Request['method'];
export type ParamsOf<M extends Method> = Extract<Request, { method: M }>['params'];

export const SubscribeResult = Type.Object({ fromSeq: Seq, lastSeq: Seq }, { additionalProperties: false });
export const HealthResult = Type.Object(
  {
    ok: Type.Boolean(),
    runId: Type.String(),
    agentVersion: Type.String(),
    uptimeMs: Type.Integer({ minimum: 0 }),
    rssBytes: Type.Integer({ minimum: 0 }),
    clients: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);
export const OkResult = Type.Object({ ok: Type.Boolean() }, { additionalProperties: false });

/** Result schema of each method, so the client validates responses too. */
export const ResultSchemas = {
  subscribe: SubscribeResult,
  unsubscribe: OkResult,
  status: JobStatus,
  stop: JobStatus,
  health: HealthResult,
  shutdown: OkResult,
  credentials: OkResult,
} as const satisfies Record<Method, TSchema>;
export type ResultOf<M extends Method> = Static<(typeof ResultSchemas)[M]>;

// ---------------------------------------------------------------------------------------------
// Agent → client

export const WireErrorSchema = Type.Object({ code: Type.String(), message: Type.String() }, { additionalProperties: false });

export const ResponseOk = Type.Object({ id: RequestId, result: Type.Unknown() }, { additionalProperties: false });
export const ResponseError = Type.Object(
  // id is null when the request was too malformed to have one.
  { id: Type.Union([RequestId, Type.Null()]), error: WireErrorSchema },
  { additionalProperties: false },
);

export const HelloEvent = Type.Object(
  {
    type: Type.Literal('event'),
    event: Type.Literal('hello'),
    protocolVersion: Type.Integer(),
    agentVersion: Type.String(),
    buildId: Type.String(),
    runId: Type.String(),
    /** GPUs the agent's nvidia-smi probe found (empty: none, or no nvidia-smi). Absent from older agents. */
    gpus: Type.Optional(Type.Array(GpuSeen)),
  },
  { additionalProperties: false },
);
export const StatusEvent = Type.Object(
  { type: Type.Literal('event'), event: Type.Literal('status'), status: JobStatus },
  { additionalProperties: false },
);
/** Sent to a subscriber once the job has ended and every line up to `status.lastSeq` was sent. */
export const EndEvent = Type.Object(
  { type: Type.Literal('event'), event: Type.Literal('end'), status: JobStatus },
  { additionalProperties: false },
);

export const ServerEvent = Type.Union([
  HelloEvent,
  StatusEvent,
  EndEvent,
  InterruptionEvent,
  RebalanceEvent,
  CheckpointEvent,
  CheckpointFailedEvent,
  InterruptionReportEvent,
]);
export type ServerEvent = Static<typeof ServerEvent>;
export const ServerMessage = Type.Union([ResponseOk, ResponseError, ...ServerEvent.anyOf]);
export type ServerMessage = Static<typeof ServerMessage>;
export type HelloEvent = Static<typeof HelloEvent>;
export type EndEvent = Static<typeof EndEvent>;

// ---------------------------------------------------------------------------------------------
// Validation

const requestCheck = lazyCompile(Request);
const serverMessageCheck = lazyCompile(ServerMessage);
type AnyCheck = { Check(value: unknown): boolean; Errors(value: unknown): { First(): { path: string; message: string } | undefined } };
const resultChecks = new Map<Method, AnyCheck>();
function resultCheck(method: Method): AnyCheck {
  let check = resultChecks.get(method);
  if (!check) {
    check = TypeCompiler.Compile(ResultSchemas[method] as TSchema) as AnyCheck;
    resultChecks.set(method, check);
  }
  return check;
}
const jobStatusCheck = lazyCompile(JobStatus);

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

function firstError(check: AnyCheck, value: unknown): string {
  const e = check.Errors(value).First();
  return e ? `${e.path || '/'}: ${e.message}` : 'invalid';
}

function parseJson(raw: string): Parsed<unknown> {
  try {
    return { ok: true, value: JSON.parse(raw) as unknown };
  } catch {
    return { ok: false, error: 'not valid JSON' };
  }
}

/** Parses and validates a client → agent message. */
export function parseRequest(raw: string): Parsed<Request> & { id?: number | null } {
  const json = parseJson(raw);
  if (!json.ok) return { ...json, id: null };
  if (requestCheck().Check(json.value)) return { ok: true, value: json.value };
  const v = json.value as { id?: unknown } | null;
  const id = v && typeof v === 'object' && Number.isInteger(v.id) ? (v.id as number) : null;
  return { ok: false, error: firstError(requestCheck(), json.value), id };
}

/** Parses and validates an agent → client message. */
export function parseServerMessage(raw: string): Parsed<ServerMessage> {
  const json = parseJson(raw);
  if (!json.ok) return json;
  if (serverMessageCheck().Check(json.value)) return { ok: true, value: json.value };
  return { ok: false, error: firstError(serverMessageCheck(), json.value) };
}

export function checkResult<M extends Method>(method: M, value: unknown): Parsed<ResultOf<M>> {
  const check = resultCheck(method);
  if (check.Check(value)) return { ok: true, value: value as ResultOf<M> };
  return { ok: false, error: firstError(check, value) };
}

export function parseJobStatus(raw: string): Parsed<JobStatus> {
  const json = parseJson(raw);
  if (!json.ok) return json;
  if (jobStatusCheck().Check(json.value)) return { ok: true, value: json.value };
  return { ok: false, error: firstError(jobStatusCheck(), json.value) };
}

/** Read a few times per process (agent.json): interpreted, not compiled, like the agent config. */
export function parseAgentState(raw: string): Parsed<AgentState> {
  const json = parseJson(raw);
  if (!json.ok) return json;
  if (Value.Check(AgentState, json.value)) return { ok: true, value: json.value };
  const e = Value.Errors(AgentState, json.value).First();
  return { ok: false, error: e ? `${e.path || '/'}: ${e.message}` : 'invalid' };
}

export function isEvent(msg: ServerMessage): msg is ServerEvent {
  return 'type' in msg;
}

/** Exit code a shell would report for a job status: the code, or 128 + signal number. */
export function exitCodeOf(status: Pick<JobStatus, 'exitCode' | 'signal' | 'state'>, signalNumbers: Record<string, number>): number {
  if (status.exitCode !== null) return status.exitCode;
  if (status.signal !== null) return 128 + (signalNumbers[status.signal] ?? 0);
  return status.state === 'failed-to-start' ? 127 : 1;
}

let methodChecks: Map<string, AnyCheck> | undefined;

/**
 * Why a parsed JSON value is not a valid request, in words a client can act on. The union's own
 * first error is just "Expected union value"; this names the unknown method, or the field of the
 * method's params that is wrong (`/params/fromSeq: Expected integer`).
 */
export function explainRequestError(value: unknown): string {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'a request must be a JSON object {id, method, params}';
  const method = (value as { method?: unknown }).method;
  if (typeof method !== 'string') return '/method: expected a string naming the method';
  methodChecks ??= new Map<string, AnyCheck>(
    Request.anyOf.map((schema) => [schema.properties.method.const, TypeCompiler.Compile(schema as TSchema) as AnyCheck]),
  );
  const check = methodChecks.get(method);
  if (!check) return `unknown method ${JSON.stringify(method)}; known: ${[...methodChecks.keys()].join(', ')}`;
  return firstError(check, value);
}
