/**
 * The instance metadata service a rehearsal (`spotctl run --simulate-interruption`) polls, speaking
 * IMDSv2 the way EC2 does for the parts the agent reads. Modelled on AWS's own mock,
 * amazon-ec2-metadata-mock, with what it gets loose made strict:
 *
 * - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds`, an integer 1–21600
 *   (else 400), and is refused with 403 when it carries `X-Forwarded-For` (it came through a proxy);
 *   the token answer echoes the TTL header. Other methods on that path get 405.
 * - Every GET needs a live token (401 without one, with an unknown one or an expired one).
 * - `meta-data/spot/instance-action` is 404 until an interruption is scheduled, then 200 with
 *   `{"action":"terminate","time":"2026-11-22T10:00:00Z"}`: UTC, whole seconds, a fixed time two
 *   minutes after the notice appeared (the mock recomputes it on every request; EC2 does not).
 *   Hibernation has no warning: its time is the notice time.
 * - Everything else is 404.
 *
 * Only this ships on instances. Tests extend it (test/helpers/imds-emulator.ts: instance identity,
 * rebalance recommendations, credentials, faults, request logs) through the protected `authorized`
 * and `serve` steps. Only `node:http`: the agent bundles this for rehearsal mode.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { InstanceAction } from '@spotctl/shared';
import { IMDS_MAX_TOKEN_TTL_S, IMDS_TOKEN_HEADER, IMDS_TOKEN_PATH, IMDS_TOKEN_TTL_HEADER } from './imds-client.ts';

export type SpotAction = InstanceAction['action'];

export interface ImdsEmulatorOptions {
  /** Decides token expiry and notice times; injectable so tests expire tokens without sleeping. @default Date */
  clock?: { now(): number };
}

export interface ListenOptions {
  /** `169.254.169.254` inside a network namespace plays the real address. @default '127.0.0.1' */
  host?: string;
  /** @default 0 */
  port?: number;
}

export interface ScheduleInterruptionOptions {
  /** @default 'terminate' */
  action?: SpotAction;
  /** The notice appears this long from now. @default 0 */
  inMs?: number;
  /** Notice → `time` (when EC2 acts). @default 120000, but 0 for hibernate */
  leadMs?: number;
}

export interface ScheduledInterruption {
  action: SpotAction;
  /** Emulator-clock ms when the notice starts being served. */
  noticeAt: number;
  /** The `time` field served: noticeAt + leadMs, whole seconds, UTC. */
  time: string;
}

const DEFAULT_NOTICE_LEAD_MS = 120_000;
const INSTANCE_ACTION = '/latest/meta-data/spot/instance-action';

