import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { buildJobLaunch } from './job-env.ts';
import { Supervisor, type OutputStream, type SupervisorOptions } from './supervisor.ts';

const logger = pino({ level: 'silent' });
let dir: string;
const cleanups: (() => void)[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spotctl-supervisor-'));
});
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Harness {
  supervisor: Supervisor;
  lines: { stream: OutputStream; text: string }[];
  /** Resolves with the first line matching, or rejects after timeoutMs naming what was seen. */
  waitForLine(regex: RegExp, timeoutMs?: number): Promise<string>;
}

function harness(argv: string[], options: Partial<SupervisorOptions> = {}): Harness {
  const lines: { stream: OutputStream; text: string }[] = [];
  const waiters: { regex: RegExp; resolve: (text: string) => void }[] = [];
  const supervisor = new Supervisor({
    argv,
    cwd: dir,
    env: process.env,
    logger,
    onOutput(stream, block) {
      const texts = Buffer.concat(block.data).toString('utf8').slice(0, -1).split('\n');
      expect(texts.length).toBe(block.count);
      for (const text of texts) {
        lines.push({ stream, text });
        for (const w of waiters.filter((w) => w.regex.test(text))) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(text);
        }
      }
    },
    ...options,
  });
  // Never leave a test's process group behind, whatever happened.
  cleanups.push(() => {
    const pid = supervisor.status.pid;
    if (pid !== null) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  return {
    supervisor,
    lines,
    waitForLine(regex, timeoutMs = 10_000) {
      const seen = lines.find((l) => regex.test(l.text));
      if (seen) return Promise.resolve(seen.text);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no line matching ${regex} within ${timeoutMs} ms; saw: ${JSON.stringify(lines)}`)),
          timeoutMs,
        );
        waiters.push({ regex, resolve: (t) => (clearTimeout(timer), resolve(t)) });
      });
    },
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function waitUntil(predicate: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('Supervisor', () => {
  test('runs argv without a shell, captures both streams, reports the exit code', async () => {
    const changes: string[] = [];
    const h = harness(['sh', '-c', 'echo out; echo err >&2; printf "no newline"; exit 3'], {
      onChange: (s) => changes.push(s.state),
    });
    h.supervisor.start();
    const status = await h.supervisor.ended;
    expect(status).toMatchObject({ state: 'exited', exitCode: 3, signal: null, stopReason: null, error: null });
    expect(status.pid).toBeGreaterThan(0);
    expect(status.endedAt).toBeGreaterThanOrEqual(status.startedAt ?? Infinity);
    expect(h.lines).toContainEqual({ stream: 'stdout', text: 'out' });
    expect(h.lines).toContainEqual({ stream: 'stderr', text: 'err' });
    expect(h.lines).toContainEqual({ stream: 'stdout', text: 'no newline' });
    expect(changes).toEqual(['running', 'exited']);
    // Arguments are passed verbatim: no shell splitting or globbing.
    const raw = harness(['printf', '%s\\n', 'a b', '*']);
    raw.supervisor.start();
    await raw.supervisor.ended;
    expect(raw.lines.map((l) => l.text)).toEqual(['a b', '*']);
  });

  test("the job's stdout and stderr are pipes; a flood arrives whole and in order", async () => {
    const h = harness(['sh', '-c', 'test -p /dev/stdout && test -p /dev/stderr && echo pipes; seq 1 200000; echo done >&2']);
    h.supervisor.start();
    expect(await h.supervisor.ended).toMatchObject({ state: 'exited', exitCode: 0 });
    const out = h.lines.filter((l) => l.stream === 'stdout').map((l) => l.text);
    expect(out[0]).toBe('pipes');
    expect(out.slice(1)).toEqual(Array.from({ length: 200_000 }, (_, i) => String(i + 1)));
    expect(h.lines.filter((l) => l.stream === 'stderr').map((l) => l.text)).toEqual(['done']);
  });

  test('without mkfifo the job still runs, on ordinary pipes', async () => {
    const logged: string[] = [];
    const warnings = pino({ level: 'warn' }, { write: (line: string) => void logged.push(line) });
    const h = harness(['/bin/sh', '-c', 'echo out; echo err >&2; printf "no newline"'], { env: { ...process.env }, logger: warnings });
    const searchPath = process.env.PATH;
    process.env.PATH = dir;
    try {
      h.supervisor.start();
    } finally {
      process.env.PATH = searchPath;
    }
    expect(await h.supervisor.ended).toMatchObject({ state: 'exited', exitCode: 0 });
    expect(logged.join('')).toMatch(/cannot make the job output pipes; using ordinary ones/);
    expect(h.lines.filter((l) => l.stream === 'stdout').map((l) => l.text)).toEqual(['out', 'no newline']);
    expect(h.lines.filter((l) => l.stream === 'stderr').map((l) => l.text)).toEqual(['err']);
  });

  test('reports the signal that ended the job', async () => {
    const h = harness(['sh', '-c', 'kill -USR1 $$']);
    h.supervisor.start();
    expect(await h.supervisor.ended).toMatchObject({ state: 'exited', exitCode: null, signal: 'SIGUSR1' });
  });

  test('stop signals the whole process group: a grandchild dies too', async () => {
    const h = harness(['sh', '-c', 'sleep 30 & echo "grandchild $!"; wait']);
    h.supervisor.start();
    const line = await h.waitForLine(/^grandchild \d+$/);
    const grandchild = Number(line.split(' ')[1]);
    expect(isAlive(grandchild)).toBe(true);
    const returned = h.supervisor.stop({ graceMs: 5000 });
    // stop returns at once, with the reason recorded.
    expect(returned).toMatchObject({ state: 'running', stopReason: 'stop' });
    const status = await h.supervisor.ended;
    expect(status.signal).toBe('SIGTERM');
    await waitUntil(() => !isAlive(grandchild), `grandchild ${grandchild} to die`);
  });

  test('a job that ignores SIGTERM gets SIGKILL after the grace period', async () => {
    const h = harness(['sh', '-c', 'trap "" TERM; echo ready; while :; do sleep 0.05; done']);
    h.supervisor.start();
    await h.waitForLine(/^ready$/);
    const stoppedAt = Date.now();
    h.supervisor.stop({ graceMs: 300 });
    const status = await h.supervisor.ended;
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(290);
    expect(status).toMatchObject({ state: 'exited', signal: 'SIGKILL', exitCode: null, stopReason: 'stop' });
  });

  test('force stop kills at once; stopping an ended job returns its status', async () => {
    const h = harness(['sh', '-c', 'trap "" TERM; echo ready; while :; do sleep 0.05; done'], { graceMs: 60_000 });
    h.supervisor.start();
    await h.waitForLine(/^ready$/);
    h.supervisor.stop({ force: true });
    const status = await h.supervisor.ended;
    expect(status).toMatchObject({ signal: 'SIGKILL', stopReason: 'force' });
    expect(h.supervisor.stop({ force: true })).toEqual(status);
  });

  test('a second stop with a shorter grace brings the SIGKILL forward', async () => {
    const h = harness(['sh', '-c', 'trap "" TERM; echo ready; while :; do sleep 0.05; done']);
    h.supervisor.start();
    await h.waitForLine(/^ready$/);
    h.supervisor.stop({ graceMs: 60_000, reason: 'max-runtime' });
    h.supervisor.stop({ graceMs: 100 });
    const status = await h.supervisor.ended;
    // The first reason is kept.
    expect(status).toMatchObject({ signal: 'SIGKILL', stopReason: 'max-runtime' });
  });

  test('a command that does not exist fails to start with exit code 127 and a stderr line', async () => {
    const h = harness(['definitely-not-a-command-spotctl']);
    h.supervisor.start();
    const status = await h.supervisor.ended;
    expect(status).toMatchObject({ state: 'failed-to-start', exitCode: 127, pid: null });
    expect(status.error).toMatch(/command not found: definitely-not-a-command-spotctl/);
    expect(h.lines).toEqual([{ stream: 'stderr', text: `spotctl: ${status.error}` }]);
  });

  test('a missing working directory is named as such', async () => {
    const h = harness(['true'], { cwd: path.join(dir, 'missing') });
    h.supervisor.start();
    const status = await h.supervisor.ended;
    expect(status.state).toBe('failed-to-start');
    expect(status.error).toMatch(/working directory does not exist/);
  });

  test('a grandchild holding the pipes open does not keep the job running', async () => {
    // The grandchild would hold the pipes past the test's timeout: only the drain can end the job.
    const h = harness(['sh', '-c', 'sleep 300 & echo "grandchild $!"; echo leader done'], { pipeDrainMs: 300 });
    h.supervisor.start();
    const status = await h.supervisor.ended;
    expect(status).toMatchObject({ state: 'exited', exitCode: 0 });
    expect(h.lines.map((l) => l.text)).toContain('leader done');
  });

  test('SIGKILL after the grace also reaches children that outlive the leader', async () => {
    const h = harness(['sh', '-c', '(trap "" TERM; echo "stubborn $(exec sh -c \'echo $PPID\')"; while :; do sleep 0.05; done) & wait'], {
      pipeDrainMs: 100,
    });
    h.supervisor.start();
    const line = await h.waitForLine(/^stubborn \d+$/);
    const stubborn = Number(line.split(' ')[1]);
    h.supervisor.stop({ graceMs: 300 });
    await h.supervisor.ended;
    await waitUntil(() => !isAlive(stubborn), `stubborn child ${stubborn} to be killed`);
  });
});

describe('buildJobLaunch', () => {
  test('sets the spotctl variables and keeps the token out of the job', () => {
    const { env, argv } = buildJobLaunch({
      argv: ['python3', 'train.py'],
      workdir: dir,
      runId: 'r-1',
      heartbeatPath: '/tmp/hb',
      baseEnv: { PATH: '/usr/bin', SPOTCTL_AGENT_TOKEN: 'secret', KEEP: '1' },
      extraEnv: { FOO: 'bar' },
    });
    expect(argv).toEqual(['python3', 'train.py']);
    expect(env).toEqual({
      PATH: '/usr/bin',
      KEEP: '1',
      FOO: 'bar',
      PYTHONUNBUFFERED: '1',
      SPOTCTL_RUN_ID: 'r-1',
      SPOTCTL_HEARTBEAT: '/tmp/hb',
    });
  });

  test('a .venv in the workdir is activated and python3 resolves to it', async () => {
    const bin = path.join(dir, '.venv', 'bin');
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(path.join(bin, 'python3'), '#!/bin/sh\necho "venv python $VIRTUAL_ENV $*"\n', { mode: 0o755 });
    const launch = buildJobLaunch({
      argv: ['python3', '-V'],
      workdir: dir,
      runId: 'r',
      heartbeatPath: '/tmp/hb',
      baseEnv: { PATH: '/usr/bin:/bin' },
    });
    expect(launch.argv[0]).toBe(path.join(bin, 'python3'));
    expect(launch.env['VIRTUAL_ENV']).toBe(path.join(dir, '.venv'));
    expect(launch.env['PATH']).toBe(`${bin}:/usr/bin:/bin`);
    // Names the venv lacks resolve further down the same PATH; unknown names are left alone.
    expect(
      buildJobLaunch({ argv: ['sh'], workdir: dir, runId: 'r', heartbeatPath: '/h', baseEnv: { PATH: '/usr/bin:/bin' } }).argv[0],
    ).toMatch(/^\/(usr\/)?bin\/sh$/);
    expect(
      buildJobLaunch({ argv: ['no-such-cmd-x'], workdir: dir, runId: 'r', heartbeatPath: '/h', baseEnv: { PATH: '/usr/bin' } }).argv[0],
    ).toBe('no-such-cmd-x');
    const h = harness(launch.argv, { env: launch.env });
    h.supervisor.start();
    await h.supervisor.ended;
    expect(h.lines.map((l) => l.text)).toEqual([`venv python ${path.join(dir, '.venv')} -V`]);
  });
});
