/**
 * A small IMDSv2 client on `node:http`.
 *
 * Written by hand on purpose: the AWS SDK's metadata client (`@aws-sdk/ec2-metadata-service`,
 * `@smithy/credential-provider-imds`) fetches a new session token for every request, which at one
 * poll a second doubles the calls and adds a round trip to every interruption check. Here a token is
 * reused until shortly before it expires (AWS's node-termination-handler does the same: refresh 15 s
 * early, re-fetch on 401), and one keep-alive socket carries all the polls.
 */
import http from 'node:http';

export const DEFAULT_IMDS_ENDPOINT = 'http://169.254.169.254';
/** The variable the AWS SDKs read for the same purpose (the IPv6 endpoint, an emulator). */
export const IMDS_ENDPOINT_ENV = 'AWS_EC2_METADATA_SERVICE_ENDPOINT';
/**
 * The SDKs' switch to keep away from the metadata service. Honoured for the default address only
 * (an explicit endpoint is a deliberate choice): test runs set it, so code that forgot to point
 * at an emulator fails loudly instead of reaching whatever answers at 169.254.169.254.
 */
export const IMDS_DISABLED_ENV = 'AWS_EC2_METADATA_DISABLED';
export const IMDS_TOKEN_HEADER = 'x-aws-ec2-metadata-token';
export const IMDS_TOKEN_TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
export const IMDS_TOKEN_PATH = '/latest/api/token';
/** The longest token AWS hands out (6 hours). */
export const IMDS_MAX_TOKEN_TTL_S = 21_600;
/** A token is replaced this long before it expires, so a poll never races its expiry. */
export const TOKEN_REFRESH_MARGIN_MS = 15_000;

/** Metadata bodies are small (user-data, the largest, is at most 16 KiB); more is a wrong server. */
const MAX_BODY_BYTES = 1024 * 1024;
/** One socket for the 1 s poll, one for a rebalance poll that happens to overlap it. */
const MAX_POOLED_SOCKETS = 2;

export interface ImdsClientOptions {
  /**
   * Base URL of the metadata service.
   * @default process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT ?? 'http://169.254.169.254'
   */
  endpoint?: string;
  /** Lifetime asked for each session token, 1–21600. @default 21600 */
  tokenTtlS?: number;
  /**
   * Budget of one HTTP exchange, connect to last body byte. The service is a link-local hop away
   * and answers in about a millisecond; anything slower is a stuck request, better retried.
   * @default 1000
   */
  timeoutMs?: number;
  /** Epoch ms; injectable so token expiry can be tested without waiting. @default Date.now */
  now?: () => number;
  /** Where the endpoint variable is read from. @default process.env */
  env?: Readonly<Record<string, string | undefined>>;
}

export interface ImdsResponse {
  status: number;
  body: string;
}

export interface ImdsRequestOptions {
  signal?: AbortSignal;
}

/** What a poller needs from a client; lets several pollers share one client (and one token). */
export interface ImdsGetter {
  get(path: string, options?: ImdsRequestOptions): Promise<ImdsResponse>;
}

export type ImdsErrorKind = 'timeout' | 'network' | 'http' | 'closed' | 'disabled';

/** A request that got no usable answer: no connection, too slow, or a token request refused. */
export class ImdsError extends Error {
  readonly kind: ImdsErrorKind;
  /** HTTP status, for `kind: 'http'`. */
  readonly status: number | undefined;

  constructor(kind: ImdsErrorKind, message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ImdsError';
    this.kind = kind;
    this.status = options.status;
  }
}

interface Token {
  value: string;
  /** Epoch ms after which a new token is fetched instead. */
  refreshAt: number;
}

interface RawResponse {
  status: number;
  body: string;
}

/** Resolves the base URL: explicit option, then the SDKs' environment variable, then AWS's address. */
export function resolveImdsEndpoint(endpoint?: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  const chosen = endpoint?.trim() || env[IMDS_ENDPOINT_ENV]?.trim() || DEFAULT_IMDS_ENDPOINT;
  return chosen.replace(/\/+$/, '');
}

