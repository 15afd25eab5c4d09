// @ts-check
/** Process helpers for benchmarks: bounded runs, /proc readers, pid bookkeeping. */
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Runs a command to completion, killing it (SIGKILL) after `timeoutMs` or on abort.
 * `stdout` may be 'pipe' (collected), 'ignore', or a file descriptor.
 *
 * @returns {Promise<{ code: number | null, signal: string | null, stdout: string, stderr: string, ms: number }>}
 */
export function runCommand(file, args, options = {}) {
  const { env, cwd, stdout = 'pipe', timeoutMs = 120_000, signal, input } = options;
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const t0 = performance.now();
    const child = spawn(file, args, { env, cwd, stdio: [input === undefined ? 'ignore' : 'pipe', stdout, 'pipe'] });
    const out = [];
    const err = [];
    child.stdout?.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    if (input !== undefined) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(input);
    }
    const kill = () => child.kill('SIGKILL');
    const timer = setTimeout(() => {
      kill();
      reject(
        new Error(`${file} ${args.join(' ')} did not finish within ${timeoutMs} ms; stderr: ${Buffer.concat(err).toString().slice(-2000)}`),
      );
    }, timeoutMs);
    signal?.addEventListener('abort', kill, { once: true });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', kill);
      resolve({
        code,
        signal: sig,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        ms: performance.now() - t0,
      });
    });
  });
}

/** Throws with the command's stderr when it did not exit 0. */
export function expectOk(result, what) {
  if (result.code !== 0)
    throw new Error(`${what} exited ${result.code ?? result.signal}: ${result.stderr.trim().split('\n').slice(-6).join('\n')}`);
  return result;
}

/**
 * VmRSS and VmHWM (peak RSS) of a live process in bytes, undefined once it is gone.
 * @param {number} pid
 * @returns {{ rss: number, hwm: number } | undefined}
 */
export function memoryOf(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

let clockTicks;
/** Kernel clock ticks per second (utime/stime unit in /proc/<pid>/stat). */
export function clkTck() {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  return clockTicks;
}

/**
 * CPU seconds (user + system) a live process has used, undefined once it is gone.
 * @param {number} pid
 * @returns {number | undefined}
 */
export function cpuSecondsOf(pid) {
  let stat;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the command name (which may contain spaces and parentheses); utime is field 14.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clkTck();
}

/**
 * On-CPU nanoseconds of all of a process's live threads (/proc/<pid>/task/<tid>/schedstat), far
 * finer than the 10 ms ticks of utime+stime. Undefined once the process is gone.
 */
export function cpuNsOf(pid) {
  let tids;
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let total = 0;
  for (const tid of tids) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread ended.
    }
  }
  return total;
}

/** Alive and not a zombie. */
export function isAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if (/** @type {NodeJS.ErrnoException} */ (e).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !'ZX'.includes(stat[stat.lastIndexOf(')') + 2] ?? '?');
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL after `graceMs` if it is still there. Only ever for pids we started. */
export async function stopPid(pid, graceMs = 5_000) {
  if (!pid || !isAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(25);
  if (isAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/**
 * Polls until `predicate()` is truthy (returned) or the timeout passes (throws).
 * @template T
 * @param {() => T} predicate
 * @param {{ timeoutMs?: number, intervalMs?: number, what?: string, signal?: AbortSignal }} [options]
 * @returns {Promise<NonNullable<T>>}
 */
export async function pollUntil(predicate, { timeoutMs = 10_000, intervalMs = 20, what = 'a condition', signal } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    signal?.throwIfAborted();
    const value = predicate();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
