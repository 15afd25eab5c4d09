/**
 * Runs the job: one process, in its own process group, with its output split into lines.
 *
 * The group matters: a job is usually a shell or a Python launcher with children, and stopping
 * only the leader would strand the children (still holding the GPU, still billing).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { DEFAULT_GRACE_MS, MAX_LINE_BYTES, SpotctlError, type JobState } from '@spotctl/shared';
import { LineSplitter, type LineBlock } from './line-splitter.ts';
import { openOutputPipes, type OutputPipe } from './output-pipe.ts';

export type OutputStream = 'stdout' | 'stderr';

/** The process part of a JobStatus; the composition root adds runId, command and lastSeq. */
export interface JobProcessStatus {
  state: JobState;
  pid: number | null;
  startedAt: number | null;
  endedAt: number | null;
  exitCode: number | null;
  signal: string | null;
  stopReason: string | null;
  error: string | null;
}

export interface StopOptions {
  /** SIGKILL the group at once. @default false */
  force?: boolean;
  /** Time between SIGTERM and SIGKILL. @default the supervisor's graceMs */
  graceMs?: number;
  /** Recorded as the status' stopReason. @default 'force' when force, else 'stop' */
  reason?: string;
  /** Recorded as the status' error: what went wrong, when the stop is a failure's undo. */
  error?: string;
}

export interface SupervisorOptions {
  /** argv[0] is executed directly, without a shell. */
  argv: readonly string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** @default DEFAULT_GRACE_MS (90 s) */
  graceMs?: number;
  /** @default MAX_LINE_BYTES */
  maxLineBytes?: number;
  /**
   * After the job exits, how long to wait for its stdout/stderr to close. A grandchild that
   * inherited the pipes can keep them open forever; the job is over when the leader is.
   * @default 2000
   */
  pipeDrainMs?: number;
  /**
   * Lines of one chunk of output, in order, as bytes (each line ending in '\n'). Called
   * synchronously from the stream's data event; the block may be a view into the chunk.
   */
  onOutput(stream: OutputStream, lines: LineBlock): void;
  /** Any change of the status (state, pid, stopReason, ...). */
  onChange?(status: JobProcessStatus): void;
  logger: Logger;
  /** @default Date.now */
  now?: () => number;
}

