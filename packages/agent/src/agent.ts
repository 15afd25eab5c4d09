/**
 * The composition root: the one place that knows all the parts (log store, supervisor, server,
 * watchdog) and wires them together with callbacks. The parts never import each other.
 */
import fs from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  AGENT_FILES,
  PROTOCOL_VERSION,
  UserError,
  formatBytes,
  formatLimit,
  gpuShortfall,
  type AgentState,
  type FlushResult,
  type CredentialsParams,
  type InterruptionReport,
  type JobStatus,
} from '@spotctl/shared';
// Checkpoint sync (AWS SDK, chokidar) and the spot poller load only when a run uses them: most of
// the agent's idle memory and start time would otherwise go to code a plain run never calls.
import type { CheckpointSync, ForwardedCredentials, ObjectStore } from './checkpoint/index.ts';
import type { ImdsEmulator, InterruptionHandler, SpotPoller } from './spot/index.ts';
import type { ResolvedAgentConfig } from './config.ts';
import { LogArchiver } from './log-archive/index.ts';
import { LogStore, type AppendedRecord } from './log-store/index.ts';
import { createAgentLogger, type AgentLogger, type Logger } from './logger.ts';
import { probeGpus, type GpuProbe } from './gpu/index.ts';
import { AgentServer } from './server/index.ts';
import { writeJsonAtomic } from './state-files.ts';
import { Supervisor, buildJobLaunch, type StopOptions } from './supervisor/index.ts';
import { AGENT_VERSION, buildId as currentBuildId } from './version.ts';
import type { Clock } from './clock.ts';
import { IdleWatchdog, runShutdownCommand, type ShutdownReason } from './watchdog/index.ts';

/** Written before the shutdown action runs, so the controller can tell why the agent went away. */
export const SHUTDOWN_FILE = 'shutdown.json';

/** Why the agent wants its process to exit, and with which code. */
export interface AgentExit {
  code: number;
  reason: string;
}

export interface AgentStartOptions {
  config: ResolvedAgentConfig;
  /** @default the running bundle's hash, 'dev' from source */
  buildId?: string;
  /** Also log to stdout. @default true */
  logToStdout?: boolean;
  /** The watchdog's clock. @default the system clock */
  clock?: Clock;
  /**
   * Called once agent.json is written, before the job starts (so a file descriptor it closes is
   * not inherited by the job). Must not throw.
   */
  onReady?: (state: AgentState) => void;
}

/** How long archiving the log may hold the job's end (and the instance) when the job exits. */
const EXIT_ARCHIVE_TIMEOUT_MS = 30_000;
/** How long the last archive (lines written after the job's end) may hold the agent's exit. */
const CLOSE_ARCHIVE_TIMEOUT_MS = 10_000;

/** Minimum time between status.json rewrites caused only by new log lines. */
const STATUS_WRITE_THROTTLE_MS = 1000;

export class Agent implements AsyncDisposable {
  readonly config: ResolvedAgentConfig;
  readonly logger: Logger;
  readonly #agentLogger: AgentLogger;
  readonly #store: LogStore;
  readonly #supervisor: Supervisor;
  #server: AgentServer | undefined;
  #watchdog: IdleWatchdog | undefined;
  #state: AgentState | undefined;
  #statusTimer: NodeJS.Timeout | undefined;
  #exitRequested: Promise<AgentExit>;
  #resolveExit!: (exit: AgentExit) => void;
  #exitAsked = false;
  #closing: Promise<void> | undefined;
  #droppedLines = 0;
  #droppedLoggedAt = 0;
  #checkpointStore: ObjectStore | undefined;
  #checkpoints: CheckpointSync | undefined;
  /** Copies the job's log to the checkpoint target, so it outlives the instance. */
  #logArchive: LogArchiver | undefined;
  /** The flush after the job ended (or the interruption's), once done. */
  #finalFlush: FlushResult | undefined;
  /** Forwarded S3 credentials (memory only), when the config asks for them. */
  #credentials: ForwardedCredentials | undefined;
  #emulator: ImdsEmulator | undefined;
  #poller: SpotPoller | undefined;
  #interruption: InterruptionHandler | undefined;
  #report: InterruptionReport | undefined;
  /** The job has ended and its wrap-up (final checkpoint, interruption report) is done. */
  #settled = false;
  #wrapUp: Promise<void> | undefined;
  /** The checkpoint set restored before the job started, if any. */
  #restoredSeq: number | undefined;

