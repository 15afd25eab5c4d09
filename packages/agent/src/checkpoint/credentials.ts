/**
 * S3 credentials forwarded by the controller (SSH hosts and the local provider): short-lived,
 * scoped to the run's prefix, pushed over the websocket and kept only here, in memory. They are
 * never written to disk nor logged. The S3 client asks `provider` for credentials before a
 * request; it gets the newest pushed set.
 */
import { S3Client } from '@aws-sdk/client-s3';
import type { CredentialsParams } from '@spotctl/shared';
import { silentLogger, type CheckpointLogger } from './retry.ts';

/** What the SDK's credential providers return. */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

export type CredentialProvider = () => Promise<AwsCredentials>;

/**
 * The SDK treats credentials that expire within 5 minutes as expired and asks again before each
 * request; host-chain credentials are handed out with at most this much life, so a set pushed later
 * still replaces them.
 */
const HOST_CHAIN_RECHECK_MS = 60_000;

/**
 * The host's own AWS credential chain (environment, profile, instance metadata). It lives in
 * `@aws-sdk/credential-provider-node`, which the S3 client depends on but we do not: a client built
 * without credentials resolves exactly that chain, and its `config.credentials` is the provider.
 */
export function hostCredentialChain(region: string): CredentialProvider {
  let client: S3Client | undefined;
  return async () => {
    client ??= new S3Client({ region });
    return await client.config.credentials();
  };
}

export interface ForwardedCredentialsOptions {
  /** How long a request waits for the first pushed set before it uses the host's chain. @default 60000 */
  waitMs?: number;
  /** Where credentials come from when none were pushed (or the pushed ones expired). */
  hostChain: CredentialProvider;
  logger?: CheckpointLogger;
  /** @default Date.now */
  now?: () => number;
}

export class ForwardedCredentials {
  #current: CredentialsParams | undefined;
  #waiters = new Set<() => void>();
  #warned = false;
  readonly #waitMs: number;
  readonly #hostChain: CredentialProvider;
  readonly #logger: CheckpointLogger;
  readonly #now: () => number;

  constructor(options: ForwardedCredentialsOptions) {
    this.#waitMs = options.waitMs ?? 60_000;
    this.#hostChain = options.hostChain;
    this.#logger = options.logger ?? silentLogger;
    this.#now = options.now ?? Date.now;
  }

  /** The newest set pushed, replacing any earlier one. */
  set(credentials: CredentialsParams): void {
    this.#current = { ...credentials };
    this.#warned = false;
    // Only when they expire: the keys themselves never reach a log.
    this.#logger.info({ expiresAt: new Date(credentials.expiresAt).toISOString() }, 'forwarded S3 credentials received');
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  get hasCredentials(): boolean {
    return this.#current !== undefined;
  }

  /** For the S3 client's `credentials` option. */
  readonly provider: CredentialProvider = async () => {
    if (!this.#current) await this.#waitForFirst();
    const current = this.#current;
    if (current && current.expiresAt > this.#now()) {
      return {
        accessKeyId: current.accessKeyId,
        secretAccessKey: current.secretAccessKey,
        sessionToken: current.sessionToken,
        expiration: new Date(current.expiresAt),
      };
    }
    if (!this.#warned) {
      this.#warned = true;
      this.#logger.warn(
        {},
        current
          ? `the forwarded S3 credentials expired at ${new Date(current.expiresAt).toISOString()} and no new ones came (is the controller gone?); using the host's own AWS credential chain`
          : `no forwarded S3 credentials arrived within ${Math.round(this.#waitMs / 1000)} s; using the host's own AWS credential chain`,
      );
    }
    const host = await this.#hostChain();
    const recheckAt = this.#now() + HOST_CHAIN_RECHECK_MS;
    return { ...host, expiration: new Date(Math.min(host.expiration?.getTime() ?? recheckAt, recheckAt)) };
  };

  async #waitForFirst(): Promise<void> {
    if (this.#waitMs <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    let wake: (() => void) | undefined;
    try {
      await new Promise<void>((resolve) => {
        wake = resolve;
        this.#waiters.add(resolve);
        // Owned and cleared below: a wait that never ends would hold every upload up.
        timer = setTimeout(resolve, this.#waitMs);
      });
    } finally {
      clearTimeout(timer);
      if (wake) this.#waiters.delete(wake);
    }
  }

  /** Wakes any waiting request (it then uses the host chain) and forgets the keys. */
  close(): void {
    this.#current = undefined;
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }
}
