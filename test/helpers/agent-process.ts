/**
 * Runs the real agent bundle the way the controller does (`node agent.mjs start --config FILE`)
 * and talks to it over a real websocket. Nothing here is a mock.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import {
  AGENT_FILES,
  HEALTH_PATH,
  WS_PATH,
  WS_SUBPROTOCOL,
  parseAgentState,
  parseJobStatus,
  LogRecordReader,
  batchLines,
  parseLogFrame,
  parseServerMessage,
  type AgentConfig,
  type LogLine,
  type AgentState,
  type JobStatus,
  type Method,
  type ParamsOf,
  type ServerMessage,
} from '@spotctl/shared';
import { buildAll } from '../../scripts/build.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const AGENT_BUNDLE = path.join(REPO, 'packages', 'agent', 'dist', 'agent.mjs');

/**
 * The test command builds the bundles first (vitest globalSetup); this covers running one test
 * file on its own. Only the agent bundle matters here, so a failing CLI build is tolerated when
 * the agent bundle came out.
 */
export async function ensureAgentBundle(): Promise<string> {
  if (existsSync(AGENT_BUNDLE)) return AGENT_BUNDLE;
  try {
    await buildAll({ quiet: true });
  } catch (err) {
    if (!existsSync(AGENT_BUNDLE)) throw err;
  }
  return AGENT_BUNDLE;
}

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node agent.mjs ...args` to completion (bounded). */
export function runAgentCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
): Promise<CommandResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [AGENT_BUNDLE, ...args], {
      cwd: options.cwd ?? REPO,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `agent ${args.join(' ')} did not exit within ${timeoutMs} ms; stdout: ${Buffer.concat(out).toString()} stderr: ${Buffer.concat(err).toString()}`,
        ),
      );
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

/** True while the process exists and is not a zombie (PID 1 here may never reap daemons). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/**
 * Polls `predicate` until truthy (returned) or the timeout. Only for state without an event to
 * await: a file another process writes, a daemon that is not our child exiting.
 */
export async function pollUntil<T>(predicate: () => T, what: string, timeoutMs = 10_000, intervalMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = predicate();
    if (value) return value as NonNullable<T>;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export interface StartAgentOptions {
  /** The job's argv. */
  command: string[];
  /**
   * Config fields to set or override (runId, token, stateDir, workdir default to fresh values).
   * A function gets the agent's temp dir, for paths that must live there.
   */
  config?: Partial<AgentConfig> | ((dir: string) => Partial<AgentConfig>);
  /** Extra environment for the agent process. */
  env?: NodeJS.ProcessEnv;
  /** How long close() waits for the agent after SIGTERM before SIGKILL. @default 10000 */
  closeTimeoutMs?: number;
}

export interface AgentProcess extends AsyncDisposable {
  /** What `start` printed. */
  readonly state: AgentState;
  readonly pid: number;
  /** Temp directory holding everything of this agent; removed by close(). */
  readonly dir: string;
  readonly stateDir: string;
  readonly workdir: string;
  readonly configPath: string;
  readonly token: string;
  /** ws://127.0.0.1:<port>/v1/ws */
  readonly url: string;
  /** http://127.0.0.1:<port> */
  readonly httpUrl: string;
  readonly config: AgentConfig;
  /** The job status from status.json (undefined before it is written). */
  readStatus(): JobStatus | undefined;
  alive(): boolean;
  /** Resolves once the agent process is gone (bounded). */
  waitForExit(timeoutMs?: number): Promise<void>;
  /** SIGTERM the agent, wait for it (bounded), SIGKILL what is left, remove the temp dir. Idempotent. */
  close(): Promise<void>;
}

/** Writes a config in a fresh temp dir and runs `node agent.mjs start --config` on it. */
export async function startAgent(options: StartAgentOptions): Promise<AgentProcess> {
  await ensureAgentBundle();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-agent-'));
  const overrides = typeof options.config === 'function' ? options.config(dir) : (options.config ?? {});
  const workdir = overrides.workdir ?? path.join(dir, 'work');
  const stateDir = overrides.stateDir ?? path.join(dir, 'state');
  mkdirSync(workdir, { recursive: true });
  const config: AgentConfig = {
    runId: `test-${randomBytes(4).toString('hex')}`,
    token: randomBytes(24).toString('hex'),
    // Short so a test that ends with a running job does not wait 90 s in close().
    graceMs: 2000,
    // Never the shared /tmp/spotctl-heartbeat: another test (or a user) could touch it.
    heartbeatPath: path.join(dir, 'heartbeat'),
    ...overrides,
    command: options.command,
    workdir,
    stateDir,
  };
  const configPath = path.join(dir, 'config.json');
  writeFileSync(configPath, JSON.stringify(config), { mode: 0o600 });
  const result = await runAgentCli(['start', '--config', configPath], { ...(options.env ? { env: options.env } : {}) });
  if (result.code !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`agent start failed (exit ${result.code}):\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  }
  const lines = result.stdout.trim().split('\n');
  if (lines.length !== 1) throw new Error(`agent start printed ${lines.length} lines, expected one: ${result.stdout}`);
  const parsed = parseAgentState(lines[0] ?? '');
  if (!parsed.ok) throw new Error(`agent start printed something that is not an AgentState (${parsed.error}): ${result.stdout}`);
  const state = parsed.value;
  const token = options.env?.['SPOTCTL_AGENT_TOKEN'] ?? config.token;
  const closeTimeoutMs = options.closeTimeoutMs ?? 10_000;

  const readStatus = (): JobStatus | undefined => {
    try {
      const s = parseJobStatus(readFileSync(path.join(stateDir, AGENT_FILES.status), 'utf8'));
      return s.ok ? s.value : undefined;
    } catch {
      return undefined;
    }
  };
  const alive = (): boolean => isProcessAlive(state.pid);
  const waitForExit = async (timeoutMs = 10_000): Promise<void> => {
    await pollUntil(() => !alive(), `agent pid ${state.pid} to exit`, timeoutMs);
  };
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      try {
        if (alive()) {
          process.kill(state.pid, 'SIGTERM');
          await waitForExit(closeTimeoutMs).catch(() => {
            if (alive()) process.kill(state.pid, 'SIGKILL');
          });
        }
      } finally {
        // Whatever happened, no job process group outlives the test.
        const jobPid = readStatus()?.pid;
        if (jobPid) {
          try {
            process.kill(-jobPid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      }
    })());

  return {
    state,
    pid: state.pid,
    dir,
    stateDir,
    workdir,
    configPath,
    token,
    url: `ws://127.0.0.1:${state.port}${WS_PATH}`,
    httpUrl: `http://127.0.0.1:${state.port}`,
    config,
    readStatus,
    alive,
    waitForExit,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** GET the health route (or any path) with an optional token. */
export async function httpGet(
  agent: Pick<AgentProcess, 'httpUrl'>,
  pathName = HEALTH_PATH,
  token?: string,
): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${agent.httpUrl}${pathName}`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON; keep the text
  }
  return { status: response.status, body };
}

export interface ConnectOptions {
  /** null = send no Authorization header. @default the agent's token */
  token?: string | null;
  /** @default [WS_SUBPROTOCOL] */
  protocols?: string[];
  /** @default 10000 */
  timeoutMs?: number;
}

export interface RefusedUpgrade {
  statusCode: number;
  body: unknown;
}

/** Attempts an upgrade that must fail; resolves with the HTTP answer. */
export function expectUpgradeRefused(agent: Pick<AgentProcess, 'url' | 'token'>, options: ConnectOptions = {}): Promise<RefusedUpgrade> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(agent.url, options.protocols ?? [WS_SUBPROTOCOL], {
      headers: authHeaders(agent, options),
      perMessageDeflate: false,
    });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no answer to the upgrade within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.once('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        clearTimeout(timer);
        req.destroy();
        const text = Buffer.concat(chunks).toString();
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // keep the text
        }
        resolve({ statusCode: res.statusCode ?? 0, body });
      });
    });
    ws.once('open', () => {
      clearTimeout(timer);
      ws.terminate();
      reject(new Error('the upgrade succeeded, but it should have been refused'));
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function authHeaders(agent: Pick<AgentProcess, 'token'>, options: ConnectOptions): Record<string, string> {
  const token = options.token === undefined ? agent.token : options.token;
  return token === null ? {} : { authorization: `Bearer ${token}` };
}

/**
 * A binary `logs` frame, validated by the shared parser and expanded into lines, so tests read
 * lines the way the controller's `--json` mode does.
 */
export interface LogsMessage {
  type: 'event';
  event: 'logs';
  lines: LogLine[];
  /** Size of the binary frame on the wire. */
  frameBytes: number;
}

/** What the test client keeps: JSON messages and expanded log frames. */
export type TestMessage = ServerMessage | LogsMessage;

type Response = Extract<ServerMessage, { id: unknown }>;

/**
 * A protocol client for tests: connects with token and subprotocol, validates and keeps every
 * message, and waits for messages with bounded, self-explaining timeouts.
 */
export class TestClient implements AsyncDisposable {
  readonly ws: WebSocket;
  /** Every valid message received, in order (the hello first). */
  readonly messages: TestMessage[] = [];
  /** Messages that broke the protocol schema; a test should expect none. */
  readonly invalid: string[] = [];
  /** Resolves when the socket closes. */
  readonly closed: Promise<{ code: number; reason: string }>;
  #nextId = 1;
  #waiters = new Set<() => void>();
  #readIndex = 0;
  #isClosed = false;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (isBinary) {
        const frame = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
        const parsed = parseLogFrame(frame);
        if (parsed.ok) this.messages.push({ type: 'event', event: 'logs', lines: batchLines(parsed.value), frameBytes: frame.length });
        else this.invalid.push(`${parsed.error}: <binary ${frame.length} bytes>`);
      } else {
        const text = data.toString();
        const parsed = parseServerMessage(text);
        if (parsed.ok) this.messages.push(parsed.value);
        else this.invalid.push(`${parsed.error}: ${text.slice(0, 200)}`);
      }
      for (const wake of [...this.#waiters]) wake();
    });
    this.closed = new Promise((resolve) => {
      ws.once('close', (code, reason) => {
        this.#isClosed = true;
        for (const wake of [...this.#waiters]) wake();
        resolve({ code, reason: reason.toString() });
      });
    });
    ws.on('error', () => undefined);
  }

  static connect(agent: Pick<AgentProcess, 'url' | 'token'>, options: ConnectOptions = {}): Promise<TestClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(agent.url, options.protocols ?? [WS_SUBPROTOCOL], {
        headers: authHeaders(agent, options),
        perMessageDeflate: false,
        maxPayload: 256 * 1024 * 1024,
      });
      // Attach the message listener before 'open' so the hello cannot be missed.
      const client = new TestClient(ws);
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`websocket to ${agent.url} did not open within ${timeoutMs} ms`));
      }, timeoutMs);
      ws.once('open', () => {
        clearTimeout(timer);
        resolve(client);
      });
      ws.once('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        ws.terminate();
        reject(new Error(`upgrade refused with HTTP ${res.statusCode}`));
      });
      ws.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Sends a request and resolves with its response (result or error), bounded. */
  async request<M extends Method>(method: M, params: ParamsOf<M>, timeoutMs = 10_000): Promise<Response> {
    const id = this.#nextId++;
    this.sendRaw(JSON.stringify({ id, method, params }));
    return await this.waitForResponse(id, timeoutMs);
  }

  /** Like request(), but returns the result and throws on an error response. */
  async call<M extends Method>(method: M, params: ParamsOf<M>, timeoutMs = 10_000): Promise<unknown> {
    const response = await this.request(method, params, timeoutMs);
    if ('error' in response) throw new Error(`${method} failed: ${response.error.code}: ${response.error.message}`);
    return response.result;
  }

  async waitForResponse(id: number | null, timeoutMs = 10_000): Promise<Response> {
    const found = await this.waitFor((m): m is Response => 'id' in m && m.id === id, {
      timeoutMs,
      what: `response to request ${id}`,
      fromStart: true,
    });
    return found;
  }

  sendRaw(data: string | Buffer, options: { binary?: boolean } = {}): void {
    this.ws.send(data, { binary: options.binary ?? false });
  }

  /**
   * Resolves with the first message (after the previous match, unless fromStart) that matches,
   * advancing past it. On timeout or close, the error lists what did arrive.
   */
  waitFor<T extends TestMessage>(
    predicate: ((m: TestMessage) => m is T) | ((m: TestMessage) => boolean),
    options: { timeoutMs?: number; what?: string; fromStart?: boolean } = {},
  ): Promise<T> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const what = options.what ?? 'a matching message';
    return new Promise<T>((resolve, reject) => {
      let searched = options.fromStart ? 0 : this.#readIndex;
      const check = (): boolean => {
        if (this.invalid.length > 0) {
          finish(new Error(`received messages that break the protocol: ${this.invalid.slice(0, 3).join(' | ')}`));
          return true;
        }
        for (; searched < this.messages.length; searched++) {
          const m = this.messages[searched]!;
          if (predicate(m)) {
            if (!options.fromStart) this.#readIndex = searched + 1;
            finish(undefined, m as T);
            return true;
          }
        }
        if (this.#isClosed) {
          finish(new Error(`connection closed while waiting for ${what}; ${this.describe()}`));
          return true;
        }
        return false;
      };
      const finish = (err?: Error, value?: T): void => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        if (err) reject(err);
        else resolve(value as T);
      };
      const wake = (): void => void check();
      const timer = setTimeout(
        () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.describe()}`)),
        timeoutMs,
      );
      this.#waiters.add(wake);
      check();
    });
  }

  /** Waits for the next event of a kind (after the previous match). */
  nextEvent<E extends 'hello' | 'logs' | 'status' | 'end'>(
    event: E,
    options: { timeoutMs?: number; where?: (m: Extract<TestMessage, { event: E }>) => boolean } = {},
  ): Promise<Extract<TestMessage, { event: E }>> {
    const where = options.where ?? (() => true);
    return this.waitFor(
      (m): m is Extract<TestMessage, { event: E }> => 'event' in m && m.event === event && where(m as Extract<TestMessage, { event: E }>),
      {
        timeoutMs: options.timeoutMs ?? 10_000,
        what: `event ${event}`,
      },
    );
  }

  /** A short account of what arrived, for error messages. */
  describe(): string {
    const last = this.messages.slice(-8).map((m) => JSON.stringify(m).slice(0, 160));
    return `${this.messages.length} messages received${this.#isClosed ? ', connection closed' : ''}; last: ${last.join(' | ') || 'none'}`;
  }

  async close(): Promise<void> {
    if (this.#isClosed) return;
    this.ws.close();
    const timer = setTimeout(() => this.ws.terminate(), 2000);
    await this.closed;
    clearTimeout(timer);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The job's lines as stored in the agent's log file, read the way the controller's `logs` does. */
export function readStoredLog(stateDir: string): LogLine[] {
  const lines: LogLine[] = [];
  const reader = new LogRecordReader(1, (batch) => lines.push(...batchLines(batch)));
  reader.push(readFileSync(path.join(stateDir, AGENT_FILES.log)));
  return lines;
}

/** Connects and returns a client (an `await using` resource). */
export function connectClient(agent: Pick<AgentProcess, 'url' | 'token'>, options: ConnectOptions = {}): Promise<TestClient> {
  return TestClient.connect(agent, options);
}

/** Resolves with the final status, whether the job ended before or after the call. */
export async function waitForJobEnd(client: TestClient, timeoutMs = 30_000): Promise<JobStatus> {
  const isEnded = (s: JobStatus): boolean => s.state === 'exited' || s.state === 'failed-to-start';
  const status = (await client.call('status', {})) as JobStatus;
  if (isEnded(status)) return status;
  const event = await client.waitFor(
    (m): m is Extract<TestMessage, { event: 'status' }> => 'event' in m && m.event === 'status' && isEnded(m.status),
    { timeoutMs, what: 'a status event with the job ended', fromStart: true },
  );
  return event.status;
}
