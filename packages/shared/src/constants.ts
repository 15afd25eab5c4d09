/**
 * Version of the agent⇄controller wire protocol. Bump on any incompatible change.
 * v2: log lines travel as binary `logs` frames (a header and the lines' raw bytes), not JSON.
 */
export const PROTOCOL_VERSION = 2;
/** Websocket subprotocol both sides must agree on; it carries the protocol version. */
export const WS_SUBPROTOCOL = `spotctl.v${PROTOCOL_VERSION}`;
/** Path of the agent's websocket endpoint. */
export const WS_PATH = '/v1/ws';
/** Path of the agent's plain HTTP health endpoint (token-protected too). */
export const HEALTH_PATH = '/v1/health';

/** Files the agent keeps in its state directory; the controller reads them when the agent is gone. */
export const AGENT_FILES = {
  /** Append-only job log: records of a JSON header line and raw lines (log-frames.ts). */
  log: 'log.records',
  /** Latest {@link JobStatus}, rewritten atomically on every change. */
  status: 'status.json',
  /** {@link AgentState}: pid and bound port, written once the server listens. */
  state: 'agent.json',
  /** The agent's own pino log. */
  agentLog: 'agent.log',
} as const;

/** @default 300 s: the instance counts as idle after this long without job, client or heartbeat. */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
/**
 * The longest delay a Node.js timer holds (2^31-1 ms, about 24.8 days): setTimeout fires at once
 * for anything longer, so every configured duration is bounded by it.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** @default 90 s between SIGTERM and SIGKILL when a job is stopped. */
export const DEFAULT_GRACE_MS = 90_000;
/** @default the heartbeat file a user (or their job) touches to keep the instance alive. */
export const DEFAULT_HEARTBEAT_PATH = '/tmp/spotctl-heartbeat';
/** Server → client websocket ping interval. */
export const PING_INTERVAL_MS = 10_000;
/** A line longer than this is split into several records so one record stays small. */
export const MAX_LINE_BYTES = 64 * 1024;
