/**
 * The controller's side of the protocol: one websocket to the agent (directly or through the SSH
 * tunnel's unix socket), every inbound message validated against the shared schema.
 */
import createDebug from 'debug';
import WebSocket from 'ws';
import {
  PROTOCOL_VERSION,
  SpotctlError,
  UserError,
  WS_PATH,
  WS_SUBPROTOCOL,
  checkResult,
  errorFromWire,
  isEvent,
  parseLogFrame,
  parseServerMessage,
  type HelloEvent,
  type LogsEvent,
  type Method,
  type ParamsOf,
  type ResultOf,
  type ServerEvent,
} from '@spotctl/shared';

const debug = createDebug('spotctl:agent-client');

function toBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

export type AgentEndpoint =
  { kind: 'tcp'; host: string; port: number; token: string } | { kind: 'unix'; socketPath: string; token: string };

export function endpointUrl(endpoint: AgentEndpoint): string {
  return endpoint.kind === 'tcp' ? `ws://${endpoint.host}:${endpoint.port}${WS_PATH}` : `ws+unix://${endpoint.socketPath}:${WS_PATH}`;
}

export interface ConnectOptions {
  signal?: AbortSignal;
  /** @default 10000 */
  timeoutMs?: number;
  /** Without a message or ping from the agent for this long the connection counts as dead. @default 30000 */
  silenceTimeoutMs?: number;
}

interface Pending {
  method: Method;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

export class AgentConnection implements AsyncDisposable {
  readonly hello: HelloEvent;
  private readonly ws: WebSocket;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly eventListeners = new Set<(event: ServerEvent | LogsEvent) => void>();
  private readonly closeListeners = new Set<(error: Error) => void>();
  private closedError: Error | undefined;
  private silenceTimer: NodeJS.Timeout | undefined;
  private readonly silenceTimeoutMs: number;

  private constructor(ws: WebSocket, hello: HelloEvent, silenceTimeoutMs: number) {
    this.ws = ws;
    this.hello = hello;
    this.silenceTimeoutMs = silenceTimeoutMs;
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('ping', () => this.touch());
    ws.on('close', (code, reason) =>
      this.onClosed(
        new SpotctlError(
          'SPOTCTL_AGENT_UNREACHABLE',
          `connection to the agent closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`,
        ),
      ),
    );
    ws.on('error', (err) =>
      this.onClosed(new SpotctlError('SPOTCTL_AGENT_UNREACHABLE', `connection to the agent failed: ${err.message}`, { cause: err })),
    );
    this.touch();
  }