  private constructor(config: ResolvedAgentConfig, agentLogger: AgentLogger, store: LogStore) {
    this.config = config;
    this.#agentLogger = agentLogger;
    this.logger = agentLogger.logger;
    this.#store = store;
    this.#exitRequested = new Promise((resolve) => (this.#resolveExit = resolve));
    const launch = buildJobLaunch({
      argv: config.command,
      workdir: config.workdir,
      runId: config.runId,
      heartbeatPath: config.heartbeatPath,
      extraEnv: { ...(config.checkpoint ? { SPOTCTL_CHECKPOINT_DIR: config.checkpoint.dir } : {}), ...config.env },
    });
    this.#supervisor = new Supervisor({
      argv: launch.argv,
      cwd: config.workdir,
      env: launch.env,
      graceMs: config.graceMs,
      logger: this.logger.child({ component: 'supervisor' }),
      onOutput: (stream, lines) => {
        let appended: AppendedRecord;
        try {
          // Synchronous write: once this returns, the lines are on disk and readable by cursors.
          appended = this.#store.appendBlock(stream, lines.data, lines.count);
        } catch (err) {
          // Disk full, most likely (checkpoints fill disks). The job must not die for it, and an
          // exception here would take the agent down: count the lost lines and carry on.
          this.#droppedLines += lines.count;
          const now = Date.now();
          if (now - this.#droppedLoggedAt >= 10_000) {
            this.#droppedLoggedAt = now;
            this.logger.error({ err, droppedLines: this.#droppedLines }, 'cannot append job output to the log; lines lost');
          }
          return;
        }
        // Live followers take the lines from memory (they are valid until this call returns).
        this.#server?.notifyLogs(appended);
        this.#scheduleStatusWrite();
      },
      onChange: () => this.#onJobChange(),
    });
  }

