/**
 * Watches the instance metadata service for a spot interruption notice and rebalance
 * recommendations, on the instance itself (peers poll from the laptop every 30 s, or every 5 s
 * without acting). A notice gives two minutes at most, so the instance-action poll runs every
 * second; rebalance recommendations come earlier and matter less, every 5 s is plenty.
 *
 * Nothing here is fatal: a refused connection, a timeout, a 5xx or a body that does not parse is
 * logged (once per distinct error per minute) and the poll runs again on schedule.
 */
import type { ImdsConfig, InstanceAction, RebalanceRecommendation } from '@spotctl/shared';
import type { Logger } from '../logger.ts';
import { systemClock, type Clock } from '../clock.ts';

/** The part of the agent's clock the poller uses. */
export type PollClock = Pick<Clock, 'now' | 'setTimeout' | 'clearTimeout'>;
import { ImdsClient, type ImdsGetter } from './imds-client.ts';

export const INSTANCE_ACTION_PATH = 'meta-data/spot/instance-action';
export const REBALANCE_PATH = 'meta-data/events/recommendations/rebalance';

type LogFn = (obj: Record<string, unknown>, msg?: string) => void;

/** The part of a pino logger the poller uses; a pino `Logger` (or a child) fits. */
export interface SpotLogger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

// Compile-time proof that the agent's pino logger can be passed as is.
const _pinoFits = (logger: Logger): SpotLogger => logger;
void _pinoFits;

export interface SpotPollerOptions extends ImdsConfig {
  /**
   * Called once per distinct notice (action + time), with the epoch ms the poll saw it. The
   * instance-action poll stops after the first one: AWS does not take a notice back.
   */
  onInterruption(action: InstanceAction, noticedAt: number): void;
  /** Called once per distinct `noticeTime`. */
  onRebalance?(recommendation: RebalanceRecommendation, noticedAt: number): void;
  logger: SpotLogger;
  /**
   * A client to share (its token too); not closed by the poller. Without one the poller makes its
   * own from `endpoint` and `tokenTtlS`, and closes it on close().
   */
  client?: ImdsGetter;
  /** Budget of one metadata request, for the poller's own client. @default 1000 */
  requestTimeoutMs?: number;
  /** A repeated identical poll error is logged again only after this long. @default 60000 */
  errorLogIntervalMs?: number;
  /** @default systemClock */
  clock?: PollClock;
}

export interface SpotPollerStats {
  instanceActionPolls: number;
  rebalancePolls: number;
  /** Polls that got no usable answer. */
  errors: number;
}

/** Why a poll did not produce a usable answer; `message` is what gets rate-limited. */
class PollError extends Error {}

const INSTANCE_ACTIONS: ReadonlySet<string> = new Set<InstanceAction['action']>(['terminate', 'stop', 'hibernate']);

/**
 * Validates an instance-action body. A well-formed notice with an action this code does not know
 * is still an interruption: it is treated as `terminate`, the outcome that loses the most.
 */
export function parseInstanceAction(body: string): { value: InstanceAction; unknownAction?: string } {
  const value = parseJsonObject(body);
  const { action, time } = value;
  if (typeof action !== 'string' || action === '') throw new PollError('instance-action body has no "action"');
  if (typeof time !== 'string' || time === '') throw new PollError('instance-action body has no "time"');
  if (INSTANCE_ACTIONS.has(action)) return { value: { action: action as InstanceAction['action'], time } };
  return { value: { action: 'terminate', time }, unknownAction: action };
}

export function parseRebalanceRecommendation(body: string): RebalanceRecommendation {
  const { noticeTime } = parseJsonObject(body);
  if (typeof noticeTime !== 'string' || noticeTime === '') throw new PollError('rebalance body has no "noticeTime"');
  return { noticeTime };
}