/** ISO 8601 UTC without milliseconds, as IMDS writes times. */
export function imdsTime(epochMs: number): string {
  return new Date(Math.floor(epochMs / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The HTML error page the service answers errors with. */
export function imdsErrorPage(status: number, title: string = STATUS_TEXT[status] ?? 'Error'): string {
  return `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
\t"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>${status} - ${title}</title>
 </head>
 <body>
  <h1>${status} - ${title}</h1>
 </body>
</html>
`;
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  500: 'Internal Server Error',
};

export class ImdsEmulator implements AsyncDisposable {
  protected readonly clock: { now(): number };
  /** token → emulator-clock ms it expires at. */
  protected readonly tokens = new Map<string, number>();
  #interruption: ScheduledInterruption | undefined;
  #server: http.Server | undefined;
  #url: string | undefined;
  #closed = false;

  constructor(options: ImdsEmulatorOptions = {}) {
    this.clock = options.clock ?? Date;
  }

  /** Base URL while listening, e.g. `http://127.0.0.1:40123`. */
  get url(): string {
    if (this.#url === undefined) throw new Error('the metadata emulator is not listening');
    return this.#url;
  }

  get port(): number {
    return (this.#server?.address() as AddressInfo | null)?.port ?? 0;
  }

  get interruption(): ScheduledInterruption | undefined {
    return this.#interruption;
  }

  /** Starts serving; after `stop()` it may listen again (state, tokens and schedules are kept). */
  async listen(options: ListenOptions = {}): Promise<string> {
    if (this.#closed) throw new Error('the metadata emulator is closed');
    if (this.#server) throw new Error(`the metadata emulator is already listening on ${this.#url}`);
    const host = options.host ?? '127.0.0.1';
    const server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port: options.port ?? 0 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#server = server;
    const { port } = server.address() as AddressInfo;
    const shownHost = host.includes(':') ? `[${host}]` : host;
    this.#url = port === 80 ? `http://${shownHost}` : `http://${shownHost}:${port}`;
    return this.#url;
  }

  /** Stops listening and drops open connections (clients see refused connections); may listen again. */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    this.#url = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** Stops for good. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.stop();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Serves an interruption notice from `inMs` from now on; replaces an earlier one. */
  scheduleInterruption(options: ScheduleInterruptionOptions = {}): ScheduledInterruption {
    const action = options.action ?? 'terminate';
    const inMs = Math.max(0, options.inMs ?? 0);
    const leadMs = Math.max(0, options.leadMs ?? (action === 'hibernate' ? 0 : DEFAULT_NOTICE_LEAD_MS));
    const noticeAt = this.clock.now() + inMs;
    this.#interruption = { action, noticeAt, time: imdsTime(noticeAt + leadMs) };
    return { ...this.#interruption };
  }

  /** Back to 404 (EC2 does not do this; tests and repeated rehearsals do). */
  clearInterruption(): void {
    this.#interruption = undefined;
  }

  /** One request: the token endpoint, the method and token checks, then `serve`. */
  protected handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    // Drain any body so the keep-alive connection stays usable.
    req.resume();
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    const now = this.clock.now();

    if (path === IMDS_TOKEN_PATH) {
      if (method !== 'PUT') return this.fail(res, 405);
      // EC2 refuses token requests that went through a proxy, so a container behind one can't get in.
      if (req.headers['x-forwarded-for'] !== undefined) return this.fail(res, 403);
      const ttlText = req.headers[IMDS_TOKEN_TTL_HEADER];
      const ttl = typeof ttlText === 'string' && /^\d+$/.test(ttlText.trim()) ? Number(ttlText.trim()) : NaN;
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > IMDS_MAX_TOKEN_TTL_S) return this.fail(res, 400);
      const token = randomBytes(32).toString('base64');
      this.#pruneTokens(now);
      this.tokens.set(token, now + ttl * 1000);
      return this.send(res, 200, token, { [IMDS_TOKEN_TTL_HEADER]: String(ttl) });
    }

    if (method !== 'GET' && method !== 'HEAD') return this.fail(res, 405);
    const tokenHeader = req.headers[IMDS_TOKEN_HEADER];
    if (!this.authorized(typeof tokenHeader === 'string' ? tokenHeader : undefined, now)) return this.fail(res, 401);
    this.serve(path, now, res);
  }

  /** IMDSv2 only: a token this service issued that has not expired. */
  protected authorized(token: string | undefined, now: number): boolean {
    if (token === undefined) return false;
    const expiresAt = this.tokens.get(token);
    if (expiresAt !== undefined && now < expiresAt) return true;
    this.tokens.delete(token);
    return false;
  }

  /** Answers an authorized GET. */
  protected serve(path: string, now: number, res: http.ServerResponse): void {
    const s = this.#interruption;
    if (path !== INSTANCE_ACTION || !s || now < s.noticeAt) return this.fail(res, 404);
    this.send(res, 200, JSON.stringify({ action: s.action, time: s.time }));
  }

  protected send(res: http.ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), server: 'EC2ws', ...headers });
    res.end(body);
  }

  protected fail(res: http.ServerResponse, status: number): void {
    this.send(res, status, imdsErrorPage(status), { 'content-type': 'text/html' });
  }

  #pruneTokens(now: number): void {
    // Bounded memory for clients that fetch a token per request (the SDK's way).
    if (this.tokens.size < 1000) return;
    for (const [token, expiresAt] of this.tokens) if (now >= expiresAt) this.tokens.delete(token);
  }
}