export class Supervisor implements AsyncDisposable {
  readonly #options: SupervisorOptions;
  readonly #now: () => number;
  #status: JobProcessStatus = {
    state: 'starting',
    pid: null,
    startedAt: null,
    endedAt: null,
    exitCode: null,
    signal: null,
    stopReason: null,
    error: null,
  };
  #child: ChildProcess | undefined;
  #started = false;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #openPipes = new Set<Readable>();
  #splitters = new Map<Readable, { stream: OutputStream; splitter: LineSplitter }>();
  #drainTimer: NodeJS.Timeout | undefined;
  #killTimer: NodeJS.Timeout | undefined;
  #killDeadline = Number.POSITIVE_INFINITY;
  #termSent = false;
  readonly #ended: Promise<JobProcessStatus>;
  #resolveEnded!: (status: JobProcessStatus) => void;
  #closed = false;

  constructor(options: SupervisorOptions) {
    if (options.argv.length === 0) throw new SpotctlError('SPOTCTL_INTERNAL', 'empty job command');
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#ended = new Promise((resolve) => (this.#resolveEnded = resolve));
  }

  get status(): JobProcessStatus {
    return { ...this.#status };
  }

  /** True until the job has exited or failed to start. */
  get active(): boolean {
    return this.#status.state === 'starting' || this.#status.state === 'running';
  }

  /** Resolves with the final status once the job has ended (exited or failed to start). */
  get ended(): Promise<JobProcessStatus> {
    return this.#ended;
  }

  /** `extraEnv` adds what is known only at start (the checkpoint set that was restored). */
  start(extraEnv: Record<string, string> = {}): void {
    if (this.#started) throw new SpotctlError('SPOTCTL_INTERNAL', 'job already started');
    this.#started = true;
    const [file, ...args] = this.#options.argv as [string, ...string[]];
    const log = this.#options.logger;
    let child: ChildProcess;
    const pipes = this.#outputPipes();
    try {
      child = spawn(file, args, {
        cwd: this.#options.cwd,
        env: { ...this.#options.env, ...extraEnv },
        // Own process group: stop() signals the whole group, and a Ctrl-C or SIGHUP aimed at the
        // agent's group (the ssh session that started it) does not reach the job.
        detached: true,
        stdio: pipes ? ['ignore', pipes[0][1].writeFd, pipes[1][1].writeFd] : ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      // spawn throws synchronously for bad arguments (e.g. a NUL byte in argv).
      for (const [, p] of pipes ?? []) p.socket.destroy();
      this.#failToStart(err as Error);
      return;
    } finally {
      // The job has its copies; ours would keep the pipes from ever reaching end-of-file.
      for (const [, p] of pipes ?? []) fs.closeSync(p.writeFd);
    }
    this.#child = child;
    child.once('spawn', () => {
      if (this.#status.state !== 'starting') return;
      this.#status.state = 'running';
      this.#status.pid = child.pid ?? null;
      this.#status.startedAt = this.#now();
      log.info({ jobPid: child.pid, argv: this.#options.argv, cwd: this.#options.cwd }, 'job started');
      this.#changed();
    });
    child.on('error', (err) => {
      // Before 'spawn', an error means the process never ran (ENOENT, EACCES, bad cwd).
      if (this.#status.state === 'starting') this.#failToStart(err);
      else log.warn({ err }, 'job process error');
    });
    child.once('exit', (code, signal) => {
      this.#exit = { code, signal };
      log.info({ jobPid: child.pid, exitCode: code, signal }, 'job exited');
      if (this.#openPipes.size > 0) {
        this.#drainTimer = setTimeout(() => {
          log.warn({ pipeDrainMs: this.#pipeDrainMs }, 'job output still open after exit (a child inherited it); ending the job anyway');
          this.#finish();
        }, this.#pipeDrainMs);
      }
      this.#maybeFinish();
    });
    const readers: (readonly [OutputStream, Readable | null])[] = pipes
      ? pipes.map(([stream, p]) => [stream, p.socket] as const)
      : [
          ['stdout', child.stdout],
          ['stderr', child.stderr],
        ];
    for (const [stream, pipe] of readers) {
      if (!pipe) continue;
      if (!pipes) {
        const splitter = this.#splitter(stream, pipe);
        pipe.on('data', (chunk: Buffer) => {
          const lines = splitter.push(chunk);
          if (lines) this.#options.onOutput(stream, lines);
        });
      }
      this.#openPipes.add(pipe);
      pipe.on('error', (err) => log.warn({ err, stream }, 'job output stream error'));
      pipe.once('close', () => {
        this.#flushPipe(pipe);
        this.#maybeFinish();
      });
    }
  }

  /**
   * Stops the job: SIGTERM to the group, SIGKILL after the grace period (or at once with force).
   * Returns without waiting for the exit; await {@link ended} for that. Stopping an ended job
   * just returns its status.
   */
  stop(options: StopOptions = {}): JobProcessStatus {
    if (!this.active) return this.status;
    const force = options.force ?? false;
    const reason = options.reason ?? (force ? 'force' : 'stop');
    const log = this.#options.logger;
    if (this.#status.stopReason === null) {
      this.#status.stopReason = reason;
      if (options.error !== undefined && this.#status.error === null) this.#status.error = options.error;
      this.#changed();
    }
    if (force) {
      log.info({ reason }, 'stopping job: SIGKILL');
      this.#clearKillTimer();
      this.#signal('SIGKILL');
      return this.status;
    }
    const graceMs = options.graceMs ?? this.#options.graceMs ?? DEFAULT_GRACE_MS;
    if (!this.#termSent) {
      this.#termSent = true;
      log.info({ reason, graceMs }, 'stopping job: SIGTERM, SIGKILL after grace');
      this.#signal('SIGTERM');
    }
    const deadline = this.#now() + graceMs;
    if (deadline < this.#killDeadline) {
      // A second stop with a shorter grace moves the SIGKILL earlier, never later.
      this.#clearKillTimer();
      this.#killDeadline = deadline;
      this.#killTimer = setTimeout(() => {
        this.#killTimer = undefined;
        log.info('grace period over: SIGKILL');
        this.#signal('SIGKILL');
      }, graceMs);
      // The pending SIGKILL also reaches children that outlive the leader; it must not keep a
      // closing agent alive, though.
      this.#killTimer.unref();
    }
    return this.status;
  }

  /** Idempotent. Does not stop the job: a job outlives the agent unless someone stops it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // A stop in progress ends now rather than never: the timer would die with us.
    if (this.#killTimer && this.active) this.#signal('SIGKILL');
    this.#clearKillTimer();
    if (this.active) this.#options.logger.warn({ jobPid: this.#status.pid }, 'supervisor closed while the job runs; leaving it running');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  get #pipeDrainMs(): number {
    return this.#options.pipeDrainMs ?? 2000;
  }

  #signal(signal: NodeJS.Signals): void {
    const pid = this.#child?.pid;
    if (pid === undefined) return;
    try {
      // Negative pid: the whole process group the job leads.
      process.kill(-pid, signal);
    } catch (err) {
      // ESRCH: the group is already gone.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') this.#options.logger.warn({ err, signal }, 'could not signal the job');
    }
  }

  #clearKillTimer(): void {
    if (this.#killTimer) clearTimeout(this.#killTimer);
    this.#killTimer = undefined;
    this.#killDeadline = Number.POSITIVE_INFINITY;
  }

  /**
   * The job's stdout and stderr pipes, read into reused buffers, their chunks split into lines and
   * handed on at once. Undefined when they cannot be made (no mkfifo, no writable temp dir): the
   * job then gets Node's ordinary pipes, which cost more memory under a flood but work the same.
   */
  #outputPipes(): [[OutputStream, OutputPipe], [OutputStream, OutputPipe]] | undefined {
    const streams = ['stdout', 'stderr'] as const;
    const splitters: LineSplitter[] = [];
    let made: OutputPipe[];
    try {
      // Synchronous all the way to the log file: the chunk is a view into the pipe's reused buffer.
      made = openOutputPipes(
        streams.map((stream, i) => (chunk: Buffer) => {
          const lines = splitters[i]?.push(chunk);
          if (lines) this.#options.onOutput(stream, lines);
        }),
      );
    } catch (err) {
      this.#options.logger.warn({ err }, 'cannot make the job output pipes; using ordinary ones');
      return undefined;
    }
    const [stdout, stderr] = made as [OutputPipe, OutputPipe];
    splitters.push(this.#splitter('stdout', stdout.socket), this.#splitter('stderr', stderr.socket));
    return [
      ['stdout', stdout],
      ['stderr', stderr],
    ];
  }

  #splitter(stream: OutputStream, pipe: Readable): LineSplitter {
    const splitter = new LineSplitter(this.#options.maxLineBytes ?? MAX_LINE_BYTES);
    this.#splitters.set(pipe, { stream, splitter });
    return splitter;
  }

  #flushPipe(pipe: Readable): void {
    if (!this.#openPipes.delete(pipe)) return;
    const entry = this.#splitters.get(pipe);
    if (!entry) return;
    const rest = entry.splitter.flush();
    if (rest) this.#options.onOutput(entry.stream, rest);
  }

  #maybeFinish(): void {
    if (this.#exit && this.#openPipes.size === 0) this.#finish();
  }

  #finish(): void {
    if (!this.active || !this.#exit) return;
    if (this.#drainTimer) clearTimeout(this.#drainTimer);
    for (const pipe of [...this.#openPipes]) {
      this.#flushPipe(pipe);
      pipe.destroy();
    }
    this.#status.state = 'exited';
    this.#status.exitCode = this.#exit.code;
    this.#status.signal = this.#exit.signal;
    this.#status.endedAt = this.#now();
    this.#reapGroup();
    this.#changed();
    this.#resolveEnded(this.status);
  }

  /**
   * The job is its group's leader; when it exits, whatever it started in the background (a
   * `sleep &`, a data loader) would otherwise live on, holding a GPU or the instance's idle clock.
   */
  #reapGroup(): void {
    const pid = this.#child?.pid;
    if (pid === undefined || !groupAlive(pid)) return;
    this.#options.logger.warn({ jobPid: pid }, 'the job left processes in its group: SIGTERM, SIGKILL after 2 s');
    this.#signal('SIGTERM');
    const timer = setTimeout(() => {
      if (groupAlive(pid)) this.#signal('SIGKILL');
    }, 2000);
    timer.unref();
  }

  /** Sends a signal to the job's whole process group (e.g. SIGUSR1: "checkpoint now"). */
  signal(signal: NodeJS.Signals): void {
    if (this.#status.state === 'running') this.#signal(signal);
  }

  /**
   * Marks the job as unable to start without spawning it, e.g. when its checkpoint could not be
   * restored: running it from scratch would silently throw work away.
   */
  failBeforeStart(message: string): void {
    if (this.#started) throw new SpotctlError('SPOTCTL_INTERNAL', 'job already started');
    this.#started = true;
    this.#failToStart(new Error(message), message);
  }

  #failToStart(err: Error, described?: string): void {
    if (!this.active) return;
    const message = described ?? describeSpawnError(err, this.#options.argv[0] ?? '', this.#options.cwd);
    this.#options.logger.error({ err }, `job failed to start: ${message}`);
    // The user reads the job's log, not the agent's: put the reason there too.
    const texts = `spotctl: ${message}`.split('\n');
    this.#options.onOutput('stderr', { data: [Buffer.from(`${texts.join('\n')}\n`)], count: texts.length });
    this.#status.state = 'failed-to-start';
    this.#status.error = message;
    // What a shell reports for "command not found".
    this.#status.exitCode = 127;
    this.#status.endedAt = this.#now();
    this.#changed();
    this.#resolveEnded(this.status);
  }

  #changed(): void {
    this.#options.onChange?.(this.status);
  }
}

/** True while any process of the group led by `pid` exists. */
function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** spawn reports a missing cwd as `spawn <cmd> ENOENT`, blaming the command; say which it was. */
function describeSpawnError(err: Error, file: string, cwd: string): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') {
    let cwdOk = false;
    try {
      cwdOk = fs.statSync(cwd).isDirectory();
    } catch {
      cwdOk = false;
    }
    return cwdOk ? `command not found: ${file}` : `working directory does not exist: ${cwd}`;
  }
  if (code === 'EACCES') return `permission denied: ${file}`;
  return `cannot start ${file}: ${err.message}`;
}
