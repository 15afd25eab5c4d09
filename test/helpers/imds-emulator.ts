/**
 * The agent's metadata emulator (the one `--simulate-interruption` runs on the instance) with what
 * only tests and benchmarks need, so none of it ships:
 *
 * - instance identity (`instance-id`, `instance-type`, `placement/*`) and the legacy
 *   `spot/termination-time` item;
 * - `meta-data/events/recommendations/rebalance`: 404 until recommended, then `{"noticeTime":...}`;
 * - an instance profile's credentials under `iam/security-credentials[-extended]/<role>`;
 * - `httpTokens: 'optional'` (IMDSv1 allowed; a token that is sent must still be valid);
 * - faults (a status, a body, a delay), token revocation, request counts and a request log.
 */
import type http from 'node:http';
import type { Socket } from 'node:net';
import {
  IMDS_TOKEN_PATH,
  ImdsEmulator,
  imdsErrorPage,
  imdsTime,
  type ImdsEmulatorOptions,
  type ScheduleInterruptionOptions,
  type ScheduledInterruption,
} from '@spotctl/agent';

export {
  imdsTime,
  type ListenOptions,
  type ScheduleInterruptionOptions,
  type ScheduledInterruption,
  type SpotAction,
} from '@spotctl/agent';

export interface TestImdsEmulatorOptions extends ImdsEmulatorOptions {
  /** @default 'i-0123456789abcdef0' */
  instanceId?: string;
  /** @default 'us-east-1a' */
  availabilityZone?: string;
  /** @default 'm5.large' */
  instanceType?: string;
  /** `required` is IMDSv2 only (how spotctl launches); `optional` also answers token-less GETs. @default 'required' */
  httpTokens?: 'required' | 'optional';
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
  /** TCP connections that made requests: stays at 1 for a keep-alive client. */
  connections: number;
  /** 200s with a role's credentials (instance profile). */
  credentialsServed: number;
}

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

const MAX_LOG_ENTRIES = 10_000;
const INSTANCE_ACTION = '/latest/meta-data/spot/instance-action';
const TERMINATION_TIME = '/latest/meta-data/spot/termination-time';
const REBALANCE = '/latest/meta-data/events/recommendations/rebalance';
const IAM_INFO = '/latest/meta-data/iam/info';
const IAM_CREDENTIALS = ['/latest/meta-data/iam/security-credentials/', '/latest/meta-data/iam/security-credentials-extended/'];

