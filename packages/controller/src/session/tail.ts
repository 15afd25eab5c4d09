/**
 * Tails a run to the terminal: live lines, reconnects, stop requests (the run's signals, see
 * run-signals.ts: first Ctrl-C stops the job with its grace, second forces; SIGHUP detaches), and
 * the cursor file that lets `spotctl attach` resume.
 */
import { SpotctlError, type JobStatus } from '@spotctl/shared';
import type { Output } from '../output/output.ts';
import { formatDuration } from '../output/output.ts';
import type { ProviderSession } from '../providers/provider.ts';
import type { RunRecord, RunStore } from '../runs/run-store.ts';
import type { AgentConnection } from '../transport/agent-client.ts';
import { followLogs } from './follow.ts';
import { LogCopyWriter, logCopyPath } from './log-copy.ts';
import { printStoredLog } from './stored-log.ts';
import { spotEventPrinter } from './spot-events.ts';
import type { RunSignals } from './run-signals.ts';

export class ForcedExit extends SpotctlError {
  constructor() {
    super('SPOTCTL_JOB_STATE', 'forced exit on the second Ctrl-C');
  }
}

export interface TailOptions {
  store: RunStore;
  record: RunRecord;
  session: ProviderSession;
  out: Output;
  fromSeq: number;
  /** @default true */
  follow?: boolean;
  /** The run's signals: Ctrl-C/SIGTERM stop the job, SIGHUP ends the tail with `Detached`. @default none (a plain reader) */
  signals?: RunSignals;
  reconnectTimeoutMs?: number;
  /** Remember the last line printed so `attach` resumes after it. @default true */
  saveCursor?: boolean;
  /** Keep every line received in the run's folder here (`logs` falls back to it). @default true */
  keepLocalCopy?: boolean;
  /** See FollowOptions.hostGone: ends the tail with `HostGone` once the host is known to be gone. */
  hostGone?: () => Promise<boolean>;
}

export async function tailRun(options: TailOptions): Promise<{ status: JobStatus; lastSeq: number }> {
  const { out, store, record } = options;
  const abort = new AbortController();
  let current: AgentConnection | undefined;
  let stopState: 'none' | 'requested' | 'forced' = 'none';
  let lastSeq = options.fromSeq - 1;
  let savedSeq = lastSeq;
  const saveCursor = () => {
    if (lastSeq === savedSeq || options.saveCursor === false) return;
    savedSeq = lastSeq;
    try {
      store.writeCursor(record.runId, lastSeq);
    } catch {
      // The cursor only spares `attach` some replay; losing it loses no log.
    }
  };
  const cursorTimer = setInterval(saveCursor, 250);
  cursorTimer.unref();
  using copy = options.keepLocalCopy === false ? undefined : LogCopyWriter.open(logCopyPath(store.runDir(record.runId)));

  const sendStop = (force: boolean) => {
    current?.request('stop', force ? { force: true } : {}).catch(() => undefined);
  };
  const onStop = (force: boolean) => {
    if (!force) {
      stopState = 'requested';
      out.info(`stopping the job (SIGTERM, SIGKILL after ${formatDuration(record.graceMs)}) — press Ctrl-C again to force`);
      sendStop(false);
      return;
    }
    stopState = 'forced';
    out.info('forcing: SIGKILL to the job');
    sendStop(true);
    // Give the kill a moment to come back as the job's end; then leave regardless.
    setTimeout(() => abort.abort(new ForcedExit()), 3000).unref();
  };
  options.signals?.following(onStop);
  // SIGHUP ends the tail (the caller detaches); nothing is told to stop.
  const signal = options.signals ? AbortSignal.any([abort.signal, options.signals.hangupSignal]) : abort.signal;

  try {
    const result = await followLogs({
      connect: (signal) => options.session.connect(signal),
      fromSeq: options.fromSeq,
      follow: options.follow ?? true,
      signal,
      reconnectTimeoutMs: options.reconnectTimeoutMs,
      ...(options.hostGone ? { hostGone: options.hostGone } : {}),
      onLines: (batch) => {
        copy?.write(batch);
        const ok = out.batch(batch);
        lastSeq = batch.lastSeq;
        return ok;
      },
      drain: () => out.drain(),
      endedWithoutAgent: async (nextSeq) => {
        const status = await options.session.readStatus();
        if (!status || status.state === 'running' || status.state === 'starting') return undefined;
        // The agent is gone but the job had ended: the rest of its lines are in the stored log.
        const last = await printStoredLog(options.session, out, nextSeq, copy);
        lastSeq = Math.max(lastSeq, last);
        return { status, lastSeq };
      },
      onSpotEvent: spotEventPrinter(out),
      onConnection: (connection) => {
        current = connection;
        if (stopState === 'requested') sendStop(false);
        if (stopState === 'forced') sendStop(true);
      },
      onDisconnect: (error, attempt) => {
        current = undefined;
        if (attempt === 1 || attempt % 10 === 0)
          out.warn(`lost the agent (${error.message}); reconnecting${attempt > 1 ? ` (attempt ${attempt})` : ''}…`);
      },
      onReconnected: (downForMs) => out.info(`reconnected after ${formatDuration(downForMs)}; resuming at line ${lastSeq + 1}`),
    });
    lastSeq = result.lastSeq;
    return result;
  } finally {
    clearInterval(cursorTimer);
    saveCursor();
  }
}
