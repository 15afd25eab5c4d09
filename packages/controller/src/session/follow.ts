/**
 * Follows a run's log across any number of connection drops: every line exactly once, in order.
 * The agent numbers lines; we remember the next seq we want and resubscribe from it.
 */
import { SpotctlError, sliceBatch, type JobStatus, type LogBatch, type ServerEvent } from '@spotctl/shared';
import createDebug from 'debug';
import type { AgentConnection } from '../transport/agent-client.ts';

const debug = createDebug('spotctl:follow');

export interface FollowOptions {
  /** Opens a connection to the agent, repairing the transport (tunnel) first when needed. */
  connect: (signal: AbortSignal | undefined) => Promise<AgentConnection>;
  /** First seq wanted. @default 1 */
  fromSeq?: number;
  /** Keep following live output; false prints what is there and returns. @default true */
  follow?: boolean;
  /**
   * Delivers lines in order, a batch at a time, each line exactly once; return false when the
   * sink is full (the socket is paused until `drain`).
   */
  onLines: (batch: LogBatch) => boolean;
  drain: () => Promise<void>;
  onStatus?: (status: JobStatus) => void;
  /** Interruption notices, rebalance recommendations, committed checkpoints, the final report. */
  onSpotEvent?: (
    event: Extract<ServerEvent, { event: 'interruption' | 'rebalance' | 'checkpoint' | 'checkpoint-failed' | 'interruption-report' }>,
  ) => void;
  /** Called with each fresh connection, e.g. to send `stop` on it. */
  onConnection?: (connection: AgentConnection) => void;
  onDisconnect?: (error: Error, attempt: number) => void;
  onReconnected?: (downForMs: number) => void;
  signal?: AbortSignal;
  /**
   * Asked when the agent cannot be reached: the job's final status if it has ended (read from the
   * host's files), so the follow can finish from the stored log instead of retrying. The agent may
   * have exited on purpose (another client's shutdown, max runtime) while we were behind.
   */
  endedWithoutAgent?: (nextSeq: number) => Promise<FollowResult | undefined>;
  /**
   * Asked when the agent cannot be reached, before retrying: true when the machine it ran on is
   * known to be gone (aws: EC2 says the instance is shutting down or terminated). The follow then
   * ends at once with `HostGone` instead of reconnecting to nothing for minutes.
   */
  hostGone?: () => Promise<boolean>;
  /** Give up when no connection could be made for this long. @default 600000 (10 min) */
  reconnectTimeoutMs?: number;
  /** Ceiling of the reconnect backoff. @default 5000 */
  maxBackoffMs?: number;
}

export interface FollowResult {
  status: JobStatus;
  /** Seq of the last line delivered (0 if none). */
  lastSeq: number;
}

/** The machine the agent ran on is gone (terminated without notice): nothing is left to reconnect to. */
export class HostGone extends SpotctlError {
  constructor(readonly lastSeq: number) {
    super('SPOTCTL_AGENT_UNREACHABLE', 'the host the agent ran on is gone');
  }
}

/** Failures of the way to the agent, which a later attempt may cure (host rebooting, link down). */
const TRANSIENT = new Set(['SPOTCTL_SSH_UNREACHABLE', 'SPOTCTL_SSH_FAILED', 'SPOTCTL_AGENT_UNREACHABLE']);

/** Errors that a new connection will not cure: a wrong token, another protocol, a broken schema. */
function isFatal(error: unknown): boolean {
  if (error instanceof SpotctlError) return !TRANSIENT.has(error.code);
  return false;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export async function followLogs(options: FollowOptions): Promise<FollowResult> {
  const { signal } = options;
  const reconnectTimeoutMs = options.reconnectTimeoutMs ?? 600_000;
  const maxBackoffMs = options.maxBackoffMs ?? 5_000;
  let next = Math.max(1, options.fromSeq ?? 1);
  let attempt = 0;
  let downSince: number | undefined;

  for (;;) {
    signal?.throwIfAborted();
    let connection: AgentConnection;
    try {
      connection = await options.connect(signal);
    } catch (error) {
      if (isFatal(error) || signal?.aborted) throw error;
      if (await options.hostGone?.().catch(() => false)) throw new HostGone(next - 1);
      const finished = await options.endedWithoutAgent?.(next).catch(() => undefined);
      if (finished) return finished;
      downSince ??= Date.now();
      const downFor = Date.now() - downSince;
      if (downFor > reconnectTimeoutMs) {
        throw new SpotctlError(
          'SPOTCTL_AGENT_UNREACHABLE',
          `lost the agent for ${Math.round(downFor / 1000)} s: ${(error as Error).message}`,
          { cause: error },
        );
      }
      attempt += 1;
      options.onDisconnect?.(error as Error, attempt);
      await sleep(Math.min(maxBackoffMs, 200 * 2 ** Math.min(attempt, 5)), signal);
      continue;
    }
    if (downSince !== undefined) options.onReconnected?.(Date.now() - downSince);
    attempt = 0;
    downSince = undefined;
    options.onConnection?.(connection);

    const outcome = await new Promise<{ status: JobStatus } | { error: Error }>((resolve) => {
      let done = false;
      const finish = (value: { status: JobStatus } | { error: Error }) => {
        if (done) return;
        done = true;
        resolve(value);
      };
      connection.onEvent((event) => {
        switch (event.event) {
          case 'logs': {
            const fresh = sliceBatch(event.batch, next);
            if (!fresh) return;
            if (fresh.firstSeq !== next) {
              finish({
                error: new SpotctlError('SPOTCTL_PROTOCOL', `log lines ${next}..${fresh.firstSeq - 1} are missing from the agent's stream`),
              });
              return;
            }
            next = fresh.lastSeq + 1;
            if (!options.onLines(fresh)) {
              connection.pause();
              void options.drain().then(() => connection.resume());
            }
            return;
          }
          case 'status':
            options.onStatus?.(event.status);
            return;
          case 'end':
            finish({ status: event.status });
            return;
          case 'interruption':
          case 'rebalance':
          case 'checkpoint':
          case 'checkpoint-failed':
          case 'interruption-report':
            options.onSpotEvent?.(event);
            return;
          case 'hello':
            return;
          default: {
            const exhaustive: never = event;
            debug('unknown event %o', exhaustive);
          }
        }
      });
      connection.onClose((error) => finish({ error }));
      // A second Ctrl-C must not wait for an `end` that may never come.
      signal?.addEventListener('abort', () => finish({ error: signal.reason instanceof Error ? signal.reason : new Error('aborted') }), {
        once: true,
      });
      connection.request('subscribe', { fromSeq: next, follow: options.follow ?? true }).catch((error: Error) => finish({ error }));
    });

    if ('status' in outcome) {
      await connection.close();
      return { status: outcome.status, lastSeq: next - 1 };
    }
    await connection.close().catch(() => undefined);
    if (isFatal(outcome.error) || signal?.aborted) throw signal?.aborted ? signal.reason : outcome.error;
    downSince = Date.now();
    attempt += 1;
    options.onDisconnect?.(outcome.error, attempt);
    debug('connection lost at seq %d: %s', next, outcome.error.message);
  }
}
