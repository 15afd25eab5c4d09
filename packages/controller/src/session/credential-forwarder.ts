/**
 * Forwarded S3 credentials for runs on an SSH host or this machine: minted here from the user's
 * identity, scoped to the run's prefix (aws/run-credentials.ts), pushed to the agent over its
 * authenticated websocket (request `credentials`), and renewed before they expire for as long as
 * the controller follows the run. The agent keeps them in memory only.
 */
import { parseS3Url, type CheckpointTarget, type CredentialsParams } from '@spotctl/shared';
import createDebug from 'debug';
import type { Output } from '../output/output.ts';
import type { AgentConnection } from '../transport/agent-client.ts';
import type { SpotSpec } from './checkpoint-options.ts';

const debug = createDebug('spotctl:credentials');

/** Lifetime asked for while a controller follows the run and renews them. */
export const ATTACHED_CREDENTIALS_S = 3600;
/** Lifetime asked for a detached run: nobody renews them (federation allows up to 36 h). */
export const DETACHED_CREDENTIALS_S = 129_600;
/** A failed push or renewal is tried again after this long. */
const RETRY_MS = 10_000;

interface ScopedPrefixes {
  checkpoints: { bucket: string; prefix: string };
  restoreFrom?: { bucket: string; prefix: string; runId: string };
}

function trim(prefix: string): string {
  return prefix.replace(/^\/+|\/+$/g, '');
}

/** The S3 prefixes a run's forwarded credentials cover, or undefined when it does not use S3. */
export function s3PrefixesOf(spot: SpotSpec): ScopedPrefixes | undefined {
  const ckpt = spot.checkpoint;
  if (!ckpt) return undefined;
  const own = ckpt.to?.startsWith('s3://') ? parseS3Url(ckpt.to) : undefined;
  const from = ckpt.restoreFrom?.target.kind === 's3' ? ckpt.restoreFrom.target : undefined;
  const restoreFrom =
    from && ckpt.restoreFrom ? { bucket: from.bucket, prefix: trim(from.prefix), runId: ckpt.restoreFrom.runId } : undefined;
  // Restoring from S3 into a directory target still needs S3 credentials: scope the (unused)
  // write half to this run's prefix in the restored run's bucket.
  const checkpoints = own
    ? { bucket: own.bucket, prefix: trim(own.prefix) }
    : restoreFrom
      ? { bucket: restoreFrom.bucket, prefix: restoreFrom.prefix }
      : undefined;
  if (!checkpoints) return undefined;
  return { checkpoints, ...(restoreFrom ? { restoreFrom } : {}) };
}

/** Mints a set, or throws with the reason STS gave. */
export type MintCredentials = (durationS: number, signal?: AbortSignal) => Promise<CredentialsParams>;

/** The minting function for a run, or undefined when the run does not use S3. */
export function runCredentialMinter(runId: string, spot: SpotSpec): MintCredentials | undefined {
  const prefixes = s3PrefixesOf(spot);
  if (!prefixes) return undefined;
  return async (durationS, signal) => {
    const { mintRunCredentials } = await import('../aws/run-credentials.ts');
    const r = await mintRunCredentials({ runId, ...prefixes, durationS, ...(signal ? { signal } : {}) });
    if (!r.ok) throw new Error(r.reason);
    debug('minted run credentials via %s until %s', r.via, new Date(r.credentials.expiresAt).toISOString());
    return r.credentials;
  };
}

/** The one line said when the agent has to use the host's own credentials instead. */
export function hostChainWarning(reason: string): string {
  return (
    `S3 checkpoints: ${reason}; the agent will use the host's own AWS credentials instead. ` +
    'To forward short-lived ones scoped to this run, use an IAM user allowed sts:GetFederationToken, or a role allowed to assume itself (README: --checkpoint-to)'
  );
}

export interface CredentialForwarderOptions {
  /** The set minted before the launch; pushed first. */
  first: CredentialsParams;
  mint: MintCredentials;
  /** Opens a connection to the agent (the provider session's `connect`). */
  connect: (signal: AbortSignal) => Promise<AgentConnection>;
  out: Pick<Output, 'warn'>;
  /** @default Date.now */
  now?: () => number;
  /** Runs `tick` after `ms`; the handle cancels it. @default an unref'd setTimeout */
  schedule?: (tick: () => Promise<void>, ms: number) => { cancel(): void };
}

function scheduleWithTimer(tick: () => Promise<void>, ms: number): { cancel(): void } {
  // Unref'd: it never keeps the CLI alive on its own.
  const timer = setTimeout(() => void tick(), Math.min(ms, 2_147_000_000));
  timer.unref();
  return { cancel: () => clearTimeout(timer) };
}

