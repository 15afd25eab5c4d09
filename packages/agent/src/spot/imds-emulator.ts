/**
 * An instance metadata service that speaks IMDSv2 the way EC2 does, for rehearsals
 * (`spotctl run --simulate-interruption`) and tests. Modelled on AWS's own mock,
 * amazon-ec2-metadata-mock, with what it gets loose made strict:
 *
 * - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds`, an integer 1–21600
 *   (else 400), and is refused with 403 when it carries `X-Forwarded-For` (it came through a proxy);
 *   the token answer echoes the TTL header. Other methods on that path get 405.
 * - Every GET needs a live token (401 without one, with an unknown one or an expired one) unless
 *   `httpTokens: 'optional'` (IMDSv1 allowed; a token that is sent must still be valid).
 * - `meta-data/spot/instance-action` is 404 until an interruption is scheduled, then 200 with
 *   `{"action":"terminate","time":"2026-11-22T10:00:00Z"}`: UTC, whole seconds, a fixed time two
 *   minutes after the notice appeared (the mock recomputes it on every request; EC2 does not).
 *   Hibernation has no warning: its time is the notice time.
 * - `meta-data/events/recommendations/rebalance` is 404 until recommended, then `{"noticeTime":...}`.
 *
 * Only `node:http`: the agent bundles this for rehearsal mode.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { InstanceAction } from '@spotctl/shared';
import { IMDS_MAX_TOKEN_TTL_S, IMDS_TOKEN_HEADER, IMDS_TOKEN_PATH, IMDS_TOKEN_TTL_HEADER } from './imds-client.ts';

export type SpotAction = InstanceAction['action'];

export interface ImdsEmulatorOptions {
  /** @default 'i-0123456789abcdef0' */
  instanceId?: string;
  /** @default 'us-east-1a' */
  availabilityZone?: string;
  /** @default 'm5.large' */
  instanceType?: string;
  /** `required` is IMDSv2 only (how spotctl launches); `optional` also answers token-less GETs. @default 'required' */
  httpTokens?: 'required' | 'optional';
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

export interface ImdsFault {
  /** Request path the fault applies to, e.g. `/latest/meta-data/spot/instance-action`. */
  path: string;
  /** Status to answer with. @default 500 */
  status?: number;
  /** @default an HTML error page, like the service's */
  body?: string;
  /** Answer only after this long (real time), to exercise client timeouts. @default 0 */
  delayMs?: number;
  /** How many requests it hits. @default 1 */
  times?: number;
}

export interface ImdsRequestRecord {
  /** Emulator-clock ms. */
  at: number;
  method: string;
  path: string;
  status: number;
}

export interface ImdsRequestCounts {
  total: number;
  tokenPuts: number;
  gets: number;
  /** Answers with 401. */
  unauthorized: number;
  /** 200s on instance-action. */
  noticesServed: number;
  /** TCP connections accepted: stays at 1 for a keep-alive client. */
  connections: number;
  /** 200s with a role's credentials (instance profile). */
  credentialsServed: number;
}

const DEFAULT_NOTICE_LEAD_MS = 120_000;
const MAX_LOG_ENTRIES = 10_000;
const INSTANCE_ACTION = '/latest/meta-data/spot/instance-action';
const TERMINATION_TIME = '/latest/meta-data/spot/termination-time';
const REBALANCE = '/latest/meta-data/events/recommendations/rebalance';

