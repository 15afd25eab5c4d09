/**
 * What the agent does when EC2 (or a rehearsal) says the instance is going away: tell every
 * controller, SIGTERM the job's group at once, give it the grace the deadline allows, SIGKILL,
 * flush the checkpoint folder one last time, and report what was saved.
 *
 * Knows nothing of the other parts: the composition root hands it callbacks.
 */
import type { FlushResult, InstanceAction, InterruptionNotice, InterruptionReport, RebalanceRecommendation } from '@spotctl/shared';
import { deadlineFromNotice, estimateUploadMs, interruptionGraceMs } from './grace.ts';
import type { SpotLogger } from './spot-poller.ts';

export interface InterruptionCheckpoints {
  pendingBytes(): number;
  /** Size of the newest committed set: what the job will likely write again when it gets SIGTERM. */
  lastSetBytes(): number;
  /** Never rejects: failures are in the result's `error`. */
  flush(reason: string, options: { deadlineAt?: number; final?: boolean }): Promise<FlushResult>;
  /** Where the sets go, for the report. */
  describe(): string;
}

export interface InterruptionHandlerOptions {
  /** The configured SIGTERM → SIGKILL grace; the deadline may shorten it. */
  graceMs: number;
  /** SIGTERM to the job's group now, SIGKILL after `graceMs`. */
  stopJob(graceMs: number): void;
  /** Sends a signal to the job's group (for `--on-rebalance signal:USR1`). */
  signalJob(signal: NodeJS.Signals): void;
  /** Resolves once the job has exited: when, and whether it took a SIGKILL. */
  jobEnded(): Promise<{ endedAt: number; killed: boolean }>;
  isJobActive(): boolean;
  checkpoints: InterruptionCheckpoints | undefined;
  /** `checkpoint` | `ignore` | `signal:NAME`. @default 'checkpoint' */
  onRebalance?: string;
  simulated: boolean;
  onNotice(notice: InterruptionNotice): void;
  onRebalanceEvent(noticeTime: string, action: string): void;
  /** The rebalance flush is done: a new set, nothing changed, or a failure. */
  onRebalanceFlushed?(flush: FlushResult): void;
  onReport(report: InterruptionReport): void;
  logger: SpotLogger;
  now?: () => number;
}

export class InterruptionHandler {
  readonly #o: InterruptionHandlerOptions;
  readonly #now: () => number;
  #handling: Promise<InterruptionReport> | undefined;

  constructor(options: InterruptionHandlerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** True once a notice was acted on: the job's end is not final until the report is out. */
  get handling(): Promise<InterruptionReport> | undefined {
    return this.#handling;
  }

  /** Acts on the first notice only: AWS does not take one back. */
  onInterruption(action: InstanceAction, noticedAt: number): void {
    this.#handling ??= this.#handle(action, noticedAt);
  }

  onRebalance(rec: RebalanceRecommendation): void {
    const action = this.#o.onRebalance ?? 'checkpoint';
    const log = this.#o.logger;
    log.warn({ noticeTime: rec.noticeTime, action }, 'rebalance recommendation');
    this.#o.onRebalanceEvent(rec.noticeTime, action);
    if (action === 'ignore' || this.#handling) return;
    if (action.startsWith('signal:')) {
      const name = `SIG${action.slice('signal:'.length)}` as NodeJS.Signals;
      if (this.#o.isJobActive()) this.#o.signalJob(name);
    }
    // A flush now, whatever the action: the newest complete checkpoint leaves before the notice.
    void this.#o.checkpoints
      ?.flush('rebalance', { final: false })
      .then((flush) => {
        log.info({ flush }, 'rebalance flush done');
        this.#o.onRebalanceFlushed?.(flush);
      })
      .catch((err: unknown) => log.error({ err }, 'rebalance flush failed'));
  }

  async #handle(action: InstanceAction, noticedAt: number): Promise<InterruptionReport> {
    const log = this.#o.logger;
    const { deadlineAt, parsed } = deadlineFromNotice(action.time, noticedAt);
    if (!parsed) log.warn({ deadline: action.time }, 'unreadable notice time; assuming the usual two minutes');
    const pendingBytes = this.#o.checkpoints?.pendingBytes() ?? 0;
    // Budget for the larger of what is pending now and what a save on SIGTERM will write (about
    // a set's worth): the job's last checkpoint is the one that matters most.
    const uploadBytes = Math.max(pendingBytes, this.#o.checkpoints?.lastSetBytes() ?? 0);
    const graceMs = interruptionGraceMs({
      configuredGraceMs: this.#o.graceMs,
      deadlineAt,
      now: this.#now(),
      estimatedUploadMs: this.#o.checkpoints ? estimateUploadMs(uploadBytes) : 0,
    });
    const notice: InterruptionNotice = { action: action.action, time: action.time, noticedAt, deadlineAt, graceMs, pendingBytes };
    const wasActive = this.#o.isJobActive();
    // SIGTERM first: every millisecond before it is a millisecond the job cannot use.
    const sigtermAt = this.#now();
    if (wasActive) this.#o.stopJob(graceMs);
    log.warn({ notice, jobWasRunning: wasActive }, 'spot interruption notice: job signalled');
    this.#o.onNotice(notice);

    // A job that even SIGKILL cannot end (stuck in the kernel) must not cost us the flush: stop
    // waiting when only the upload estimate and the margin are left before the deadline.
    const flushBy = deadlineAt - (this.#o.checkpoints ? estimateUploadMs(uploadBytes) : 0) - 10_000;
    let flushByTimer: NodeJS.Timeout | undefined;
    const ended = wasActive
      ? await Promise.race([
          this.#o.jobEnded(),
          new Promise<undefined>((resolve) => (flushByTimer = setTimeout(() => resolve(undefined), Math.max(0, flushBy - this.#now())))),
        ])
      : undefined;
    clearTimeout(flushByTimer);
    if (wasActive && !ended) log.error({ flushBy }, 'the job did not end in time; flushing checkpoints anyway');
    let flush: FlushResult | null = null;
    if (this.#o.checkpoints) {
      flush = await this.#o.checkpoints.flush('interruption', { deadlineAt: deadlineAt - 2_000, final: true });
      log.info({ flush }, 'final checkpoint flush done');
    }
    const report: InterruptionReport = {
      notice,
      sigtermAt,
      jobEndedAt: ended?.endedAt ?? null,
      killed: ended?.killed ?? false,
      flush,
      target: this.#o.checkpoints?.describe() ?? null,
      simulated: this.#o.simulated,
    };
    this.#o.onReport(report);
    return report;
  }
}
