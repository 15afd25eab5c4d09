/**
 * A run's process signals, handled in one place for `spotctl run` and `spotctl attach`:
 *
 * - during setup, Ctrl-C (SIGINT) or SIGTERM cancel it: the run's AbortSignal aborts, and the
 *   launch undoes its partial work (aws: terminates the instance) before the error surfaces;
 * - while the job is followed, the first Ctrl-C or SIGTERM stops the job with its grace, the
 *   second forces (SIGKILL);
 * - SIGHUP (the terminal went away), at any time: detach. Nothing is told to stop; the job keeps
 *   running, the run is recorded as detached, and `spotctl attach` resumes it. Without this Node
 *   dies silently with exit 129.
 *
 * `spotctl attach` only watches: with `{ interrupt: 'detach' }` Ctrl-C and SIGTERM detach as
 * SIGHUP does (the job keeps running; `spotctl stop RUN` stops it).
 */
import { SpotctlError, UserError } from '@spotctl/shared';

/** The terminal went away: the controller leaves, the job stays. */
export class Detached extends SpotctlError {
  constructor(
    /** What detached: the terminal went away, or the user pressed Ctrl-C while only watching. */
    readonly by: 'hangup' | 'interrupt' = 'hangup',
  ) {
    super('SPOTCTL_JOB_STATE', by === 'hangup' ? 'detached: the terminal went away (SIGHUP)' : 'detached on Ctrl-C');
  }
}

export interface RunSignalsOptions {
  /** What Ctrl-C and SIGTERM do: stop the job (`run`) or detach from it (`attach`). @default 'stop' */
  interrupt?: 'stop' | 'detach';
}

/** Conventional exit status for "ended by SIGHUP" (128 + 1): the job's own outcome is not known here. */
export const DETACHED_EXIT_CODE = 129;

type SignalSource = Pick<NodeJS.Process, 'on' | 'off'>;

export class RunSignals implements Disposable {
  private readonly setupAbort = new AbortController();
  private readonly hangupAbort = new AbortController();
  private onStop: ((force: boolean) => void) | undefined;
  private stops = 0;
  private readonly onSigint = (): void => this.interrupt('SIGINT');
  private readonly onSigterm = (): void => this.interrupt('SIGTERM');
  private readonly onSighup = (): void => this.hangup();

  private readonly interruptDetaches: boolean;

  constructor(
    private readonly source: SignalSource = process,
    options: RunSignalsOptions = {},
  ) {
    this.interruptDetaches = options.interrupt === 'detach';
    source.on('SIGINT', this.onSigint);
    source.on('SIGTERM', this.onSigterm);
    source.on('SIGHUP', this.onSighup);
  }

  /** Aborted by Ctrl-C (exit 130) or SIGTERM (exit 143) before the job is followed. */
  get setupSignal(): AbortSignal {
    return this.setupAbort.signal;
  }

  /** Aborted (with a `Detached` reason) when the terminal goes away, or on Ctrl-C in detach mode. */
  get hangupSignal(): AbortSignal {
    return this.hangupAbort.signal;
  }

  get hungUp(): boolean {
    return this.hangupAbort.signal.aborted;
  }

  /** From now on Ctrl-C and SIGTERM stop the job: `onStop(false)` the first time, `onStop(true)` after. */
  following(onStop: ((force: boolean) => void) | undefined): void {
    this.onStop = onStop;
  }

  /** Back to setup (a managed run launching its next attempt): Ctrl-C and SIGTERM cancel again. */
  settingUp(): void {
    this.onStop = undefined;
    this.stops = 0;
  }

  private interrupt(signal: 'SIGINT' | 'SIGTERM'): void {
    if (this.interruptDetaches) {
      if (!this.hangupAbort.signal.aborted) this.hangupAbort.abort(new Detached('interrupt'));
      return;
    }
    if (!this.onStop) {
      const reason =
        signal === 'SIGINT'
          ? new UserError('SPOTCTL_USAGE', 'cancelled during setup', { exitCode: 130 })
          : new UserError('SPOTCTL_USAGE', 'terminated during setup (SIGTERM)', { exitCode: 143 });
      if (!this.setupAbort.signal.aborted) this.setupAbort.abort(reason);
      return;
    }
    this.stops++;
    this.onStop(this.stops > 1);
  }

  private hangup(): void {
    // The terminal is gone: a write to it would fail with EIO/EPIPE and crash the exit path.
    process.stdout.on('error', () => undefined);
    process.stderr.on('error', () => undefined);
    if (!this.hangupAbort.signal.aborted) this.hangupAbort.abort(new Detached());
  }

  [Symbol.dispose](): void {
    this.source.off('SIGINT', this.onSigint);
    this.source.off('SIGTERM', this.onSigterm);
    this.source.off('SIGHUP', this.onSighup);
  }
}
