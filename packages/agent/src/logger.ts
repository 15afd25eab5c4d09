/** The agent's one pino root logger: JSON lines to `<stateDir>/agent.log` and to stdout. */
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { AGENT_FILES } from '@spotctl/shared';
import type { LogLevel } from './config.ts';

export type { Logger } from 'pino';

/** Where secrets may show up in log objects; pino replaces them with "[Redacted]". */
const REDACT_PATHS = [
  'token',
  '*.token',
  'config.token',
  'req.headers.authorization',
  'headers.authorization',
  // Forwarded S3 credentials (request `credentials`), wherever they might be passed to a log call.
  'secretAccessKey',
  'sessionToken',
  '*.secretAccessKey',
  '*.sessionToken',
  'params.secretAccessKey',
  'params.sessionToken',
];

/**
 * A request URL as it may be logged: the path, and of the query only its keys. A client that puts
 * a token in the query string (`?token=...`) instead of the Authorization header must not leave it
 * in agent.log.
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const keys = [...new URLSearchParams(url.slice(q + 1)).keys()];
  return `${url.slice(0, q)}?${keys.map((k) => `${encodeURIComponent(k)}=[Redacted]`).join('&')}`;
}

/** fastify's request serializer, with the query string redacted (fastify lets ours win over its own). */
function serializeRequest(req: { method?: string; url?: string; ip?: string; socket?: { remotePort?: number } }): Record<string, unknown> {
  return {
    method: req.method,
    url: req.url === undefined ? undefined : redactUrl(req.url),
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  };
}

export interface AgentLogger {
  logger: Logger;
  /** Flushes and closes the file; the logger must not be used afterwards. */
  close(): void;
}

export interface CreateLoggerOptions {
  stateDir: string;
  /** @default 'info' */
  level?: LogLevel;
  /** Also write to stdout. @default true */
  stdout?: boolean;
}

export function createAgentLogger(options: CreateLoggerOptions): AgentLogger {
  const level = options.level ?? 'info';
  // Synchronous destinations and multistream run on the main thread: pino transports use worker
  // threads that load files by path, which does not survive the single-file esbuild bundle. The
  // agent logs little, so the cost of sync writes does not matter, and nothing is lost on exit.
  const file = pino.destination({ dest: path.join(options.stateDir, AGENT_FILES.agentLog), sync: true, append: true, mkdir: true });
  // A full disk must not turn into an 'error' event nobody listens to, which would kill the agent.
  file.on('error', () => undefined);
  let closed = false;
  // Late log calls (a child process event after close) are dropped instead of hitting a closed file.
  const fileEntry = { write: (line: string) => (closed ? undefined : file.write(line)) };
  const streams: pino.StreamEntry<LogLevel>[] = [{ level, stream: fileEntry }];
  const out = options.stdout === false ? undefined : pino.destination({ fd: 1, sync: true });
  // stdout may be a pipe whose reader went away (an ssh session that dropped): the agent must
  // keep running and keep logging to its file.
  out?.on('error', () => undefined);
  if (out) streams.push({ level, stream: out });
  const logger = pino(
    { level, redact: { paths: REDACT_PATHS }, base: { pid: process.pid }, serializers: { req: serializeRequest } },
    pino.multistream(streams),
  );
  return {
    logger,
    close() {
      if (closed) return;
      closed = true;
      file.flushSync();
      file.end();
      // stdout stays open: it belongs to the process, not to us.
      out?.flushSync();
    },
  };
}
