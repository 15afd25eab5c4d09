/**
 * EC2 clients, one per region, created on first use.
 *
 * The SDK is loaded with a dynamic `import()` so that `spotctl --help` and commands that never
 * talk to AWS don't pay for loading it.
 *
 * Endpoints: the SDK resolves `AWS_ENDPOINT_URL_EC2`, then `AWS_ENDPOINT_URL` (and `endpoint_url`
 * in the shared config file) on its own: `@smithy/core`'s `getEndpointUrlConfig('EC2')` reads
 * them whenever no explicit `endpoint` is given. We therefore don't read those variables
 * ourselves; `endpoint` here is only for callers (tests) that want to point at a server
 * explicitly. The tests run the `prices` command against moto through `AWS_ENDPOINT_URL`
 * alone, which checks this.
 *
 * Retries: the SDK's own `standard` strategy (3 attempts, exponential backoff with jitter,
 * throttling and transient errors only). `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE` still apply unless
 * the caller sets `maxAttempts` / `retryMode`.
 *
 * Cancellation: the clients take no signal; every `send` in this folder passes
 * `{ abortSignal }` (see `sendOptions`).
 */
import type { EC2Client, EC2ClientConfig } from '@aws-sdk/client-ec2';
import createDebug from 'debug';

const debug = createDebug('spotctl:ec2');

export type Ec2Sdk = typeof import('@aws-sdk/client-ec2');

/** A loader that imports an AWS SDK client package on first use, once. */
export function lazySdk<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () => {
    // The SDK prints a NodeVersionSupportWarning on Node < 22 through process.emitWarning, which
    // would bypass output/output.ts; spotctl supports Node 20 on purpose, so silence it unless the
    // user chose otherwise.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    loaded ??= load();
    return loaded;
  };
}

/** Loads `@aws-sdk/client-ec2` once. */
export const loadEc2Sdk: () => Promise<Ec2Sdk> = lazySdk(() => import('@aws-sdk/client-ec2'));

export interface Ec2ClientsOptions {
  /**
   * An explicit endpoint for every region (tests). Without it the SDK honours
   * `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL`, else the real regional endpoint.
   * @default undefined
   */
  endpoint?: string;
  /** @default the SDK's default (3, or AWS_MAX_ATTEMPTS) */
  maxAttempts?: number;
  /** @default the SDK's default ('standard', or AWS_RETRY_MODE) */
  retryMode?: 'standard' | 'adaptive';
  /** Extra client configuration (credentials in tests). @default {} */
  config?: Omit<EC2ClientConfig, 'region' | 'endpoint' | 'maxAttempts' | 'retryMode'>;
}

/** Gives an EC2 client for a region; the same instance for the same region. */
export type Ec2ClientFor = (region: string) => Promise<EC2Client>;

/** Per-region EC2 clients that are destroyed together (they keep sockets alive). */
export class Ec2Clients implements Disposable {
  private readonly clients = new Map<string, Promise<EC2Client>>();
  private closed = false;

  constructor(private readonly options: Ec2ClientsOptions = {}) {}

  /** The client for `region`, created on first use. */
  readonly forRegion: Ec2ClientFor = (region) => {
    if (this.closed) return Promise.reject(new Error('Ec2Clients is closed'));
    let client = this.clients.get(region);
    if (!client) {
      client = loadEc2Sdk().then(({ EC2Client }) => {
        const { endpoint, maxAttempts, retryMode, config } = this.options;
        debug('client for %s%s', region, endpoint ? ` at ${endpoint}` : '');
        return new EC2Client({
          ...config,
          region,
          ...(endpoint === undefined ? {} : { endpoint }),
          ...(maxAttempts === undefined ? {} : { maxAttempts }),
          ...(retryMode === undefined ? {} : { retryMode }),
        });
      });
      this.clients.set(region, client);
    }
    return client;
  };

  /** Destroys every client; idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const client of this.clients.values())
      void client.then(
        (c) => c.destroy(),
        () => undefined,
      );
    this.clients.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** The options every `send` in this folder uses, so no request outlives its caller. */
export function sendOptions(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
  return signal ? { abortSignal: signal } : {};
}