export class TestImdsEmulator extends ImdsEmulator {
  readonly #httpTokens: 'required' | 'optional';
  readonly #static: Map<string, string>;
  readonly #log: ImdsRequestRecord[] = [];
  readonly #counts: ImdsRequestCounts = {
    total: 0,
    tokenPuts: 0,
    gets: 0,
    unauthorized: 0,
    noticesServed: 0,
    connections: 0,
    credentialsServed: 0,
  };
  readonly #sockets = new WeakSet<Socket>();
  readonly #faults: Array<Required<ImdsFault>> = [];
  readonly #pending = new Set<NodeJS.Timeout>();
  /** Emulator-clock ms each open request arrived at, for the log. */
  readonly #arrivedAt = new WeakMap<http.ServerResponse, number>();
  #rebalanceAt: number | undefined;
  #profile: EmulatedInstanceProfile | undefined;
  #noticeServedAt: number | undefined;

  constructor(options: TestImdsEmulatorOptions = {}) {
    super(options);
    this.#httpTokens = options.httpTokens ?? 'required';
    const az = options.availabilityZone ?? 'us-east-1a';
    this.#static = new Map([
      ['/latest/meta-data/instance-id', options.instanceId ?? 'i-0123456789abcdef0'],
      ['/latest/meta-data/instance-type', options.instanceType ?? 'm5.large'],
      ['/latest/meta-data/placement/availability-zone', az],
      ['/latest/meta-data/placement/region', az.replace(/[a-z]$/, '')],
    ]);
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

  /** Number of tokens still valid now. */
  get liveTokens(): number {
    const now = this.clock.now();
    return [...this.tokens.values()].filter((expiresAt) => now < expiresAt).length;
  }

  override async stop(): Promise<void> {
    for (const t of this.#pending) clearTimeout(t);
    this.#pending.clear();
    await super.stop();
  }

  override scheduleInterruption(options: ScheduleInterruptionOptions = {}): ScheduledInterruption {
    this.#noticeServedAt = undefined;
    return super.scheduleInterruption(options);
  }

  override clearInterruption(): void {
    this.#noticeServedAt = undefined;
    super.clearInterruption();
  }

  /** Serves a rebalance recommendation from `inMs` from now on; returns its `noticeTime`. */
  recommendRebalance(options: { inMs?: number } = {}): string {
    this.#rebalanceAt = this.clock.now() + Math.max(0, options.inMs ?? 0);
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
      body: fault.body ?? imdsErrorPage(fault.status ?? 500, 'Internal Server Error'),
      delayMs: fault.delayMs ?? 0,
      times: fault.times ?? 1,
    });
  }

  /** Invalidates every token, as a restarted metadata service would. */
  revokeTokens(): void {
    this.tokens.clear();
  }

  /** Requests recorded for `path` (token PUTs are `/latest/api/token`). */
  countFor(path: string, method?: string): number {
    return this.#log.filter((r) => r.path === path && (method === undefined || r.method === method)).length;
  }

  protected override handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    const at = this.clock.now();
    this.#counts.total++;
    if (!this.#sockets.has(req.socket)) {
      this.#sockets.add(req.socket);
      this.#counts.connections++;
    }
    this.#arrivedAt.set(res, at);

    const fault = this.#faults.find((f) => f.path === path);
    if (fault) {
      req.resume();
      if (--fault.times <= 0) this.#faults.splice(this.#faults.indexOf(fault), 1);
      if (fault.delayMs > 0) {
        const t = setTimeout(() => {
          this.#pending.delete(t);
          if (!res.destroyed) this.send(res, fault.status, fault.body);
        }, fault.delayMs);
        this.#pending.add(t);
      } else {
        this.send(res, fault.status, fault.body);
      }
      return;
    }
    if (path === IMDS_TOKEN_PATH) {
      if (method === 'PUT') this.#counts.tokenPuts++;
    } else if (method === 'GET' || method === 'HEAD') {
      this.#counts.gets++;
    }
    super.handle(req, res);
  }

  /** Every answer goes through here: recorded as it is sent, so a client that has it sees it counted. */
  protected override send(res: http.ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    const req = res.req;
    this.#record({
      at: this.#arrivedAt.get(res) ?? this.clock.now(),
      method: req.method ?? 'GET',
      path: (req.url ?? '/').split('?')[0] ?? '/',
      status,
    });
    super.send(res, status, body, headers);
  }

  protected override authorized(token: string | undefined, now: number): boolean {
    if (token === undefined && this.#httpTokens === 'optional') return true;
    return super.authorized(token, now);
  }

  protected override serve(path: string, now: number, res: http.ServerResponse): void {
    const staticValue = this.#static.get(path);
    if (staticValue !== undefined) return this.send(res, 200, staticValue);

    if (path === TERMINATION_TIME) {
      const s = this.interruption;
      // The legacy item only exists for terminations.
      return s && now >= s.noticeAt && s.action === 'terminate' ? this.send(res, 200, s.time) : this.fail(res, 404);
    }

    const credentialsBase = IAM_CREDENTIALS.find((p) => path.startsWith(p) || path === p.slice(0, -1));
    if (path === IAM_INFO || credentialsBase !== undefined) return this.#serveCredentials(path, credentialsBase, now, res);

    if (path === REBALANCE) {
      if (this.#rebalanceAt === undefined || now < this.#rebalanceAt) return this.fail(res, 404);
      return this.send(res, 200, JSON.stringify({ noticeTime: imdsTime(this.#rebalanceAt) }));
    }

    super.serve(path, now, res);
  }

  #serveCredentials(path: string, base: string | undefined, now: number, res: http.ServerResponse): void {
    const profile = this.#profile;
    if (!profile) return this.fail(res, 404);
    const updated = imdsTime(now);
    if (base === undefined) {
      return this.send(
        res,
        200,
        JSON.stringify({
          Code: 'Success',
          LastUpdated: updated,
          InstanceProfileArn: profile.arn,
          InstanceProfileId: 'AIPAEMULATOR0000000',
        }),
      );
    }
    const name = path.length > base.length ? path.slice(base.length) : '';
    if (name === '') return this.send(res, 200, profile.roleName);
    if (name !== profile.roleName) return this.fail(res, 404);
    this.#counts.credentialsServed++;
    const accountId = /^arn:[^:]+:iam::(\d+):/.exec(profile.arn)?.[1];
    this.send(
      res,
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

  #record(entry: ImdsRequestRecord): void {
    this.#log.push(entry);
    if (entry.status === 401) this.#counts.unauthorized++;
    if (entry.status === 200 && entry.path === INSTANCE_ACTION && entry.method !== 'PUT') {
      this.#counts.noticesServed++;
      this.#noticeServedAt ??= entry.at;
    }
    if (this.#log.length > MAX_LOG_ENTRIES) this.#log.splice(0, this.#log.length - MAX_LOG_ENTRIES);
  }
}