  /**
   * Starts everything: the job first (it should not wait for us), then the server; writes
   * agent.json once the port is known.
   */
  static async start(options: AgentStartOptions): Promise<Agent> {
    const { config } = options;
    assertBindable(config.host, config.hostExplicit);
    fs.mkdirSync(config.stateDir, { recursive: true });
    const agentLogger = createAgentLogger({ stateDir: config.stateDir, level: config.logLevel, stdout: options.logToStdout ?? true });
    const log = agentLogger.logger;
    let store: LogStore;
    try {
      store = LogStore.open({ path: path.join(config.stateDir, AGENT_FILES.log) });
    } catch (err) {
      log.fatal({ err }, 'cannot open the job log');
      agentLogger.close();
      throw err;
    }
    const agent = new Agent(config, agentLogger, store);
    try {
      await agent.#start(options);
    } catch (err) {
      log.fatal({ err }, 'agent failed to start');
      // Undo: a job without an agent would run unobserved and unstoppable.
      agent.#supervisor.stop({
        force: true,
        reason: 'agent-start-failed',
        error: `the agent failed to start: ${err instanceof Error ? err.message : String(err)}`,
      });
      await agent.close();
      throw err;
    }
    return agent;
  }

  /** What `start` prints and agent.json holds. */
  get state(): AgentState {
    if (!this.#state) throw new Error('agent is not started');
    return this.#state;
  }

  /** Resolves when something (a client's shutdown, the watchdog, a signal handler) wants the process to exit. */
  get exitRequested(): Promise<AgentExit> {
    return this.#exitRequested;
  }

  /** Resolves once the ended job is wrapped up (final checkpoint flush, interruption report). */
  get jobSettled(): Promise<void> {
    return this.#supervisor.ended.then(() => this.#wrapUp);
  }

  /** Resolves with the final status once the job has ended. */
  get jobEnded(): Promise<JobStatus> {
    return this.#supervisor.ended.then(() => this.status());
  }

  status(): JobStatus {
    const s = this.#supervisor.status;
    return {
      runId: this.config.runId,
      state: s.state,
      command: this.config.command,
      pid: s.pid,
      startedAt: s.startedAt,
      endedAt: s.endedAt,
      exitCode: s.exitCode,
      signal: s.signal,
      stopReason: s.stopReason,
      lastSeq: this.#store.lastSeq,
      error: s.error,
      ...(this.#report ? { interruption: this.#report } : {}),
      ...(this.#checkpoints
        ? { checkpoints: { ...this.#checkpoints.health(), ...(this.#finalFlush ? { finalFlush: this.#finalFlush } : {}) } }
        : {}),
    };
  }

  stopJob(options: StopOptions = {}): JobStatus {
    this.#supervisor.stop(options);
    return this.status();
  }

  /** Asks the owner of the process (main) to exit; the first request wins. */
  requestExit(code: number, reason: string): void {
    if (this.#exitAsked) return;
    this.#exitAsked = true;
    this.logger.info({ code, reason }, 'exit requested');
    this.#resolveExit({ code, reason });
  }

  /**
   * Idempotent. Stops timers, closes the server and its sockets, closes the files. The job keeps
   * running if it still is: stopping it is the caller's decision (the `run` command's signal handler).
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #start(options: AgentStartOptions): Promise<void> {
    const { config } = this;
    const log = this.logger;
    log.info(
      {
        runId: config.runId,
        command: config.command,
        workdir: config.workdir,
        stateDir: config.stateDir,
        continuingAfterSeq: this.#store.lastSeq,
      },
      'agent starting',
    );
    const buildId = options.buildId ?? currentBuildId();
    const startedAt = Date.now();
    // Before the server listens: the controller pushes the first set as soon as it connects.
    if (config.checkpoint?.credentials === 'forwarded') {
      const { ForwardedCredentials, hostCredentialChain } = await import('./checkpoint/index.ts');
      const target = config.checkpoint.target;
      const region =
        (target.kind === 's3' ? target.region : undefined) || process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1';
      this.#credentials = new ForwardedCredentials({
        hostChain: hostCredentialChain(region),
        ...(config.checkpoint.credentialsWaitMs !== undefined ? { waitMs: config.checkpoint.credentialsWaitMs } : {}),
        logger: log.child({ component: 'credentials' }),
      });
    }
    const credentials = this.#credentials;
    // Before the server, so every hello carries what the machine really has (bounded; instant without nvidia-smi).
    const gpuProbe = await probeGpus();
    log.info({ gpus: gpuProbe.gpus, ...(gpuProbe.error ? { gpuProbeError: gpuProbe.error } : {}) }, 'GPU probe');
    this.#server = await AgentServer.listen({
      host: config.host,
      port: config.port,
      token: config.token,
      runId: config.runId,
      agentVersion: AGENT_VERSION,
      buildId,
      startedAt,
      gpus: gpuProbe.gpus,
      logs: this.#store,
      job: {
        status: () => this.status(),
        stop: (o) => this.stopJob(o),
        settled: () => this.#settled,
      },
      logger: log.child({ component: 'server' }),
      onShutdownRequested: () => this.requestExit(0, 'shutdown requested by client'),
      onClientsChanged: (count) => {
        // The idle period starts when the last client leaves, not at the next check.
        if (count === 0) this.#watchdog?.markActive();
      },
      ...(credentials ? { onCredentials: (c: CredentialsParams) => credentials.set(c) } : {}),
    });
    const { host, port } = this.#server.address;
    if (!isLoopback(host)) log.warn({ host, port }, 'listening on a non-loopback address (configured explicitly)');
    this.#state = {
      pid: process.pid,
      host,
      port,
      startedAt,
      agentVersion: AGENT_VERSION,
      buildId,
      protocolVersion: PROTOCOL_VERSION,
    };
    this.#writeStatus();
    writeJsonAtomic(path.join(config.stateDir, AGENT_FILES.state), this.#state);
    log.info({ host, port, buildId }, 'agent listening');
    options.onReady?.(this.#state);

    // The job starts only once its checkpoint is back: running from scratch would discard work.
    // A job that needs GPUs must not start (nor restore its checkpoint) on a machine without them.
    const gpuError = this.#gpuShortfall(gpuProbe);
    const restoreError = gpuError ?? (await this.#prepareCheckpoints());
    if (restoreError) this.#supervisor.failBeforeStart(restoreError);
    // The job learns which set it resumes from (a managed run's next attempt, or --restore-from).
    else this.#supervisor.start(this.#restoredSeq !== undefined ? { SPOTCTL_RESTORED_SET: String(this.#restoredSeq) } : {});
    await this.#startSpotPolling();

    this.#watchdog = new IdleWatchdog({
      idleTimeoutMs: config.idleTimeoutMs,
      maxRuntimeMs: config.maxRuntimeMs,
      heartbeatPath: config.heartbeatPath,
      // Still busy while the ended job's final checkpoint is being written.
      isJobActive: () => this.#supervisor.active || !this.#settled,
      jobStartedAt: () => this.#supervisor.status.startedAt,
      clientCount: () => this.#server?.clientCount ?? 0,
      onMaxRuntime: () => {
        this.#systemLine(`max runtime ${formatLimit(config.maxRuntimeMs)} reached: stopping the job`);
        this.stopJob({ reason: 'max-runtime' });
      },
      onShutdown: (reason) => void this.#runShutdownAction(reason),
      logger: log.child({ component: 'watchdog' }),
      ...(options.clock ? { clock: options.clock } : {}),
    });
    this.#watchdog.start();
    // The job may have ended (or failed to start) before the watchdog existed.
    if (!this.#supervisor.active) this.#watchdog.check();
  }

  #onJobChange(): void {
    const status = this.status();
    const ended = status.state === 'exited' || status.state === 'failed-to-start';
    if (ended) this.#wrapUp ??= this.#wrapUpJob();
    this.#writeStatus();
    this.#server?.notifyStatus(status);
    if (ended) {
      this.logger.info({ status }, 'job ended');
      this.#watchdog?.markActive();
      this.#watchdog?.check();
    }
  }

  /** Final checkpoint flush (or the interruption's), then subscribers may get their `end`. */
  async #wrapUpJob(): Promise<void> {
    // The log up to the job's end goes to the archive alongside the final checkpoint, before followers get `end`.
    const archived = this.#logArchive?.archive('exit', { timeoutMs: this.#archiveBudgetMs(EXIT_ARCHIVE_TIMEOUT_MS) });
    try {
      const handling = this.#interruption?.handling;
      if (handling) {
        this.#finalFlush = (await handling).flush ?? undefined;
        await this.#uploadOutputs();
      } else if (this.#checkpoints) {
        // Bounded: an S3 outage must not hold every follower's `end` (and the instance) for ever.
        const budgetMs = this.config.checkpoint?.exitFlushBudgetMs ?? 0;
        const result = await this.#checkpoints.flush('exit', { final: true, deadlineAt: Date.now() + budgetMs });
        this.#finalFlush = result;
        // A failure reaches the user through the job's final status (finishRun, `ps`), once.
        this.logger[result.error ? 'error' : 'info']({ flush: result }, 'final checkpoint flush after the job ended');
        // A notice that came in during that flush still gets its report before the end.
        await this.#interruption?.handling;
      }
      await archived;
    } catch (err) {
      this.logger.error({ err }, 'wrapping up the job failed');
    } finally {
      this.#settled = true;
      this.#writeStatus();
      this.#server?.notifyStatus(this.status());
      this.#watchdog?.markActive();
      this.#watchdog?.check();
    }
  }

  /** The log archive waits no longer than the final checkpoint may (--checkpoint-flush-timeout): a store that is down must not hold the run's end. */
  #archiveBudgetMs(capMs: number): number {
    return Math.min(capMs, this.config.checkpoint?.exitFlushBudgetMs ?? capMs);
  }

  /** An interrupted run's `--pull` paths, after its final set: bounded by the flush budget, never fatal. */
  async #uploadOutputs(): Promise<void> {
    const patterns = this.config.checkpoint?.outputs;
    const store = this.#checkpointStore;
    if (!patterns?.length || !store) return;
    const log = this.logger.child({ component: 'checkpoint' });
    const budget = new AbortController();
    const timer = setTimeout(() => budget.abort(new Error('out of time')), this.config.checkpoint?.exitFlushBudgetMs ?? 300_000);
    try {
      const { uploadOutputs } = await import('./checkpoint/outputs.ts');
      const result = await uploadOutputs({
        store,
        runId: this.config.runId,
        workdir: this.config.workdir,
        patterns,
        signal: budget.signal,
      });
      log[result.failed.length ? 'error' : 'info']({ outputs: result }, 'uploaded the --pull outputs of the interrupted run');
      this.#systemLine(
        `outputs: ${result.files} files (${formatBytes(result.bytes)}) saved to the checkpoint target under outputs/${result.failed.length ? `; ${result.failed.length} failed (first: ${result.failed[0]!.path}: ${result.failed[0]!.error})` : ''}`,
      );
    } catch (err) {
      log.error({ err }, 'uploading the --pull outputs failed');
    } finally {
      clearTimeout(timer);
    }
  }

  /** Why the job must not start for want of GPUs, or undefined (also when it asked for none). */
  #gpuShortfall(probe: GpuProbe): string | undefined {
    const required = this.config.gpus;
    if (!required) return undefined;
    const shortfall = gpuShortfall({ ...required, where: required.where ?? `host ${os.hostname()}` }, probe.gpus, probe.error);
    return shortfall === undefined ? undefined : `${shortfall}; the job was not started`;
  }

  /** Opens the checkpoint store and restores a set when asked; returns why the job must not start. */
  async #prepareCheckpoints(): Promise<string | undefined> {
    const cfg = this.config.checkpoint;
    if (!cfg) return undefined;
    const log = this.logger.child({ component: 'checkpoint' });
    const { CheckpointSync, createObjectStore, describeTarget, restoreLatest, restoreMilestone } = await import('./checkpoint/index.ts');
    // Forwarded credentials cover both this run's prefix and the restored run's (read).
    const storeOptions = { logger: log, ...(this.#credentials ? { s3: { credentials: this.#credentials.provider } } : {}) };
    this.#checkpointStore = createObjectStore(cfg.target, storeOptions);
    if (cfg.restoreFrom) {
      const source = cfg.restoreTarget ? createObjectStore(cfg.restoreTarget, storeOptions) : this.#checkpointStore;
      const where = describeTarget(cfg.restoreTarget ?? cfg.target, cfg.restoreFrom);
      this.#systemLine(`restoring the latest checkpoint of run ${cfg.restoreFrom} from ${where}`);
      try {
        let lastPercent = 0;
        const restored = await restoreLatest({
          store: source,
          runId: cfg.restoreFrom,
          dir: cfg.dir,
          logger: log,
          // A big set takes minutes: say how far it got, in the job's log where every client sees it.
          onProgress: (p) => {
            const percent = restoreMilestone(p, lastPercent);
            if (percent === undefined) return;
            lastPercent = percent;
            this.#systemLine(`restoring: ${formatBytes(p.bytes)} of ${formatBytes(p.totalBytes)} (${p.files} of ${p.totalFiles} files)`);
          },
        });
        this.#restoredSeq = restored?.seq;
        this.#systemLine(
          restored
            ? `restored checkpoint #${restored.seq}: ${restored.files} files, ${formatBytes(restored.bytes)} in ${(restored.durationMs / 1000).toFixed(1)} s into ${cfg.dir}`
            : `run ${cfg.restoreFrom} has no committed checkpoint yet; starting from scratch`,
        );
      } catch (err) {
        log.error({ err }, 'restore failed');
        return `restoring the checkpoint of run ${cfg.restoreFrom} failed: ${(err as Error).message}`;
      } finally {
        if (source !== this.#checkpointStore) source.close();
      }
    }
    const target = describeTarget(cfg.target, this.config.runId);
    const logStore = this.#store;
    this.#logArchive = new LogArchiver({
      runId: this.config.runId,
      logPath: path.join(this.config.stateDir, AGENT_FILES.log),
      endOffset: () => logStore.endOffset,
      sink: this.#checkpointStore,
      logger: this.logger.child({ component: 'log-archive' }),
    });
    this.#logArchive.start();
    this.#checkpoints = await CheckpointSync.start({
      runId: this.config.runId,
      dir: cfg.dir,
      store: this.#checkpointStore,
      settleMs: cfg.settleMs,
      logger: log,
      onCommitted: (e) => {
        this.#server?.broadcast({ type: 'event', event: 'checkpoint', ...e });
        this.#scheduleStatusWrite();
      },
      // Every failure goes to the controllers (they decide how often to show it) and to status.json (`ps`).
      onFailure: (f) => {
        this.#server?.broadcast({ type: 'event', event: 'checkpoint-failed', ...f, target });
        this.#scheduleStatusWrite();
      },
    });
    return undefined;
  }

  /** The interruption poller: on EC2, against a configured emulator, or a rehearsal's own emulator. */
  async #startSpotPolling(): Promise<void> {
    const { imds, simulate } = this.config;
    if (!imds && !simulate) return;
    const log = this.logger.child({ component: 'spot' });
    const { ImdsEmulator, InterruptionHandler, SpotPoller } = await import('./spot/index.ts');
    let endpoint = imds?.endpoint;
    if (simulate) {
      this.#emulator = new ImdsEmulator();
      endpoint = await this.#emulator.listen({ host: '127.0.0.1', port: 0 });
      const scheduled = this.#emulator.scheduleInterruption({
        action: simulate.action ?? 'terminate',
        inMs: simulate.interruptAfterMs,
        ...(simulate.noticeLeadMs !== undefined ? { leadMs: simulate.noticeLeadMs } : {}),
      });
      this.#systemLine(
        `rehearsal: an interruption notice (${scheduled.action}, deadline ${scheduled.time}) will be served in ${Math.round(simulate.interruptAfterMs / 1000)} s`,
      );
    }
    const checkpoints = this.#checkpoints;
    const target = this.config.checkpoint?.target;
    // Already loaded when there are checkpoints; only then is it needed.
    const describeTarget = checkpoints ? (await import('./checkpoint/index.ts')).describeTarget : undefined;
    this.#interruption = new InterruptionHandler({
      graceMs: this.config.graceMs,
      stopJob: (graceMs) => this.#supervisor.stop({ graceMs, reason: 'spot-interruption' }),
      signalJob: (signal) => this.#supervisor.signal(signal),
      jobEnded: async () => {
        const s = await this.#supervisor.ended;
        return { endedAt: s.endedAt ?? Date.now(), killed: s.signal === 'SIGKILL' };
      },
      isJobActive: () => this.#supervisor.active,
      checkpoints:
        checkpoints && target && describeTarget
          ? {
              pendingBytes: () => checkpoints.pendingBytes(),
              lastSetBytes: () => checkpoints.lastCommitted?.bytes ?? 0,
              flush: (reason, o) => checkpoints.flush(reason, o),
              describe: () => describeTarget(target, this.config.runId),
            }
          : undefined,
      onRebalance: this.config.onRebalance,
      simulated: simulate !== undefined,
      onNotice: (notice) => {
        this.#server?.broadcast({ type: 'event', event: 'interruption', notice });
        // The instance may go in two minutes: the log so far goes to the archive now.
        void this.#logArchive?.archive('interruption', { timeoutMs: this.#archiveBudgetMs(EXIT_ARCHIVE_TIMEOUT_MS) });
      },
      onRebalanceEvent: (noticeTime, action) => this.#server?.broadcast({ type: 'event', event: 'rebalance', noticeTime, action }),
      // A new set is announced by its own `checkpoint` event; the other outcomes are said here.
      onRebalanceFlushed: (flush) => {
        if (flush.error)
          this.#systemLine(
            `rebalance checkpoint failed: ${flush.error}${flush.committedSeq !== null ? `; the newest set is still #${flush.committedSeq}` : ''}`,
          );
        else if (flush.unchanged)
          this.#systemLine(
            flush.committedSeq !== null
              ? `rebalance checkpoint: nothing changed since set #${flush.committedSeq}`
              : 'rebalance checkpoint: the checkpoint folder is empty, nothing to save',
          );
      },
      onReport: (report) => {
        this.#report = report;
        this.#writeStatus();
        this.#server?.broadcast({ type: 'event', event: 'interruption-report', report });
      },
      logger: log,
    });
    const handler = this.#interruption;
    this.#poller = new SpotPoller({
      ...imds,
      ...(endpoint ? { endpoint } : {}),
      logger: log,
      onInterruption: (action, noticedAt) => handler.onInterruption(action, noticedAt),
      onRebalance: (rec) => handler.onRebalance(rec),
    });
    this.#poller.start();
    log.info({ endpoint: endpoint ?? 'default', simulated: simulate !== undefined }, 'polling for spot interruption notices');
  }

  /** A line of spotctl's own in the job's log (stream `system`), so the user sees it in order. */
  #systemLine(text: string): void {
    try {
      this.#store.append([{ stream: 'system', text: `spotctl: ${text}` }]);
      this.#server?.notifyLogs();
    } catch (err) {
      this.logger.warn({ err }, 'cannot append a system line');
    }
  }

  #scheduleStatusWrite(): void {
    if (this.#statusTimer || this.#closing) return;
    this.#statusTimer = setTimeout(() => {
      this.#statusTimer = undefined;
      this.#writeStatus();
    }, STATUS_WRITE_THROTTLE_MS);
    this.#statusTimer.unref();
  }

  #writeStatus(): void {
    if (this.#statusTimer) clearTimeout(this.#statusTimer);
    this.#statusTimer = undefined;
    try {
      writeJsonAtomic(path.join(this.config.stateDir, AGENT_FILES.status), this.status());
    } catch (err) {
      this.logger.error({ err }, 'cannot write status.json');
    }
  }

  async #runShutdownAction(reason: ShutdownReason): Promise<void> {
    const action = this.config.shutdownAction;
    const log = this.logger.child({ component: 'watchdog' });
    try {
      writeJsonAtomic(path.join(this.config.stateDir, SHUTDOWN_FILE), { reason, at: Date.now() });
    } catch (err) {
      log.error({ err }, `cannot write ${SHUTDOWN_FILE}`);
    }
    log.warn({ reason, action }, 'running the shutdown action');
    if (action.kind === 'command') await runShutdownCommand({ argv: action.argv, logger: log });
    this.requestExit(0, `watchdog: ${reason}`);
  }

  async #close(): Promise<void> {
    const log = this.logger;
    this.#watchdog?.close();
    await this.#poller?.close().catch((err: unknown) => log.warn({ err }, 'closing the spot poller failed'));
    await this.#emulator?.close().catch((err: unknown) => log.warn({ err }, 'closing the emulator failed'));
    await this.#checkpoints?.close().catch((err: unknown) => log.warn({ err }, 'closing checkpoint sync failed'));
    if (this.#logArchive) {
      // Lines written after the job's end (an interruption report, say) go too.
      this.#logArchive.close();
      await this.#logArchive.archive('close', { timeoutMs: this.#archiveBudgetMs(CLOSE_ARCHIVE_TIMEOUT_MS) });
    }
    this.#checkpointStore?.close();
    this.#credentials?.close();
    if (this.#statusTimer) clearTimeout(this.#statusTimer);
    this.#statusTimer = undefined;
    try {
      await this.#server?.close();
    } catch (err) {
      log.warn({ err }, 'closing the server failed');
    }
    await this.#supervisor.close();
    this.#writeStatus();
    await this.#store.close();
    log.info('agent closed');
    this.#agentLogger.close();
  }
}

/** The agent listens on loopback (reached through an SSH tunnel) unless the config says otherwise. */
function assertBindable(host: string, explicit: boolean): void {
  if (explicit || isLoopback(host)) return;
  throw new UserError('SPOTCTL_CONFIG', `refusing to listen on ${host}: only loopback is allowed unless "host" is set in the config`, {
    exitCode: 2,
  });
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}
