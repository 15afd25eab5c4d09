/**
 * The agent's command line: `run`, `start` (daemonize) and `version`. The controller depends on
 * this exact contract; see the README of packages/agent.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { AGENT_FILES, MAX_TIMER_MS, SpotctlError, UserError, parseAgentState, type AgentState } from '@spotctl/shared';
import { loadAgentConfig } from './config.ts';
import { isAgentProcess } from './state-files.ts';
import { versionInfo } from './version.ts';

/** Where `start` sends the daemon's stdout/stderr (pino's stdout copy, and crashes). */
export const AGENT_OUT_FILE = 'agent.out';

/** `start` gives the daemon this long to write agent.json. */
const START_TIMEOUT_MS = 15_000;
/** `run` waits at most this long for close() on the way out; then it exits anyway. */
const CLOSE_TIMEOUT_MS = 10_000;
/** V8 flag the daemon runs with (see the spawn in `start`). */
const MEMORY_REDUCER_SINGLE_GC = '--memory-reducer-single-gc';

const USAGE = `usage: agent.mjs <command>

  run --config FILE     run the job and the agent in the foreground until shutdown
                        (--ready-fd N: write the state line to that descriptor once ready)
  start --config FILE   validate the config, start \`run\` as a daemon, print its state as JSON
  version               print {"agentVersion","buildId","protocolVersion"} as JSON

Environment: SPOTCTL_AGENT_TOKEN, SPOTCTL_AGENT_PORT, SPOTCTL_AGENT_LOG_LEVEL override the config.`;

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

const processIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Runs one command; resolves with the process exit code. */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  try {
    const [command, ...rest] = argv;
    switch (command) {
      case 'version':
        io.stdout(`${JSON.stringify(versionInfo())}\n`);
        return 0;
      case 'run': {
        const { config, readyFd } = runFlags(rest);
        return await runForeground(config, readyFd);
      }
      case 'start':
        return await startDaemon(configFlag(rest), io);
      case 'help':
      case '--help':
      case '-h':
        io.stdout(`${USAGE}\n`);
        return 0;
      default:
        throw new UserError('SPOTCTL_USAGE', command === undefined ? 'missing command' : `unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (err instanceof UserError) {
      io.stderr(`spotctl-agent: ${err.message}\n`);
      if (err.code === 'SPOTCTL_USAGE') io.stderr(`${USAGE}\n`);
      return err.exitCode;
    }
    const message = err instanceof Error ? err.message : String(err);
    io.stderr(`spotctl-agent: ${message} (this looks like a bug; the agent log is in the state directory)\n`);
    if (process.env['DEBUG'] && err instanceof Error && err.stack) io.stderr(`${err.stack}\n`);
    return 1;
  }
}

function configFlag(args: readonly string[]): string {
  let config: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--config') {
      config = args[++i];
      if (config === undefined) throw new UserError('SPOTCTL_USAGE', '--config needs a file');
    } else if (arg.startsWith('--config=')) {
      config = arg.slice('--config='.length);
    } else {
      throw new UserError('SPOTCTL_USAGE', `unexpected argument ${JSON.stringify(arg)}`);
    }
  }
  if (!config) throw new UserError('SPOTCTL_USAGE', 'missing --config FILE');
  return config;
}

/**
 * `run`'s flags: `--config FILE`, and `--ready-fd N`, which `start` passes: a pipe on which `run`
 * writes its state line once agent.json is written, then closes it.
 */
function runFlags(args: readonly string[]): { config: string; readyFd: number | undefined } {
  const at = args.indexOf('--ready-fd');
  if (at < 0) return { config: configFlag(args), readyFd: undefined };
  const readyFd = Number(args[at + 1]);
  if (!Number.isInteger(readyFd) || readyFd < 3)
    throw new UserError('SPOTCTL_USAGE', '--ready-fd needs a file descriptor number from 3 up');
  return { config: configFlag([...args.slice(0, at), ...args.slice(at + 2)]), readyFd };
}

/** `run`: the agent in this process, until a shutdown request, the watchdog, or a signal. */
async function runForeground(configPath: string, readyFd?: number): Promise<number> {
  const config = loadAgentConfig(configPath);
  // Loaded here, not at the top: `start` and `version` run in a fresh process that never needs
  // fastify, pino or the AWS SDK, and parsing them would only slow the daemon's start.
  const { Agent } = await import('./agent.ts');
  const agent = await Agent.start({
    config,
    ...(readyFd === undefined
      ? {}
      : {
          onReady: (state: AgentState): void => {
            // Closed before the job starts, so the job does not inherit it. `start` may be gone
            // already (it gave up): a broken pipe only means nobody is waiting.
            try {
              fs.writeSync(readyFd, `${JSON.stringify(state)}\n`);
            } catch {
              // nobody is waiting
            }
            try {
              fs.closeSync(readyFd);
            } catch {
              // already closed
            }
          },
        }),
  });
  const log = agent.logger;
  // Node would print these to stderr (agent.out) and exit; put them in agent.log first, where
  // the controller looks.
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception; the agent exits');
    process.exit(1);
  });
  process.on('unhandledRejection', (reason) => {
    log.fatal({ err: reason }, 'unhandled rejection; the agent exits');
    process.exit(1);
  });
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals += 1;
    if (signals === 1) {
      // Stop the job with its grace period, exit once it has ended.
      log.info({ signal, graceMs: config.graceMs }, 'signal received: stopping the job, then exiting');
      agent.stopJob({ reason: 'agent-signal' });
      // Capped: past MAX_TIMER_MS a timer fires at once, which would exit before the grace even began.
      const bound = setTimeout(
        () => agent.requestExit(1, `${signal}: the job did not end in time`),
        Math.min(config.graceMs + 10_000, MAX_TIMER_MS),
      );
      bound.unref();
      // Settled, not just ended: the final checkpoint flush must finish before we exit.
      void agent.jobSettled.then(() => {
        clearTimeout(bound);
        agent.requestExit(0, signal);
      });
    } else {
      // A second signal forces: no more grace.
      log.warn({ signal }, 'second signal: killing the job and exiting now');
      agent.stopJob({ force: true, reason: 'agent-signal' });
      agent.requestExit(1, `${signal} (forced)`);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // A daemon outlives the terminal that started it; `start` uses a new session anyway.
  process.on('SIGHUP', () => log.info('SIGHUP ignored'));

  const exit = await agent.exitRequested;
  const closed = agent.close().then(
    () => true,
    (err: unknown) => {
      log.error({ err }, 'close failed');
      return true;
    },
  );
  const timedOut = sleep(CLOSE_TIMEOUT_MS, false, { ref: false });
  if (!(await Promise.race([closed, timedOut]))) process.stderr.write('spotctl-agent: close() timed out; exiting anyway\n');
  return exit.code;
}

/**
 * `start`: validates the config, then runs `run` as a daemon in its own session (so it survives
 * the ssh session that started it) and prints the state it writes to agent.json. Idempotent: when
 * an agent for this state directory is alive, prints its state.
 */
async function startDaemon(configPath: string, io: CliIo): Promise<number> {
  const config = loadAgentConfig(configPath);
  fs.mkdirSync(config.stateDir, { recursive: true });
  const statePath = path.join(config.stateDir, AGENT_FILES.state);
  const existing = readState(statePath);
  if (existing && isAgentProcess(existing.pid)) {
    io.stdout(`${JSON.stringify(existing)}\n`);
    return 0;
  }
  // A stale file from a dead agent must not be mistaken for the new one's.
  fs.rmSync(statePath, { force: true });

  const outPath = path.join(config.stateDir, AGENT_OUT_FILE);
  const outFd = fs.openSync(outPath, 'a');
  const outStart = fs.fstatSync(outFd).size;
  const bundle = process.argv[1];
  if (!bundle) throw new SpotctlError('SPOTCTL_INTERNAL', 'cannot tell which file to daemonize (process.argv[1] is empty)');
  let child;
  try {
    // fd 3 is a pipe on which the daemon says it is ready: no polling interval on the way to
    // ready (polling every 25 ms cost 12 ms on average). agent.json stays the source of truth.
    // No V8 heap-size flags: --max-semi-space-size=2 took the 1 GB flood's peak RSS from 89 to 85 MB
    // (target 100) but added 35 ms to start-to-ready (285 → 320 ms, target 300); 4 was 87 MB / 305 ms.
    // V8's memory reducer runs full GCs ("Mark-Compact (reduce)" in --trace-gc) 8 s after start-up:
    // most of an idle agent's CPU in its first minute. The first returns 14–18 MB of RSS; the
    // second freed nothing and cost 17–25 ms (BENCHMARKS.md, agent-idle): one is enough.
    const v8Flags = process.execArgv.includes(MEMORY_REDUCER_SINGLE_GC) ? [] : [MEMORY_REDUCER_SINGLE_GC];
    child = spawn(
      process.execPath,
      [...process.execArgv, ...v8Flags, bundle, 'run', '--config', path.resolve(configPath), '--ready-fd', '3'],
      {
        detached: true,
        stdio: ['ignore', outFd, outFd, 'pipe'],
      },
    );
  } finally {
    fs.closeSync(outFd);
  }
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  child.once('error', () => (exited = { code: null, signal: null }));
  child.unref();
  const readyPipe = child.stdio[3] as Readable | null | undefined;
  // Resolves when the daemon says it is ready, or closes the pipe (it exited, or it is an agent
  // that does not know --ready-fd): either way, time to look at agent.json again.
  const signalled = new Promise<void>((resolve) => {
    if (!readyPipe) return resolve();
    readyPipe.on('data', (chunk: Buffer) => {
      if (chunk.includes(10)) resolve();
    });
    readyPipe.once('close', () => resolve());
    readyPipe.once('error', () => resolve());
  });
  let woken = false;
  void signalled.then(() => (woken = true));
  try {
    return await waitForDaemon({ child, statePath, outPath, outStart, io, exited: () => exited, signalled, woken: () => woken });
  } finally {
    readyPipe?.destroy();
  }
}

interface WaitForDaemonOptions {
  child: ChildProcess;
  statePath: string;
  outPath: string;
  outStart: number;
  io: CliIo;
  exited(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  signalled: Promise<void>;
  woken(): boolean;
}

async function waitForDaemon(options: WaitForDaemonOptions): Promise<number> {
  const { child, statePath, outPath, outStart, io, signalled } = options;

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const state = readState(statePath);
    if (state && state.pid === child.pid) {
      io.stdout(`${JSON.stringify(state)}\n`);
      return 0;
    }
    const exited = options.exited();
    if (exited) {
      io.stderr(tailOf(outPath, outStart));
      io.stderr(
        `spotctl-agent: the agent exited (${exited.signal ?? `code ${exited.code}`}) before it was ready; its output is above and in ${outPath}\n`,
      );
      return 1;
    }
    if (Date.now() >= deadline) {
      // Do not leave a half-started daemon behind: its own SIGTERM handler stops the job.
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      io.stderr(tailOf(outPath, outStart));
      io.stderr(`spotctl-agent: the agent did not write ${statePath} within ${START_TIMEOUT_MS} ms; stopped it\n`);
      return 1;
    }
    // The pipe says when; the poll only covers a daemon that exits or never writes to it.
    await (options.woken() ? sleep(25) : Promise.race([signalled, sleep(25)]));
  }
}

function readState(file: string): AgentState | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const parsed = parseAgentState(text.trim());
  return parsed.ok ? parsed.value : undefined;
}

/** The last lines the daemon wrote since `from`, for the error message of a failed start. */
function tailOf(file: string, from: number, maxBytes = 4096): string {
  try {
    const size = fs.statSync(file).size;
    const start = Math.max(from, size - maxBytes);
    const fd = fs.openSync(file, 'r');
    try {
      const buffer = Buffer.alloc(size - start);
      fs.readSync(fd, buffer, 0, buffer.length, start);
      const text = buffer.toString('utf8');
      return text.length === 0 || text.endsWith('\n') ? text : `${text}\n`;
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}