/** ISO 8601 UTC without milliseconds, as IMDS writes times. */
export function imdsTime(epochMs: number): string {
  return new Date(Math.floor(epochMs / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function errorPage(status: number, title: string): string {
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
};

/** The role an instance profile gives the instance, and the credentials served for it. */
export interface EmulatedInstanceProfile {
  /** `arn:aws:iam::123456789012:instance-profile/…` */
  arn: string;
  roleName: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  /** @default six hours from now */
  expiration?: string;
}

const IAM_INFO = '/latest/meta-data/iam/info';
const IAM_CREDENTIALS = ['/latest/meta-data/iam/security-credentials/', '/latest/meta-data/iam/security-credentials-extended/'];

export class ImdsEmulator implements AsyncDisposable {
  readonly #clock: { now(): number };
  readonly #httpTokens: 'required' | 'optional';
  readonly #static: Map<string, string>;
  /** token → emulator-clock ms it expires at. */
  readonly #tokens = new Map<string, number>();
  readonly #log: ImdsRequestRecord[] = [];
  readonly #counts: ImdsRequestCounts = { total: 0, tokenPuts: 0, gets: 0, unauthorized: 0, noticesServed: 0, connections: 0, credentialsServed: 0 };
  readonly #faults: Array<Required<ImdsFault>> = [];
  readonly #pending = new Set<NodeJS.Timeout>();
  #interruption: ScheduledInterruption | undefined;
  #rebalanceAt: number | undefined;
  #profile: EmulatedInstanceProfile | undefined;
  #noticeServedAt: number | undefined;
  #server: http.Server | undefined;
  #url: string | undefined;
  #closed = false;

  constructor(options: ImdsEmulatorOptions = {}) {
    this.#clock = options.clock ?? Date;
    this.#httpTokens = options.httpTokens ?? 'required';
    const az = options.availabilityZone ?? 'us-east-1a';
    this.#static = new Map([
      ['/latest/meta-data/instance-id', options.instanceId ?? 'i-0123456789abcdef0'],
      ['/latest/meta-data/instance-type', options.instanceType ?? 'm5.large'],
      ['/latest/meta-data/placement/availability-zone', az],
      ['/latest/meta-data/placement/region', az.replace(/[a-z]$/, '')],
    ]);
  }

  /** Base URL while listening, e.g. `http://127.0.0.1:40123`. */
  get url(): string {
    if (this.#url === undefined) throw new Error('the metadata emulator is not listening');
    return this.#url;
  }

  get port(): number {
    return (this.#server?.address() as AddressInfo | null)?.port ?? 0;
  }

  get requests(): ImdsRequestCounts {
    return { ...this.#counts };
  }

  /** The last requests (at most 10 000), oldest first. */
  get requestLog(): readonly ImdsRequestRecord[] {
    return [...this.#log];
  }

  /** Emulator-clock ms of the first 200 on instance-action since the interruption was scheduled. */
  get noticeServedAt(): number | undefined {
    return this.#noticeServedAt;
  }

  get interruption(): ScheduledInterruption | undefined {
    return this.#interruption;
  }

  /** Number of tokens still valid now. */
  get liveTokens(): number {
    const now = this.#clock.now();
    return [...this.#tokens.values()].filter((expiresAt) => now < expiresAt).length;
  }

  /** Starts serving; after `stop()` it may listen again (state, tokens and schedules are kept). */
  async listen(options: ListenOptions = {}): Promise<string> {
    if (this.#closed) throw new Error('the metadata emulator is closed');
    if (this.#server) throw new Error(`the metadata emulator is already listening on ${this.#url}`);
    const host = options.host ?? '127.0.0.1';
    const server = http.createServer((req, res) => this.#handle(req, res));
    server.on('connection', () => void this.#counts.connections++);
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
    for (const t of this.#pending) clearTimeout(t);
    this.#pending.clear();
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
    const noticeAt = this.#clock.now() + inMs;
    this.#interruption = { action, noticeAt, time: imdsTime(noticeAt + leadMs) };
    this.#noticeServedAt = undefined;
    return { ...this.#interruption };
  }

  /** Back to 404 (EC2 does not do this; tests and repeated rehearsals do). */
  clearInterruption(): void {
    this.#interruption = undefined;
    this.#noticeServedAt = undefined;
  }

  /** Serves a rebalance recommendation from `inMs` from now on; returns its `noticeTime`. */
  recommendRebalance(options: { inMs?: number } = {}): string {
    this.#rebalanceAt = this.#clock.now() + Math.max(0, options.inMs ?? 0);
    return imdsTime(this.#rebalanceAt);
  }

  clearRebalance(): void {
    this.#rebalanceAt = undefined;
  }

  /**
   * The instance profile whose role's credentials `iam/security-credentials/<role>` serves, as
   * EC2 does for an instance launched with one; undefined (no profile) makes those paths 404.
   */
  setInstanceProfile(profile: EmulatedInstanceProfile | undefined): void {
    this.#profile = profile ? { ...profile } : undefined;
  }

  /** Answers the next `times` requests to `path` with `status`/`body`, optionally late. */
  injectFault(fault: ImdsFault): void {
    this.#faults.push({
      path: fault.path,
      status: fault.status ?? 500,
      body: fault.body ?? errorPage(fault.status ?? 500, 'Internal Server Error'),
      delayMs: fault.delayMs ?? 0,
      times: fault.times ?? 1,
    });
  }

  /** Invalidates every token, as a restarted metadata service would. */
  revokeTokens(): void {
    this.#tokens.clear();
  }

  /** Requests recorded for `path` (token PUTs are `/latest/api/token`). */
  countFor(path: string, method?: string): number {
    return this.#log.filter((r) => r.path === path && (method === undefined || r.method === method)).length;
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    // Drain any body so the keep-alive connection stays usable.
    req.resume();
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    const now = this.#clock.now();
    this.#counts.total++;

    const send = (status: number, body: string, headers: Record<string, string> = {}): void => {
      this.#record({ at: now, method, path, status });
      if (status === 401) this.#counts.unauthorized++;
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), server: 'EC2ws', ...headers });
      res.end(body);
    };
    const fail = (status: number): void => send(status, errorPage(status, STATUS_TEXT[status] ?? 'Error'), { 'content-type': 'text/html' });

    const fault = this.#faults.find((f) => f.path === path);
    if (fault) {
      if (--fault.times <= 0) this.#faults.splice(this.#faults.indexOf(fault), 1);
      if (fault.delayMs > 0) {
        const t = setTimeout(() => {
          this.#pending.delete(t);
          if (!res.destroyed) send(fault.status, fault.body);
        }, fault.delayMs);
        this.#pending.add(t);
      } else {
        send(fault.status, fault.body);
      }
      return;
    }

    if (path === IMDS_TOKEN_PATH) {
      if (method !== 'PUT') return fail(405);
      this.#counts.tokenPuts++;
      // EC2 refuses token requests that went through a proxy, so a container behind one can't get in.
      if (req.headers['x-forwarded-for'] !== undefined) return fail(403);
      const ttlText = req.headers[IMDS_TOKEN_TTL_HEADER];
      const ttl = typeof ttlText === 'string' && /^\d+$/.test(ttlText.trim()) ? Number(ttlText.trim()) : NaN;
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > IMDS_MAX_TOKEN_TTL_S) return fail(400);
      const token = randomBytes(32).toString('base64');
      this.#pruneTokens(now);
      this.#tokens.set(token, now + ttl * 1000);
      return send(200, token, { [IMDS_TOKEN_TTL_HEADER]: String(ttl) });
    }

    if (method !== 'GET' && method !== 'HEAD') return fail(405);
    this.#counts.gets++;
    const tokenHeader = req.headers[IMDS_TOKEN_HEADER];
    const token = typeof tokenHeader === 'string' ? tokenHeader : undefined;
    if (token === undefined) {
      if (this.#httpTokens === 'required') return fail(401);
    } else {
      const expiresAt = this.#tokens.get(token);
      if (expiresAt === undefined || now >= expiresAt) {
        this.#tokens.delete(token);
        return fail(401);
      }
    }

    const staticValue = this.#static.get(path);
    if (staticValue !== undefined) return send(200, staticValue);

    if (path === INSTANCE_ACTION || path === TERMINATION_TIME) {
      const s = this.#interruption;
      if (!s || now < s.noticeAt) return fail(404);
      if (path === TERMINATION_TIME) {
        // The legacy item only exists for terminations.
        return s.action === 'terminate' ? send(200, s.time) : fail(404);
      }
      this.#counts.noticesServed++;
      this.#noticeServedAt ??= now;
      return send(200, JSON.stringify({ action: s.action, time: s.time }));
    }

    const profile = this.#profile;
    if (path === IAM_INFO || IAM_CREDENTIALS.some((p) => path.startsWith(p) || path === p.slice(0, -1))) {
      if (!profile) return fail(404);
      const updated = imdsTime(now);
      if (path === IAM_INFO) {
        return send(200, JSON.stringify({ Code: 'Success', LastUpdated: updated, InstanceProfileArn: profile.arn, InstanceProfileId: 'AIPAEMULATOR0000000' }));
      }
      const base = IAM_CREDENTIALS.find((p) => path.startsWith(p) || path === p.slice(0, -1)) as string;
      const name = path.length > base.length ? path.slice(base.length) : '';
      if (name === '') return send(200, profile.roleName);
      if (name !== profile.roleName) return fail(404);
      this.#counts.credentialsServed++;
      const accountId = /^arn:[^:]+:iam::(\d+):/.exec(profile.arn)?.[1];
      return send(
        200,
        JSON.stringify({
          Code: 'Success',
          LastUpdated: updated,
          Type: 'AWS-HMAC',
          AccessKeyId: profile.accessKeyId,
          SecretAccessKey: profile.secretAccessKey,
          Token: profile.sessionToken,
          Expiration: profile.expiration ?? imdsTime(now + 6 * 3_600_000),
          ...(base.includes('extended') && accountId ? { AccountId: accountId } : {}),
        }),
      );
    }

    if (path === REBALANCE) {
      if (this.#rebalanceAt === undefined || now < this.#rebalanceAt) return fail(404);
      return send(200, JSON.stringify({ noticeTime: imdsTime(this.#rebalanceAt) }));
    }

    return fail(404);
  }

  #record(entry: ImdsRequestRecord): void {
    this.#log.push(entry);
    if (this.#log.length > MAX_LOG_ENTRIES) this.#log.splice(0, this.#log.length - MAX_LOG_ENTRIES);
  }

  #pruneTokens(now: number): void {
    // Bounded memory for clients that fetch a token per request (the SDK's way).
    if (this.#tokens.size < 1000) return;
    for (const [token, expiresAt] of this.#tokens) if (now >= expiresAt) this.#tokens.delete(token);
  }
}
