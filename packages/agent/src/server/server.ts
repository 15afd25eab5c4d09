/**
 * The agent's network face: fastify with one websocket route and a health route, both behind the
 * bearer token.
 */
import { isIP } from 'node:net';
import fastifyWebsocket, { type WebSocket } from '@fastify/websocket';
import { fastify, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import {
  HEALTH_PATH,
  PING_INTERVAL_MS,
  PROTOCOL_VERSION,
  WS_PATH,
  WS_SUBPROTOCOL,
  type CredentialsParams,
  type JobStatus,
  type ServerEvent,
  type ResultOf,
  type GpuSeen,
} from '@spotctl/shared';
import { redactUrl } from '../logger.ts';
import { createTokenCheck } from './auth.ts';
import { ClientConnection } from './connection.ts';
import type { AppendedLines, JobControl, LogSource } from './types.ts';

export interface AgentServerOptions {
  /** Address to bind. */
  host: string;
  /** 0 picks a free port. */
  port: number;
  token: string;
  runId: string;
  agentVersion: string;
  buildId: string;
  /** GPUs the agent's probe found, for the hello. @default [] */
  gpus?: GpuSeen[];
  logs: LogSource;
  job: JobControl;
  logger: Logger;
  /** A client asked the agent to exit (only accepted once the job has ended). */
  onShutdownRequested(): void;
  /** The number of connected websocket clients changed. */
  onClientsChanged?(count: number): void;
  /** Forwarded S3 credentials arrived (request `credentials`); without it the request is refused. */
  onCredentials?(credentials: CredentialsParams): void;
  /** @default PING_INTERVAL_MS */
  pingIntervalMs?: number;
  /** For the health's uptimeMs. @default Date.now() at construction */
  startedAt?: number;
}

/** Stands in for fastify's schema compilers: a route with a schema is a mistake here. */
function noSchemaCompiler(): () => never {
  return () => {
    throw new Error('agent routes take no JSON schema (fastify schema compilers are not loaded)');
  };
}

/** How long close() lets clients answer the close frame before cutting them off. */
const CLOSE_GRACE_MS = 1000;
/** How long a closing agent waits for followers that are still catching up. */
const FOLLOWER_DRAIN_MS = 5_000;

export class AgentServer implements AsyncDisposable {
  readonly #o: AgentServerOptions;
  readonly #app: FastifyInstance;
  readonly #log: Logger;
  readonly #clients = new Map<WebSocket, ClientConnection>();
  readonly #startedAt: number;
  #nextClientId = 1;
  #pingTimer: NodeJS.Timeout | undefined;
  #address: { host: string; port: number } | undefined;
  #closing: Promise<void> | undefined;

  private constructor(options: AgentServerOptions) {
    this.#o = options;
    this.#log = options.logger;
    this.#startedAt = options.startedAt ?? Date.now();
    this.#app = fastify({
      loggerInstance: options.logger,
      // Upgraded sockets are ours to close; keep-alive HTTP ones must not hold close() up.
      forceCloseConnections: true,
      // No route has a JSON schema (messages are validated by the shared protocol schemas), so
      // fastify's default compilers would only load ajv and fast-json-stringify at start-up, for
      // nothing: about 8 ms of the agent's start-to-ready in a CPU profile.
      schemaController: { compilersFactory: { buildValidator: noSchemaCompiler, buildSerializer: noSchemaCompiler } },
    }) as unknown as FastifyInstance;
  }

  /** Creates the server and starts listening. */
  static async listen(options: AgentServerOptions): Promise<AgentServer> {
    const server = new AgentServer(options);
    try {
      await server.#setup();
      await server.#listen();
    } catch (err) {
      await server.close();
      throw err;
    }
    return server;
  }

  get address(): { host: string; port: number } {
    if (!this.#address) throw new Error('server is not listening');
    return this.#address;
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  health(): ResultOf<'health'> {
    return {
      ok: true,
      runId: this.#o.runId,
      agentVersion: this.#o.agentVersion,
      uptimeMs: Math.max(0, Math.round(Date.now() - this.#startedAt)),
      rssBytes: process.memoryUsage.rss(),
      clients: this.#clients.size,
    };
  }

  /** New log lines were appended. */
  notifyLogs(appended?: AppendedLines): void {
    for (const client of this.#clients.values()) client.notifyLogs(appended);
  }

  /** A push for every client (interruption notices, checkpoints). */
  broadcast(event: ServerEvent): void {
    const frame = JSON.stringify(event);
    for (const client of this.#clients.values()) client.send(frame);
  }

  /** The job's state changed: every client gets a status event. */
  notifyStatus(status: JobStatus): void {
    for (const client of this.#clients.values()) client.pushStatus(status);
  }

  /** Idempotent: closes every websocket (close frame, then cut after a grace) and the listener. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(): Promise<void> {
    if (this.#pingTimer) clearInterval(this.#pingTimer);
    await this.#letFollowersFinish();
    const sockets = [...this.#clients.keys()];
    for (const ws of sockets) ws.close(1001, 'agent shutting down');
    if (sockets.length > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_GRACE_MS);
        let open = sockets.length;
        for (const ws of sockets) {
          ws.once('close', () => {
            open -= 1;
            if (open === 0) {
              clearTimeout(timer);
              resolve();
            }
          });
        }
      });
      for (const ws of sockets) ws.terminate();
    }
    await this.#app.close();
  }

  /**
   * A client may still be catching up on the log when the agent is asked to exit (another
   * client's shutdown, the watchdog): give it a bounded moment to get its last lines and `end`.
   */
  async #letFollowersFinish(): Promise<void> {
    const deadline = Date.now() + FOLLOWER_DRAIN_MS;
    const behind = () => [...this.#clients.values()].some((c) => c.following);
    while (behind() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  }

  async #setup(): Promise<void> {
    const app = this.#app;
    await app.register(fastifyWebsocket, {
      options: {
        // The upgrade hook below already refused clients without our subprotocol.
        handleProtocols: (protocols) => (protocols.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
        // Requests are small; a huge frame is an attack or a bug.
        maxPayload: 1024 * 1024,
        perMessageDeflate: false,
      },
    });

    const tokenOk = createTokenCheck(this.#o.token);
    // Every route, and the websocket upgrade before it happens.
    app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      if (tokenOk(request.headers.authorization)) return;
      request.log.warn({ url: redactUrl(request.url), ip: request.ip }, 'rejected request without a valid token');
      return await reply.code(401).send({ code: 'SPOTCTL_UNAUTHORIZED', message: 'missing or wrong bearer token' });
    });

    app.get(HEALTH_PATH, async () => this.health());
    // fastify's own 404 logs the raw URL, query string and all.
    app.setNotFoundHandler(async (request: FastifyRequest, reply: FastifyReply) => {
      const url = redactUrl(request.url);
      request.log.info({ url }, 'no such route');
      return await reply.code(404).send({ code: 'SPOTCTL_BAD_REQUEST', message: `no route ${request.method} ${url}` });
    });

    app.route({
      method: 'GET',
      url: WS_PATH,
      onRequest: async (request: FastifyRequest, reply: FastifyReply) => {
        if (!request.ws) return;
        const offered = String(request.headers['sec-websocket-protocol'] ?? '')
          .split(',')
          .map((p) => p.trim())
          .filter(Boolean);
        if (offered.includes(WS_SUBPROTOCOL)) return;
        // A different version gets its own code so the controller can say "update the agent".
        return await reply.code(400).send({
          code: offered.some((p) => p.startsWith('spotctl.')) ? 'SPOTCTL_AGENT_VERSION' : 'SPOTCTL_BAD_REQUEST',
          message: `this agent speaks websocket subprotocol ${WS_SUBPROTOCOL} (protocol v${PROTOCOL_VERSION}); offered: ${offered.join(', ') || 'none'}`,
        });
      },
      handler: async (_request: FastifyRequest, reply: FastifyReply) =>
        await reply
          .code(426)
          .send({ code: 'SPOTCTL_BAD_REQUEST', message: `${WS_PATH} is a websocket endpoint (subprotocol ${WS_SUBPROTOCOL})` }),
      wsHandler: (socket: WebSocket, request: FastifyRequest) => this.#onConnection(socket, request),
    });
  }

  async #listen(): Promise<void> {
    await this.#app.listen({ host: this.#o.host, port: this.#o.port });
    const address = this.#app.server.address();
    if (address === null || typeof address === 'string') throw new Error(`unexpected server address ${String(address)}`);
    this.#address = { host: isIP(address.address) ? address.address : this.#o.host, port: address.port };
    this.#pingTimer = setInterval(() => this.#pingAll(), this.#o.pingIntervalMs ?? PING_INTERVAL_MS);
    this.#pingTimer.unref();
  }

  #onConnection(ws: WebSocket, request: FastifyRequest): void {
    const id = this.#nextClientId++;
    const log = this.#log.child({ client: id });
    const connection = new ClientConnection(id, ws, {
      logs: this.#o.logs,
      job: this.#o.job,
      logger: log,
      health: () => this.health(),
      requestShutdown: () => this.#o.onShutdownRequested(),
      ...(this.#o.onCredentials ? { onCredentials: this.#o.onCredentials } : {}),
    });
    this.#clients.set(ws, connection);
    log.info({ ip: request.ip, clients: this.#clients.size }, 'client connected');
    this.#o.onClientsChanged?.(this.#clients.size);
    ws.once('close', (code: number, reason: Buffer) => {
      connection.detach();
      this.#clients.delete(ws);
      log.info({ code, reason: reason.toString(), clients: this.#clients.size }, 'client disconnected');
      this.#o.onClientsChanged?.(this.#clients.size);
    });
    connection.send(
      JSON.stringify({
        type: 'event',
        event: 'hello',
        protocolVersion: PROTOCOL_VERSION,
        agentVersion: this.#o.agentVersion,
        buildId: this.#o.buildId,
        runId: this.#o.runId,
        gpus: this.#o.gpus ?? [],
      }),
    );
  }

  #pingAll(): void {
    for (const [ws, client] of this.#clients) {
      if (client.ping()) continue;
      this.#log.warn({ client: client.id }, 'client did not answer the last ping; disconnecting it');
      ws.terminate();
    }
  }
}