/**
 * Pushes the first set at once, then renews it when three quarters of its life are gone, until
 * closed. Every push opens its own short connection, so a dropped tunnel between two renewals
 * costs nothing; a failed push or renewal is retried every 10 s.
 */
export class CredentialForwarder implements AsyncDisposable {
  readonly #o: CredentialForwarderOptions;
  readonly #now: () => number;
  readonly #abort = new AbortController();
  #current: CredentialsParams;
  #renewAt = 0;
  #pushed = false;
  readonly #scheduleTick: NonNullable<CredentialForwarderOptions['schedule']>;
  #timer: { cancel(): void } | undefined;
  #failing = false;
  #closed = false;

  private constructor(options: CredentialForwarderOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#scheduleTick = options.schedule ?? scheduleWithTimer;
    this.#current = options.first;
    this.#renewAt = this.#renewTime(options.first);
  }

  /** Starts forwarding; resolves once the first push succeeded or failed (it is then retried). */
  static async start(options: CredentialForwarderOptions): Promise<CredentialForwarder> {
    const forwarder = new CredentialForwarder(options);
    await forwarder.#tick();
    return forwarder;
  }

  /** True once the newest set reached the agent. */
  get pushed(): boolean {
    return this.#pushed;
  }

  #renewTime(c: CredentialsParams): number {
    const now = this.#now();
    return now + Math.max(0, c.expiresAt - now) * 0.75;
  }

  async #push(): Promise<void> {
    // The deadline is owned here (an AbortSignal.timeout reachable only through AbortSignal.any
    // can be collected and never fire).
    const attempt = new AbortController();
    const onClose = () => attempt.abort(new Error('closed'));
    this.#abort.signal.addEventListener('abort', onClose, { once: true });
    const deadline = setTimeout(() => attempt.abort(new Error('the agent did not answer within 15 s')), 15_000);
    try {
      const connection = await this.#o.connect(attempt.signal);
      try {
        await connection.request('credentials', this.#current, { timeoutMs: 15_000 });
      } finally {
        await connection.close();
      }
    } finally {
      clearTimeout(deadline);
      this.#abort.signal.removeEventListener('abort', onClose);
    }
  }

  async #tick(): Promise<void> {
    this.#timer = undefined;
    if (this.#closed) return;
    try {
      if (this.#now() >= this.#renewAt) {
        this.#current = await this.#o.mint(ATTACHED_CREDENTIALS_S, this.#abort.signal);
        this.#renewAt = this.#renewTime(this.#current);
        this.#pushed = false;
      }
      if (!this.#pushed) {
        await this.#push();
        this.#pushed = true;
        debug('credentials pushed; renewing at %s', new Date(this.#renewAt).toISOString());
      }
      this.#failing = false;
      this.#schedule(Math.max(0, this.#renewAt - this.#now()));
    } catch (error) {
      if (this.#closed) return;
      if (!this.#failing) {
        this.#failing = true;
        this.#o.out.warn(
          `could not forward S3 credentials to the agent (${(error as Error).message}); retrying every ${RETRY_MS / 1000} s`,
        );
      }
      this.#schedule(RETRY_MS);
    }
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    // Owned and cancelled in close().
    this.#timer = this.#scheduleTick(() => this.#tick(), ms);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#timer?.cancel();
    this.#abort.abort();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * For a run followed again (`spotctl attach`) whose agent takes forwarded credentials: mints a
 * fresh set for the run's own prefix (a restore is long done by then), pushes it and keeps it
 * renewed while attached. Undefined (after one warning when STS refuses) otherwise.
 */
export async function resumeForwarding(options: {
  runId: string;
  provider: string;
  checkpoint?: { target: CheckpointTarget; credentials?: 'forwarded' } | undefined;
  connect: (signal: AbortSignal) => Promise<AgentConnection>;
  out: Pick<Output, 'warn'>;
}): Promise<CredentialForwarder | undefined> {
  const { checkpoint } = options;
  if (options.provider === 'aws' || checkpoint?.credentials !== 'forwarded' || checkpoint.target.kind !== 's3') return undefined;
  const target = checkpoint.target;
  const mint = runCredentialMinter(options.runId, {
    checkpoint: { dir: '', to: `s3://${target.bucket}${target.prefix ? `/${trim(target.prefix)}` : ''}` },
  });
  if (!mint) return undefined;
  try {
    const first = await mint(ATTACHED_CREDENTIALS_S);
    return await CredentialForwarder.start({ first, mint, connect: options.connect, out: options.out });
  } catch (error) {
    options.out.warn(
      `could not renew the run's S3 credentials (${(error as Error).message}); the agent keeps the ones it has, then the host's own`,
    );
    return undefined;
  }
}
