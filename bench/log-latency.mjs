// @ts-check
/**
 * Issue 5 row 5: how long a log line takes from the job's write to the controller's stdout, on
 * loopback, against the same job read through a plain pipe.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { expectOk } from './lib/proc.mjs';
import { percentile } from './lib/stats.mjs';

const RATE_PER_S = 200;
const DURATION_S = 10;
const ROUNDS = 3;
const LINES = RATE_PER_S * DURATION_S;

/** Writes "<i> <CLOCK_MONOTONIC ns>" lines at a steady rate, flushing each one. */
const JOB = `
import sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
n = int(rate * seconds)
period = 1_000_000_000 / rate
start = time.monotonic_ns() + 50_000_000
for i in range(1, n + 1):
    due = start + (i - 1) * period
    wait = (due - time.monotonic_ns()) / 1e9
    if wait > 0:
        time.sleep(wait)
    sys.stdout.write(f"{i} {time.monotonic_ns()}\\n")
    sys.stdout.flush()
`;

/**
 * Spawns `file args`, reads its stdout as it arrives and returns the per-line latency in ms
 * (arrival − the timestamp the job wrote). process.hrtime and Python's monotonic_ns read the same
 * CLOCK_MONOTONIC on Linux.
 */
function readLatencies(file, args, { env, signal, timeoutMs }) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const latencies = [];
    const seqs = [];
    let carry = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      const now = process.hrtime.bigint();
      const text = carry + chunk;
      const lines = text.split('\n');
      carry = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^(\d+) (\d+)$/.exec(line);
        if (!m || m[2] === undefined) continue;
        seqs.push(Number(m[1]));
        latencies.push(Number(now - BigInt(m[2])) / 1e6);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s) => (stderr += s));
    const kill = () => child.kill('SIGKILL');
    const timer = setTimeout(() => {
      kill();
      reject(new Error(`${args.slice(0, 2).join(' ')}… did not finish in ${timeoutMs} ms; stderr: ${stderr.slice(-1500)}`));
    }, timeoutMs);
    signal?.addEventListener('abort', kill, { once: true });
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', kill);
      if (code !== 0) reject(new Error(`${args.slice(0, 2).join(' ')}… exited ${code}: ${stderr.slice(-1500)}`));
      else resolve({ latencies, seqs });
    });
  });
}

function summary(r, what) {
  const inOrder = r.seqs.every((v, i) => v === i + 1);
  if (r.seqs.length !== LINES || !inOrder) throw new Error(`${what}: got ${r.seqs.length} of ${LINES} lines (in order: ${inOrder})`);
  return { p50: percentile(r.latencies, 50), p99: percentile(r.latencies, 99), max: Math.max(...r.latencies) };
}

export default defineBenchmark({
  name: 'log-latency',
  row: '5.5',
  title: 'Log line latency, job write → controller stdout',
  target: {
    p50: target.atMost(10, 'ms'),
    p99: target.atMost(50, 'ms'),
  },
  timeoutMs: 240_000,
  budgetMs: 150_000,
  method: `
A Python job writes ${RATE_PER_S} lines/s for ${DURATION_S} s (${LINES} lines), each holding its own \`time.monotonic_ns()\` taken just before the
write, flushing every line. The benchmark reads the controller's stdout as it arrives and computes arrival
(\`process.hrtime\`, the same CLOCK_MONOTONIC) − write time for every line; p50 and p99 are taken per run, and the table shows
their median over ${ROUNDS} rounds. Each round runs, in turn: \`spotctl run --host … --no-install\` over the loopback sshd
(ssh master, \`-L\` tunnel, websocket), the local provider (\`spotctl run\` without \`--host\`, info), and the baseline
\`python3 job.py | reader\` (the reader is this same code on a plain pipe: the floor). Every run must deliver all lines in order.`,
  async run(ctx) {
    const sshd = await ctx.sshd();
    const project = path.join(ctx.tmp, 'project');
    mkdirSync(project);
    const job = path.join(project, 'lat.py');
    writeFileSync(job, JOB);
    const remoteDir = ctx.remoteDir();
    const env = { ...process.env, SPOTCTL_HOME: path.join(ctx.tmp, 'home'), NO_COLOR: '1' };
    const jobArgs = ['--', 'python3', 'lat.py', String(RATE_PER_S), String(DURATION_S)];
    const common = ['--no-install', '--grace', '2s', '--idle-timeout', '1m', '--sync', project];
    expectOk(
      await ctx.spotctl(['run', ...ctx.hostArgs(sshd, remoteDir), '--no-install', '--sync', project, '--', 'true'], { timeoutMs: 60_000 }),
      'spotctl warm-up',
    );

    const opts = { env, signal: ctx.signal, timeoutMs: 90_000 };
    const ssh = [];
    const local = [];
    const pipe = [];
    for (let round = 0; round < ROUNDS; round++) {
      ctx.signal.throwIfAborted();
      if (round > 0 && Date.now() > ctx.deadline - 40_000) {
        ctx.log(`time budget reached after ${round} rounds`);
        break;
      }
      ssh.push(
        summary(
          await readLatencies(process.execPath, [ctx.bin, 'run', ...ctx.hostArgs(sshd, remoteDir), ...common, ...jobArgs], opts),
          'spotctl --host',
        ),
      );
      local.push(
        summary(
          await readLatencies(process.execPath, [ctx.bin, 'run', '--provider', 'local', ...common, ...jobArgs], opts),
          'spotctl local',
        ),
      );
      pipe.push(summary(await readLatencies('python3', [job, String(RATE_PER_S), String(DURATION_S)], opts), 'pipe'));
      const f = (s) => `p50 ${s.p50.toFixed(2)} p99 ${s.p99.toFixed(2)} max ${s.max.toFixed(1)} ms`;
      ctx.log(`round ${round + 1}: ssh ${f(ssh.at(-1))} | local ${f(local.at(-1))} | pipe ${f(pipe.at(-1))}`);
    }
    const maxNote = (runs) => `max per run: ${runs.map((s) => s.max.toFixed(1)).join(', ')} ms`;
    return {
      measures: [
        measure({
          key: 'p50',
          label: 'p50 latency, spotctl run --host (ssh tunnel + websocket)',
          unit: 'ms',
          figure: ssh.map((s) => s.p50),
          baseline: pipe.map((s) => s.p50),
          baselineLabel: 'plain pipe',
        }),
        measure({
          key: 'p99',
          label: 'p99 latency, spotctl run --host',
          unit: 'ms',
          figure: ssh.map((s) => s.p99),
          baseline: pipe.map((s) => s.p99),
          baselineLabel: 'plain pipe',
          note: maxNote(ssh),
        }),
        measure({
          key: 'local-p50',
          label: 'p50 latency, local provider (info)',
          unit: 'ms',
          figure: local.map((s) => s.p50),
          baseline: pipe.map((s) => s.p50),
          baselineLabel: 'plain pipe',
        }),
        measure({
          key: 'local-p99',
          label: 'p99 latency, local provider (info)',
          unit: 'ms',
          figure: local.map((s) => s.p99),
          baseline: pipe.map((s) => s.p99),
          baselineLabel: 'plain pipe',
          note: maxNote(local),
        }),
      ],
    };
  },
});