export class ImdsClient implements AsyncDisposable, ImdsGetter {
  /** The resolved base URL, without a trailing slash. */
  readonly endpoint: string;
  readonly tokenTtlS: number;
  readonly timeoutMs: number;
  readonly #hostname: string;
  readonly #port: number;
  readonly #basePath: string;
  readonly #now: () => number;
  readonly #agent: http.Agent;
  readonly #disabled: boolean;
  #token: Token | undefined;
  #tokenRequest: Promise<Token> | undefined;
  #tokenFetches = 0;
  #closed = false;

  constructor(options: ImdsClientOptions = {}) {
    const env = options.env ?? process.env;
    this.endpoint = resolveImdsEndpoint(options.endpoint, env);
    this.#disabled = this.endpoint === DEFAULT_IMDS_ENDPOINT && env[IMDS_DISABLED_ENV]?.trim().toLowerCase() === 'true';
    let url: URL;
    try {
      url = new URL(this.endpoint);
    } catch (e) {
      throw new TypeError(`metadata endpoint is not a URL: ${this.endpoint}`, { cause: e });
    }
    // The metadata service only speaks plain HTTP; an https URL is a configuration mistake.
    if (url.protocol !== 'http:') throw new TypeError(`metadata endpoint must be http://, got ${this.endpoint}`);
    const ttl = options.tokenTtlS ?? IMDS_MAX_TOKEN_TTL_S;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > IMDS_MAX_TOKEN_TTL_S) {
      throw new RangeError(`tokenTtlS must be an integer from 1 to ${IMDS_MAX_TOKEN_TTL_S}, got ${ttl}`);
    }
    this.tokenTtlS = ttl;
    this.timeoutMs = options.timeoutMs ?? 1000;
    // `[fd00:ec2::254]` (the IPv6 endpoint) comes back with brackets that http.request does not want.
    this.#hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.#port = url.port === '' ? 80 : Number(url.port);
    this.#basePath = url.pathname.replace(/\/+$/, '');
    this.#now = options.now ?? Date.now;
    // Idle sockets are dropped before a typical server would drop them (Node also honours the
    // server's Keep-Alive hint), and a reset on a reused socket is retried.
    this.#agent = new http.Agent({ keepAlive: true, maxSockets: MAX_POOLED_SOCKETS, maxFreeSockets: MAX_POOLED_SOCKETS, timeout: 4000 });
  }

  /** How many token PUTs this client made (one per TTL in normal operation). */
  get tokenFetches(): number {
    return this.#tokenFetches;
  }

  /**
   * GETs `path`: relative paths are under `/latest/` (`meta-data/instance-id`), absolute ones are
   * taken as they are. Any HTTP status is returned, not thrown; a 401 is retried once with a fresh
   * token first. Throws `ImdsError` when no answer came (refused, timed out, token refused).
   */
  async get(path: string, options: ImdsRequestOptions = {}): Promise<ImdsResponse> {
    const fullPath = this.#basePath + (path.startsWith('/') ? path : `/latest/${path}`);
    let token = await this.#getToken(options.signal);
    let res = await this.#request('GET', fullPath, { [IMDS_TOKEN_HEADER]: token.value }, options.signal);
    if (res.status === 401) {
      // Expired or revoked early (the service restarted): a new token, and one more try.
      if (this.#token === token) this.#token = undefined;
      token = await this.#getToken(options.signal);
      res = await this.#request('GET', fullPath, { [IMDS_TOKEN_HEADER]: token.value }, options.signal);
    }
    return { status: res.status, body: res.body };
  }

  /** Forgets the cached token; the next request fetches a new one. */
  dropToken(): void {
    this.#token = undefined;
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#token = undefined;
      this.#agent.destroy();
    }
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #getToken(signal: AbortSignal | undefined): Promise<Token> {
    signal?.throwIfAborted();
    const cached = this.#token;
    if (cached && this.#now() < cached.refreshAt) return cached;
    // Concurrent callers share one PUT. It is bounded by timeoutMs and not tied to any one
    // caller's signal; each caller stops waiting on its own signal instead.
    this.#tokenRequest ??= this.#fetchToken().finally(() => {
      this.#tokenRequest = undefined;
    });
    return await withAbort(this.#tokenRequest, signal);
  }

  async #fetchToken(): Promise<Token> {
    const sentAt = this.#now();
    this.#tokenFetches++;
    const res = await this.#request(
      'PUT',
      this.#basePath + IMDS_TOKEN_PATH,
      { [IMDS_TOKEN_TTL_HEADER]: String(this.tokenTtlS) },
      undefined,
    );
    const value = res.body.trim();
    if (res.status !== 200 || value === '') {
      // 403: the PUT went through a proxy (X-Forwarded-For); 404/405: IMDSv2 disabled or not a
      // metadata service; a timeout here usually means a container two hops away (hop limit 1).
      throw new ImdsError('http', `metadata token request failed: HTTP ${res.status}`, { status: res.status });
    }
    const ttlMs = this.tokenTtlS * 1000;
    // Counted from when the PUT was sent, so the estimate errs early. Short TTLs (tests) refresh at
    // half-life instead of never being fresh.
    const token: Token = { value, refreshAt: sentAt + ttlMs - Math.min(TOKEN_REFRESH_MARGIN_MS, ttlMs / 2) };
    if (!this.#closed) this.#token = token;
    return token;
  }

  async #request(
    method: 'GET' | 'PUT',
    path: string,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<RawResponse> {
    // A keep-alive socket the server closed just as we wrote to it: the request never reached the
    // server, so trying again is safe (Node's documented remedy). Each try uses up one stale
    // pooled socket, so the pool size bounds the tries.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#exchange(method, path, headers, signal);
      } catch (e) {
        if (!(e instanceof ReusedSocketReset) || attempt >= MAX_POOLED_SOCKETS) throw e;
      }
    }
  }

  #exchange(method: 'GET' | 'PUT', path: string, headers: Record<string, string>, signal: AbortSignal | undefined): Promise<RawResponse> {
    if (this.#closed) return Promise.reject(new ImdsError('closed', 'metadata client is closed'));
    if (this.#disabled) {
      return Promise.reject(
        new ImdsError(
          'disabled',
          `${IMDS_DISABLED_ENV}=true: not contacting ${DEFAULT_IMDS_ENDPOINT} (set an explicit endpoint to use one)`,
        ),
      );
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<RawResponse>((resolve, reject) => {
      let settled = false;
      const req = http.request({
        agent: this.#agent,
        hostname: this.#hostname,
        port: this.#port,
        method,
        path,
        headers: { ...headers, ...(method === 'PUT' ? { 'content-length': '0' } : {}) },
      });
      const finish = (error: unknown, value?: RawResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (error === undefined) {
          resolve(value as RawResponse);
        } else {
          req.destroy();
          reject(error);
        }
      };
      const onAbort = (): void => finish(signal?.reason ?? new Error('aborted'));
      const timer = setTimeout(
        () => finish(new ImdsError('timeout', `metadata ${method} ${path} timed out after ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (req.reusedSocket && err.code === 'ECONNRESET' && !settled) {
          finish(new ReusedSocketReset(`metadata ${method} ${path} failed: ECONNRESET (reused keep-alive socket)`, err));
          return;
        }
        finish(new ImdsError('network', `metadata ${method} ${path} failed: ${err.code ?? err.message}`, { cause: err }));
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_BODY_BYTES) {
            finish(new ImdsError('network', `metadata ${method} ${path}: response larger than ${MAX_BODY_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => finish(undefined, { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) =>
          finish(new ImdsError('network', `metadata ${method} ${path}: response broken: ${err.message}`, { cause: err })),
        );
        res.on('aborted', () => finish(new ImdsError('network', `metadata ${method} ${path}: response aborted`)));
      });
      req.end();
    });
  }
}

class ReusedSocketReset extends ImdsError {
  constructor(message: string, cause: unknown) {
    super('network', message, { cause });
  }
}

/** `promise`, or the signal's reason as soon as it aborts (the promise keeps running). */
function withAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
