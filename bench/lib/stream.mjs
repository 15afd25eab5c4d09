// @ts-check
/**
 * Runs a command with its stdout redirected to a file (so the measuring process does not sit in
 * the data path) and watches the file grow, to time the stream from its first to its last byte.
 */
import { spawn } from 'node:child_process';
import { closeSync, createReadStream, openSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';

const POLL_MS = 20;

/**
 * @param {{ file: string, args: string[], outFile: string, env?: NodeJS.ProcessEnv, signal?: AbortSignal,
 *           timeoutMs: number, onSpawn?: (pid: number) => void, onPoll?: (elapsedMs: number) => void }} options
 * @returns {Promise<{ code: number | null, signal: string | null, stderr: string, bytes: number,
 *           wallMs: number, firstByteMs: number | undefined, lastByteMs: number | undefined, pid: number | undefined }>}
 */
export function runToFile({ file, args, outFile, env, signal, timeoutMs, onSpawn, onPoll }) {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const fd = openSync(outFile, 'w');
    const t0 = performance.now();
    const child = spawn(file, args, { env, stdio: ['ignore', fd, 'pipe'] });
    closeSync(fd);
    if (child.pid !== undefined) onSpawn?.(child.pid);
    /** @type {Buffer[]} */
    const err = [];
    // stdio[2] is 'pipe': stderr is always there.
    /** @type {import('node:stream').Readable} */ (child.stderr).on('data', (d) => err.push(d));
    let size = 0;
    let firstByteMs;
    let lastByteMs;
    const poll = () => {
      const now = performance.now() - t0;
      let s = size;
      try {
        s = statSync(outFile).size;
      } catch {
        // keep the last size
      }
      if (s > size) {
        firstByteMs ??= now;
        lastByteMs = now;
        size = s;
      }
      onPoll?.(now);
    };
    const poller = setInterval(poll, POLL_MS);
    const kill = () => child.kill('SIGKILL');
    const timer = setTimeout(() => {
      kill();
      clearInterval(poller);
      reject(
        new Error(
          `${args.slice(0, 3).join(' ')}… did not finish within ${timeoutMs} ms; stderr: ${Buffer.concat(err).toString().slice(-2000)}`,
        ),
      );
    }, timeoutMs);
    signal?.addEventListener('abort', kill, { once: true });
    child.once('error', (e) => {
      clearTimeout(timer);
      clearInterval(poller);
      reject(e);
    });
    child.once('close', (code, sig) => {
      const wallMs = performance.now() - t0;
      clearTimeout(timer);
      clearInterval(poller);
      signal?.removeEventListener('abort', kill);
      poll();
      resolve({ code, signal: sig, stderr: Buffer.concat(err).toString(), bytes: size, wallMs, firstByteMs, lastByteMs, pid: child.pid });
    });
  });
}

/**
 * The first and last byte times of a `runToFile` result; throws when no byte was seen (a stream
 * that produced nothing has no span to time).
 * @param {{ firstByteMs: number | undefined, lastByteMs: number | undefined, bytes: number }} r
 * @returns {{ firstByteMs: number, lastByteMs: number, streamMs: number }}
 */
export function byteTimes(r) {
  const { firstByteMs, lastByteMs } = r;
  if (firstByteMs === undefined || lastByteMs === undefined) throw new Error(`no output byte was seen (${r.bytes} bytes in the file)`);
  return { firstByteMs, lastByteMs, streamMs: lastByteMs - firstByteMs };
}

/** sha256 of a file, streamed. */
export async function fileHash(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk);
  return hash.digest('hex');
}

/**
 * Checks a file of numbered lines ("<9-digit number> ...") against 1..n: how many numbers are
 * missing, repeated, or arrive after a larger one.
 */
export async function checkNumberedLines(path, n) {
  const seen = new Uint8Array(n + 2);
  let lines = 0;
  let previous = 0;
  let outOfOrder = 0;
  let duplicated = 0;
  let foreign = 0;
  let carry = '';
  for await (const chunk of createReadStream(path, { encoding: 'latin1', highWaterMark: 1 << 20 })) {
    const text = carry + chunk;
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      const v = Number(text.slice(start, start + 9));
      start = nl + 1;
      lines += 1;
      if (!(v >= 1 && v <= n)) {
        foreign += 1;
        continue;
      }
      if (seen[v]) duplicated += 1;
      seen[v] = 1;
      if (v <= previous) outOfOrder += 1;
      previous = v;
    }
    carry = text.slice(start);
  }
  let lost = 0;
  for (let i = 1; i <= n; i++) if (!seen[i]) lost += 1;
  return { lines, lost, duplicated, outOfOrder, foreign, partial: carry.length };
}
