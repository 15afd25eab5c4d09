/** Runs the real `spotctl` executable as a user would, with its own SPOTCTL_HOME. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SPOTCTL_BIN = path.join(REPO, 'packages', 'controller', 'bin', 'spotctl.mjs');

export interface CliOptions {
  home: string;
  cwd?: string;
  env?: Record<string, string>;
}

export function spawnSpotctl(args: string[], options: CliOptions): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [SPOTCTL_BIN, ...args], {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, SPOTCTL_HOME: options.home, NO_COLOR: '1', ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Collects a running CLI's output until it exits (bounded). */
export function collect(child: ChildProcessWithoutNullStreams, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `spotctl did not exit within ${timeoutMs} ms\nstdout tail: ${Buffer.concat(out).toString().slice(-2000)}\nstderr: ${Buffer.concat(err).toString().slice(-4000)}`,
        ),
      );
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

export function runSpotctl(args: string[], options: CliOptions & { timeoutMs?: number; input?: string }): Promise<CliResult> {
  const child = spawnSpotctl(args, options);
  child.stdin.end(options.input ?? '');
  return collect(child, options.timeoutMs);
}

/**
 * A running CLI whose output is accumulated from the start, so waiting for a line can never miss
 * one that arrived before the wait began.
 */
export interface WatchedCli {
  child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  /** Resolves once the accumulated text of `stream` matches; the timeout error shows what was read. */
  until(stream: 'stdout' | 'stderr', regex: RegExp, timeoutMs: number): Promise<void>;
  done: Promise<CliResult>;
}

export function watchSpotctl(args: string[], options: CliOptions & { timeoutMs?: number }): WatchedCli {
  const child = spawnSpotctl(args, options);
  child.stdin.end();
  const text = { stdout: '', stderr: '' };
  const waiters = new Set<() => void>();
  child.stdout.on('data', (d: Buffer) => {
    text.stdout += d.toString();
    for (const w of waiters) w();
  });
  child.stderr.on('data', (d: Buffer) => {
    text.stderr += d.toString();
    for (const w of waiters) w();
  });
  const done = collect(child, options.timeoutMs ?? 180_000);
  let exited = false;
  void done.finally(() => {
    exited = true;
    for (const w of waiters) w();
  });
  return {
    child,
    done,
    stdout: () => text.stdout,
    stderr: () => text.stderr,
    until: (stream, regex, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (regex.test(text[stream])) {
            cleanup();
            resolve();
          } else if (exited) {
            cleanup();
            reject(
              new Error(
                `spotctl exited before ${stream} matched ${regex}\nstdout tail: ${text.stdout.slice(-1000)}\nstderr: ${text.stderr.slice(-3000)}`,
              ),
            );
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(
            new Error(
              `timed out after ${timeoutMs} ms waiting for ${regex} on ${stream}\nstdout tail: ${text.stdout.slice(-1000)}\nstderr: ${text.stderr.slice(-3000)}`,
            ),
          );
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
  };
}
