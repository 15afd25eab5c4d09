/**
 * Issue 11: how far the log archive on the checkpoint target trails the job's output — the time
 * from a line's write to the moment it can be read from the archive — against the same lines'
 * arrival on the controller's stdout, in the same run.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { percentile } from './lib/stats.mjs';

const RATE_PER_S = 20;
const DURATION_S = 40;
const ROUNDS = 3;
const LINES = RATE_PER_S * DURATION_S;
const POLL_MS = 100;

/** Writes "<i> <epoch ms>" lines at a steady rate, flushing each one. */
const JOB = `
import sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
n = int(rate * seconds)
start = time.time() + 0.05
for i in range(1, n + 1):
    wait = start + (i - 1) / rate - time.time()
    if wait > 0:
        time.sleep(wait)
    sys.stdout.write(f"{i} {time.time() * 1000:.3f}\\n")
    sys.stdout.flush()
`;

/** Lines "<i> <ms>" found in the archive's segments not seen before; records' headers are skipped by shape. */
function scanArchive(dir, seenSegments, onLine) {
  let names;
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.records') && !n.startsWith('.'));
  } catch {
    return;
  }
  for (const name of names.sort()) {
    if (seenSegments.has(name)) continue;
    seenSegments.add(name);
    for (const line of readFileSync(path.join(dir, name), 'latin1').split('\n')) {
      const m = /^(\d+) (\d+(?:\.\d+)?)$/.exec(line);
      if (m) onLine(Number(m[1]), Number(m[2]));
    }
  }
}

/** One run: spotctl run (local provider, directory checkpoint target); lag per line on stdout and in the archive. */
function oneRun(ctx, project, store) {
  return new Promise((resolve, reject) => {
    const home = path.join(ctx.tmp, 'home');
    const child = spawn(
      process.execPath,
      [
        ctx.bin,
        'run',
        '--provider',
        'local',
        '--no-install',
        '--grace',
        '2s',
        '--idle-timeout',
        '1m',
        '--checkpoint-to',
        store,
        '--sync',
        project,
        '--',
        'python3',
        'lag.py',
        String(RATE_PER_S),
        String(DURATION_S),
      ],
      { env: { ...process.env, SPOTCTL_HOME: home, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const stdoutLag = new Map();
    const archiveLag = new Map();
    const seenSegments = new Set();
    let runDir;
    let carry = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      const now = Date.now();
      const lines = (carry + chunk).split('\n');
      carry = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^(\d+) (\d+(?:\.\d+)?)$/.exec(line);
        if (m) stdoutLag.set(Number(m[1]), now - Number(m[2]));
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s) => {
      stderr += s;
      runDir ??= /run (\d{8}-\d{6}-[0-9a-f]{4})/.exec(stderr)?.[1];
    });
    // Polling is the measuring instrument here: it adds at most POLL_MS to each archive figure.
    const poll = setInterval(() => {
      if (!runDir) return;
      const now = Date.now();
      scanArchive(path.join(store, runDir, 'log'), seenSegments, (i, ms) => {
        if (!archiveLag.has(i)) archiveLag.set(i, now - ms);
      });
    }, POLL_MS);
    const kill = () => child.kill('SIGKILL');
    const timer = setTimeout(
      () => {
        kill();
        reject(new Error(`run did not finish; stderr: ${stderr.slice(-1500)}`));
      },
      (DURATION_S + 60) * 1000,
    );
    ctx.signal.addEventListener('abort', kill, { once: true });
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      clearInterval(poll);
      ctx.signal.removeEventListener('abort', kill);
      if (code !== 0) return reject(new Error(`spotctl run exited ${code}: ${stderr.slice(-1500)}`));
      const now = Date.now();
      if (runDir) scanArchive(path.join(store, runDir, 'log'), seenSegments, (i, ms) => archiveLag.has(i) || archiveLag.set(i, now - ms));
      if (stdoutLag.size !== LINES || archiveLag.size !== LINES)
        return reject(new Error(`got ${stdoutLag.size} lines on stdout and ${archiveLag.size} in the archive, of ${LINES}`));
      resolve({ stdout: [...stdoutLag.values()], archive: [...archiveLag.values()], segments: seenSegments.size });
    });
  });
}

export default defineBenchmark({
  name: 'log-archive-lag',
  row: '11.1',
  title: 'Log archive lag, job write → readable in the archive',
  target: { p99: target.atMost(10_000, 'ms') },
  timeoutMs: 240_000,
  budgetMs: 200_000,
  method: `
A Python job writes ${RATE_PER_S} lines/s for ${DURATION_S} s (${LINES} lines), each holding its wall-clock write time, under
\`spotctl run --provider local --checkpoint-to DIR\` (the agent's archiver uploads to the directory store, as it would to S3,
every 5 s while output flows and at the job's exit). The benchmark polls the archive every ${POLL_MS} ms and takes, per line, the
time it was first readable there − its write time (the poll adds up to ${POLL_MS} ms); the baseline is the same lines' arrival on
the controller's stdout in the same run. p99 and p50 per run; the table shows the median over ${ROUNDS} runs.`,
  async run(ctx) {
    const project = path.join(ctx.tmp, 'project');
    mkdirSync(project);
    writeFileSync(path.join(project, 'lag.py'), JOB);
    const runs = [];
    for (let round = 0; round < ROUNDS; round++) {
      ctx.signal.throwIfAborted();
      if (round > 0 && Date.now() > ctx.deadline - (DURATION_S + 20) * 1000) {
        ctx.log(`time budget reached after ${round} rounds`);
        break;
      }
      const r = await oneRun(ctx, project, path.join(ctx.tmp, `store-${round}`));
      runs.push(r);
      ctx.log(
        `round ${round + 1}: archive p50 ${percentile(r.archive, 50).toFixed(0)} p99 ${percentile(r.archive, 99).toFixed(0)} max ${Math.max(...r.archive).toFixed(0)} ms (${r.segments} segments) | stdout p99 ${percentile(r.stdout, 99).toFixed(1)} ms`,
      );
    }
    return {
      measures: [
        measure({
          key: 'p99',
          label: 'p99 archive lag (line written → readable in the archive)',
          unit: 'ms',
          figure: runs.map((r) => percentile(r.archive, 99)),
          baseline: runs.map((r) => percentile(r.stdout, 99)),
          baselineLabel: 'p99 line written → controller stdout',
          note: `max per run: ${runs.map((r) => Math.max(...r.archive).toFixed(0)).join(', ')} ms`,
        }),
        measure({
          key: 'p50',
          label: 'p50 archive lag (info)',
          unit: 'ms',
          figure: runs.map((r) => percentile(r.archive, 50)),
          baseline: runs.map((r) => percentile(r.stdout, 50)),
          baselineLabel: 'p50 line written → controller stdout',
        }),
      ],
    };
  },
});