  /** Opens the websocket, checks the hello, and returns a ready connection. */
  static connect(endpoint: AgentEndpoint, options: ConnectOptions = {}): Promise<AgentConnection> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const url = endpointUrl(endpoint);
    debug('connecting to %s', url);
    return new Promise<AgentConnection>((resolve, reject) => {
      const ws = new WebSocket(url, WS_SUBPROTOCOL, {
        headers: { authorization: `Bearer ${endpoint.token}` },
        handshakeTimeout: timeoutMs,
        perMessageDeflate: false,
        maxPayload: 256 * 1024 * 1024,
      });
      let settled = false;
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        cleanup();
        ws.terminate();
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new SpotctlError('SPOTCTL_AGENT_UNREACHABLE', `the agent did not greet within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onAbort = () => fail(options.signal?.reason instanceof Error ? options.signal.reason : new Error('aborted'));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        ws.off('message', onFirst);
      };
      ws.once('unexpected-response', (_req, res) => {
        const status = res.statusCode ?? 0;
        if (status === 401) {
          fail(
            new UserError('SPOTCTL_UNAUTHORIZED', 'the agent refused our token', {
              remediation: 'the run record may belong to another run; check with: spotctl ps',
            }),
          );
          return;
        }
        if (status !== 400) {
          fail(new SpotctlError('SPOTCTL_AGENT_UNREACHABLE', `the agent answered the upgrade with HTTP ${status}`));
          return;
        }
        // 400 is the agent refusing our subprotocol: an agent of another protocol version. Its
        // body says which one it speaks.
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body = (body + chunk).slice(0, 4096)));
        res.on('error', () => undefined);
        const refuse = () => {
          let detail = '';
          try {
            const message = (JSON.parse(body) as { message?: unknown }).message;
            if (typeof message === 'string') detail = `: ${message}`;
          } catch {
            // not the agent's JSON error; say what we know
          }
          fail(
            new UserError(
              'SPOTCTL_AGENT_VERSION',
              `the agent refused websocket subprotocol ${WS_SUBPROTOCOL} (this spotctl speaks protocol v${PROTOCOL_VERSION})${detail}`,
              {
                remediation: 're-run so spotctl installs its own agent build, or use the spotctl version that started this run',
              },
            ),
          );
        };
        res.once('end', refuse);
        setTimeout(refuse, 1000).unref();
      });
      ws.once('error', (err) =>
        fail(new SpotctlError('SPOTCTL_AGENT_UNREACHABLE', `cannot reach the agent: ${err.message}`, { cause: err })),
      );
      ws.once('close', () => fail(new SpotctlError('SPOTCTL_AGENT_UNREACHABLE', 'the agent closed the connection during the handshake')));
      const onFirst = (data: WebSocket.RawData) => {
        const parsed = parseServerMessage(data.toString());
        if (!parsed.ok || !isEvent(parsed.value) || parsed.value.event !== 'hello') {
          fail(
            new SpotctlError(
              'SPOTCTL_PROTOCOL',
              `expected a hello from the agent, got: ${parsed.ok ? JSON.stringify(parsed.value).slice(0, 200) : parsed.error}`,
            ),
          );
          return;
        }
        const hello = parsed.value;
        if (hello.protocolVersion !== PROTOCOL_VERSION) {
          fail(
            new UserError(
              'SPOTCTL_AGENT_VERSION',
              `the agent speaks protocol v${hello.protocolVersion}, this spotctl speaks v${PROTOCOL_VERSION}`,
              { remediation: 're-run so spotctl installs its own agent build, or update spotctl' },
            ),
          );
          return;
        }
        settled = true;
        cleanup();
        ws.removeAllListeners('error');
        ws.removeAllListeners('close');
        ws.removeAllListeners('unexpected-response');
        debug('hello from agent %s (build %s)', hello.agentVersion, hello.buildId);
        resolve(new AgentConnection(ws, hello, options.silenceTimeoutMs ?? 30_000));
      };
      ws.on('message', onFirst);
    });
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** JSON events, and `logs` events made from the binary log frames (validated once per frame). */
  onEvent(listener: (event: ServerEvent | LogsEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Called once when the connection ends for any reason. */
  onClose(listener: (error: Error) => void): () => void {
    if (this.closedError) queueMicrotask(() => listener(this.closedError as Error));
    else this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  request<M extends Method>(method: M, params: ParamsOf<M>, options: { timeoutMs?: number } = {}): Promise<ResultOf<M>> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? 15_000;
    return new Promise<ResultOf<M>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SpotctlError('SPOTCTL_AGENT_UNREACHABLE', `the agent did not answer '${method}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        method,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as ResultOf<M>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Stop reading from the socket (TCP backpressure reaches the agent). */
  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  private touch(): void {
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => {
      debug('no message or ping for %d ms: treating the connection as dead', this.silenceTimeoutMs);
      this.ws.terminate();
      this.onClosed(new SpotctlError('SPOTCTL_AGENT_UNREACHABLE', `no word from the agent for ${this.silenceTimeoutMs} ms`));
    }, this.silenceTimeoutMs);
    this.silenceTimer.unref();
  }

  private onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    this.touch();
    if (isBinary) {
      const frame = parseLogFrame(toBuffer(data));
      if (!frame.ok) return this.protocolError(frame.error);
      const event: LogsEvent = { type: 'event', event: 'logs', batch: frame.value };
      for (const l of this.eventListeners) l(event);
      return;
    }
    const parsed = parseServerMessage(data.toString());
    if (!parsed.ok) return this.protocolError(parsed.error);
    const msg = parsed.value;
    if (isEvent(msg)) {
      for (const l of this.eventListeners) l(msg);
      return;
    }
    const id = msg.id;
    const pending = id === null ? undefined : this.pending.get(id);
    if (!pending) {
      if ('error' in msg) debug('agent error without a pending request: %o', msg.error);
      return;
    }
    this.pending.delete(id as number);
    if ('error' in msg) {
      pending.reject(errorFromWire(msg.error));
      return;
    }
    const checked = checkResult(pending.method, msg.result);
    if (checked.ok) pending.resolve(checked.value);
    else pending.reject(new SpotctlError('SPOTCTL_PROTOCOL', `bad '${pending.method}' result from the agent: ${checked.error}`));
  }

  private protocolError(detail: string): void {
    const error = new SpotctlError('SPOTCTL_PROTOCOL', `the agent sent a message that breaks the protocol: ${detail}`);
    this.ws.close(1002, 'protocol error');
    this.onClosed(error);
  }

  private onClosed(error: Error): void {
    if (this.closedError) return;
    this.closedError = error;
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    debug('connection closed: %s', error.message);
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    for (const l of this.closeListeners) l(error);
    this.closeListeners.clear();
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.ws.terminate();
        resolve();
      }, 1000);
      this.ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.ws.close(1000, 'bye');
    });
    this.onClosed(new SpotctlError('SPOTCTL_AGENT_UNREACHABLE', 'closed'));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
