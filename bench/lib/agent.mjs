// @ts-check
/** Starts the real agent bundle the way the controller does: `node agent.mjs start --config FILE`. */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { isAlive, stopPid } from './proc.mjs';

/**
 * Writes a config for a run in `dir` (its own state dir, workdir and heartbeat file, never the
 * shared /tmp/spotctl-heartbeat) and returns its path. shutdownAction stays `exit`: nothing here
 * may power the machine off.
 */
export function writeAgentConfig(dir, { command = ['true'], idleTimeoutMs = 600_000 } = {}) {
  mkdirSync(path.join(dir, 'work'), { recursive: true });
  const config = {
    runId: `bench-${randomBytes(4).toString('hex')}`,
    workdir: path.join(dir, 'work'),
    stateDir: path.join(dir, 'state'),
    command,
    token: randomBytes(24).toString('hex'),
    host: '127.0.0.1',
    port: 0,
    idleTimeoutMs,
    graceMs: 1_000,
    heartbeatPath: path.join(dir, 'heartbeat'),
    shutdownAction: { kind: 'exit' },
  };
  const file = path.join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
  return { file, config };
}

/**
 * Runs `node <bundle> start --config FILE`, timing spawn → the state line on stdout.
 * @param {string} bundle
 * @param {string} configFile
 * @param {{ timeoutMs?: number, signal?: AbortSignal }} [options]
 * @returns {Promise<{ readyMs: number, state: { pid: number, port: number } }>}
 */
export function startAgent(bundle, configFile, { timeoutMs = 30_000, signal } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [bundle, 'start', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let done = false;
    /** @param {unknown} e @param {{ readyMs: number, state: { pid: number, port: number } }} [v] */
    const finish = (e, v) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (e) reject(e);
      else resolve(/** @type {{ readyMs: number, state: { pid: number, port: number } }} */ (v));
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s) => {
      out += s;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const readyMs = performance.now() - t0;
      try {
        finish(undefined, { readyMs, state: JSON.parse(out.slice(0, nl)) });
      } catch (e) {
        finish(new Error(`agent start printed something else than its state: ${out}`, { cause: e }));
      }
    });
    child.stderr.on('data', (s) => (err += s));
    const onAbort = () => {
      child.kill('SIGKILL');
      finish(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new Error(`agent start printed nothing within ${timeoutMs} ms; stderr: ${err}`));
    }, timeoutMs);
    child.once('close', (code) => finish(new Error(`agent start exited ${code} without a state line; stdout: ${out} stderr: ${err}`)));
  });
}

/** Stops an agent we started (SIGTERM, then SIGKILL) and the job's process group if it is still there. */
export async function stopAgent(state, stateDir) {
  await stopPid(state.pid, 5_000);
  try {
    const jobPid = JSON.parse(readFileSync(path.join(stateDir, 'status.json'), 'utf8')).pid;
    if (jobPid && isAlive(jobPid)) process.kill(-jobPid, 'SIGKILL');
  } catch {
    // No status or no job left.
  }
}
