/**
 * Decides when the machine has nothing left to do, so a forgotten instance does not bill for days.
 *
 * Activity is defined explicitly and checked every few seconds (not "sleep T, then look", whose
 * real window is T to 2T): the job is starting or running, a client is connected, or the
 * heartbeat file was touched within the idle timeout.
 */
import fs from 'node:fs';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.ts';

/** The part of the agent's clock the watchdog uses. */
export type WatchdogClock = Pick<Clock, 'now' | 'setInterval' | 'clearInterval' | 'setTimeout' | 'clearTimeout'>;

export type ShutdownReason = 'idle' | 'max-runtime';

export interface IdleWatchdogOptions {
  /** Inactive for longer than this → shutdown. */
  idleTimeoutMs: number;
  /** Stop the job this long after it started; 0 = no limit. @default 0 */
  maxRuntimeMs?: number;
  /** A file whose mtime counts as activity (users `touch` it, jobs can too). */
  heartbeatPath: string;
  isJobActive(): boolean;
  /** Epoch ms the job started, null before. */
  jobStartedAt(): number | null;
  clientCount(): number;
  /** Asked once when the job outlives maxRuntimeMs. */
  onMaxRuntime(): void;
  /** Called at most once. */
  onShutdown(reason: ShutdownReason): void;
  logger: Logger;
  /** @default systemClock */
  clock?: WatchdogClock;
}

/** A heartbeat mtime this far in the future (clock skew aside) is a mistake, not activity. */
const FUTURE_SLACK_MS = 60_000;

export class IdleWatchdog implements AsyncDisposable {
  readonly #options: IdleWatchdogOptions;
  readonly #clock: WatchdogClock;
  readonly checkIntervalMs: number;
  #timer: unknown;
  /** One-shot timer at the job's max-runtime deadline, so the limit acts within a second, not at the next check. */
  #maxRuntimeTimer: unknown;
  #lastActiveAt = 0;
  #maxRuntimeFired = false;
  #fired = false;
  #closed = false;

  constructor(options: IdleWatchdogOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.checkIntervalMs = Math.max(1, Math.min(5000, Math.floor(options.idleTimeoutMs / 4)));
  }

  /** Whether the shutdown action has been asked for. */
  get fired(): boolean {
    return this.#fired;
  }

  start(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#lastActiveAt = this.#clock.now();
    this.#timer = this.#clock.setInterval(() => this.check(), this.checkIntervalMs);
    const timer = this.#timer as { unref?: () => void };
    timer.unref?.();
    this.#armMaxRuntime();
  }

  /** Arms the max-runtime deadline once the job's start time is known (start() or any later check). */
  #armMaxRuntime(): void {
    const maxRuntimeMs = this.#options.maxRuntimeMs ?? 0;
    const startedAt = this.#options.jobStartedAt();
    if (maxRuntimeMs <= 0 || startedAt === null || this.#maxRuntimeTimer !== undefined || this.#maxRuntimeFired || this.#closed) return;
    const dueInMs = Math.max(0, startedAt + maxRuntimeMs - this.#clock.now());
    this.#maxRuntimeTimer = this.#clock.setTimeout(() => this.check(), dueInMs);
  }

  /**
   * Records "active now". The composition root calls it when activity ends (job exit, last client
   * gone), so the idle period is measured from that moment rather than from the last check.
   */
  markActive(): void {
    this.#lastActiveAt = Math.max(this.#lastActiveAt, this.#clock.now());
  }

  /** Evaluates the rules now; also runs on every interval tick. */
  check(): void {
    if (this.#closed || this.#fired) return;
    const o = this.#options;
    const now = this.#clock.now();
    const jobActive = o.isJobActive();

    const maxRuntimeMs = o.maxRuntimeMs ?? 0;
    const startedAt = o.jobStartedAt();
    this.#armMaxRuntime();
    if (maxRuntimeMs > 0 && jobActive && !this.#maxRuntimeFired && startedAt !== null && now - startedAt >= maxRuntimeMs) {
      this.#maxRuntimeFired = true;
      o.logger.warn({ rule: 'max-runtime', maxRuntimeMs, runtimeMs: now - startedAt }, 'job reached its maximum runtime; stopping it');
      o.onMaxRuntime();
    }
    if (this.#maxRuntimeFired && !o.isJobActive()) {
      this.#fire('max-runtime', { rule: 'max-runtime', maxRuntimeMs });
      return;
    }

    const clients = o.clientCount();
    if (jobActive || clients > 0) {
      this.#lastActiveAt = now;
      return;
    }
    const heartbeatAt = this.#heartbeatMtimeMs();
    if (heartbeatAt !== null && heartbeatAt <= now + FUTURE_SLACK_MS) {
      this.#lastActiveAt = Math.max(this.#lastActiveAt, Math.min(heartbeatAt, now));
    }
    const idleForMs = now - this.#lastActiveAt;
    if (idleForMs > o.idleTimeoutMs) {
      this.#fire('idle', { rule: 'idle', idleForMs, idleTimeoutMs: o.idleTimeoutMs, heartbeatAt });
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#maxRuntimeTimer !== undefined) this.#clock.clearTimeout(this.#maxRuntimeTimer);
    this.#maxRuntimeTimer = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }

  #fire(reason: ShutdownReason, details: Record<string, unknown>): void {
    if (this.#fired) return;
    this.#fired = true;
    this.close();
    this.#options.logger.warn(details, `watchdog fired (${reason}); running the shutdown action`);
    this.#options.onShutdown(reason);
  }

  #heartbeatMtimeMs(): number | null {
    try {
      return fs.statSync(this.#options.heartbeatPath).mtimeMs;
    } catch {
      // Missing file: no heartbeat, not an error.
      return null;
    }
  }
}