function parseJsonObject(body: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    throw new PollError(`body is not JSON: ${JSON.stringify(body.slice(0, 80))}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new PollError('body is not a JSON object');
  return value as Record<string, unknown>;
}

/** One self-rearming poll: the next run is armed only after the previous one settled. */
class PollLoop {
  readonly #clock: PollClock;
  readonly #intervalMs: number;
  readonly #run: (signal: AbortSignal) => Promise<void>;
  readonly #abort = new AbortController();
  #timer: unknown;
  #inFlight: Promise<void> | undefined;
  #stopped = false;

  constructor(clock: PollClock, intervalMs: number, run: (signal: AbortSignal) => Promise<void>) {
    this.#clock = clock;
    this.#intervalMs = intervalMs;
    this.#run = run;
  }

  start(): void {
    this.#arm(0);
  }

  /** Stops arming; an in-flight poll is left to finish (its result may still matter). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Stops and aborts the in-flight poll, resolving once it has settled. */
  async close(): Promise<void> {
    this.stop();
    this.#abort.abort(new Error('poller closed'));
    await this.#inFlight;
  }

  #arm(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#tick();
    }, delayMs);
  }

  #tick(): void {
    if (this.#stopped) return;
    const startedAt = this.#clock.now();
    // `run` never rejects (the poller catches everything); the catch is belt and braces.
    this.#inFlight = this.#run(this.#abort.signal)
      .catch(() => undefined)
      .finally(() => {
        this.#inFlight = undefined;
        // Keep the cadence from start to start, never overlap.
        const elapsed = Math.max(0, this.#clock.now() - startedAt);
        this.#arm(Math.max(0, this.#intervalMs - elapsed));
      });
  }
}

/** Per-path error bookkeeping for rate-limited logging. */
interface ErrorState {
  lastMessage: string | undefined;
  lastLoggedAt: number;
  suppressed: number;
  consecutive: number;
}

export class SpotPoller implements AsyncDisposable {
  readonly pollIntervalMs: number;
  readonly rebalancePollIntervalMs: number;
  readonly #options: SpotPollerOptions;
  readonly #clock: PollClock;
  readonly #logger: SpotLogger;
  readonly #client: ImdsGetter;
  readonly #ownedClient: ImdsClient | undefined;
  readonly #errorLogIntervalMs: number;
  readonly #instanceLoop: PollLoop;
  readonly #rebalanceLoop: PollLoop;
  readonly #seenNotices = new Set<string>();
  readonly #seenRebalances = new Set<string>();
  readonly #errors = new Map<string, ErrorState>();
  readonly #stats: SpotPollerStats = { instanceActionPolls: 0, rebalancePolls: 0, errors: 0 };
  #interruption: { action: InstanceAction; noticedAt: number } | undefined;
  #started = false;
  #closing: Promise<void> | undefined;

  constructor(options: SpotPollerOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger;
    this.pollIntervalMs = positive(options.pollIntervalMs, 1000, 'pollIntervalMs');
    this.rebalancePollIntervalMs = positive(options.rebalancePollIntervalMs, 5000, 'rebalancePollIntervalMs');
    this.#errorLogIntervalMs = options.errorLogIntervalMs ?? 60_000;
    if (options.client) {
      this.#client = options.client;
    } else {
      this.#ownedClient = new ImdsClient({
        ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
        ...(options.tokenTtlS === undefined ? {} : { tokenTtlS: options.tokenTtlS }),
        ...(options.requestTimeoutMs === undefined ? {} : { timeoutMs: options.requestTimeoutMs }),
      });
      this.#client = this.#ownedClient;
    }
    this.#instanceLoop = new PollLoop(this.#clock, this.pollIntervalMs, (signal) => this.#pollInstanceAction(signal));
    this.#rebalanceLoop = new PollLoop(this.#clock, this.rebalancePollIntervalMs, (signal) => this.#pollRebalance(signal));
  }

  /** The first interruption seen, if any. */
  get interruption(): { action: InstanceAction; noticedAt: number } | undefined {
    return this.#interruption;
  }

  get stats(): SpotPollerStats {
    return { ...this.#stats };
  }

  /** Starts both polls; the first of each runs at once. Idempotent. */
  start(): void {
    if (this.#started || this.#closing) return;
    this.#started = true;
    const endpoint = this.#ownedClient?.endpoint;
    this.#logger.info(
      { ...(endpoint ? { endpoint } : {}), pollIntervalMs: this.pollIntervalMs, rebalancePollIntervalMs: this.rebalancePollIntervalMs },
      'watching for spot interruption notices',
    );
    this.#instanceLoop.start();
    this.#rebalanceLoop.start();
  }

  /** Stops polling, aborts in-flight requests and waits for them; closes its own client. */
  close(): Promise<void> {
    return (this.#closing ??= (async () => {
      await Promise.all([this.#instanceLoop.close(), this.#rebalanceLoop.close()]);
      await this.#ownedClient?.close();
    })());
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #pollInstanceAction(signal: AbortSignal): Promise<void> {
    this.#stats.instanceActionPolls++;
    const parsed = await this.#poll(INSTANCE_ACTION_PATH, signal, parseInstanceAction);
    if (!parsed || this.#closing) return;
    const noticedAt = this.#clock.now();
    const { value: action, unknownAction } = parsed;
    const key = `${action.action}@${action.time}`;
    if (this.#seenNotices.has(key)) return;
    this.#seenNotices.add(key);
    if (!this.#interruption) {
      this.#interruption = { action, noticedAt };
      // AWS does not withdraw a notice; only the rebalance poll keeps running.
      this.#instanceLoop.stop();
    }
    if (unknownAction !== undefined) {
      this.#logger.warn({ action: unknownAction, deadline: action.time }, 'unknown spot instance action; handling it as terminate');
    }
    this.#logger.warn({ action: action.action, deadline: action.time, noticedAt }, 'spot interruption notice');
    this.#deliver('onInterruption', () => this.#options.onInterruption(action, noticedAt));
  }

  async #pollRebalance(signal: AbortSignal): Promise<void> {
    this.#stats.rebalancePolls++;
    const rec = await this.#poll(REBALANCE_PATH, signal, parseRebalanceRecommendation);
    if (!rec || this.#closing) return;
    if (this.#seenRebalances.has(rec.noticeTime)) return;
    this.#seenRebalances.add(rec.noticeTime);
    const noticedAt = this.#clock.now();
    this.#logger.warn({ noticeTime: rec.noticeTime, noticedAt }, 'spot rebalance recommendation');
    const onRebalance = this.#options.onRebalance;
    if (onRebalance) this.#deliver('onRebalance', () => onRebalance(rec, noticedAt));
  }

  /** GETs `path`: the parsed body on 200, undefined on 404 or any failure (which is logged). */
  async #poll<T>(path: string, signal: AbortSignal, parse: (body: string) => T): Promise<T | undefined> {
    try {
      const res = await this.#client.get(path, { signal });
      if (res.status === 404) {
        this.#recovered(path);
        return undefined;
      }
      if (res.status !== 200) throw new PollError(`HTTP ${res.status}`);
      const value = parse(res.body);
      this.#recovered(path);
      return value;
    } catch (e) {
      if (signal.aborted) return undefined;
      this.#failed(path, e);
      return undefined;
    }
  }

  #failed(path: string, error: unknown): void {
    this.#stats.errors++;
    const message = error instanceof Error ? error.message : String(error);
    const now = this.#clock.now();
    const state = this.#errors.get(path) ?? { lastMessage: undefined, lastLoggedAt: -Infinity, suppressed: 0, consecutive: 0 };
    this.#errors.set(path, state);
    state.consecutive++;
    if (message !== state.lastMessage || now - state.lastLoggedAt >= this.#errorLogIntervalMs) {
      this.#logger.warn(
        { path, err: message, consecutiveFailures: state.consecutive, ...(state.suppressed > 0 ? { suppressed: state.suppressed } : {}) },
        'metadata poll failed; retrying',
      );
      state.lastMessage = message;
      state.lastLoggedAt = now;
      state.suppressed = 0;
    } else {
      state.suppressed++;
      this.#logger.debug({ path, err: message, consecutiveFailures: state.consecutive }, 'metadata poll failed again');
    }
  }

  #recovered(path: string): void {
    const state = this.#errors.get(path);
    if (!state) return;
    this.#errors.delete(path);
    this.#logger.info({ path, failedPolls: state.consecutive }, 'metadata poll works again');
  }

  #deliver(name: string, call: () => void): void {
    try {
      call();
    } catch (e) {
      this.#logger.error({ err: e instanceof Error ? e.message : String(e), callback: name }, 'spot notice handler threw');
    }
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number of ms, got ${v}`);
  return v;
}
