/**
 * `spotctl run` on the local provider, end to end: the real CLI bundle starts the real agent
 * bundle as a detached process and tails it over a real websocket.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readStoredLog } from './helpers/agent-process.ts';
import { collect, runSpotctl, spawnSpotctl, watchSpotctl } from './helpers/cli.ts';
import { readUntil, waitFor } from './helpers/read-until.ts';
import { tmpDir } from './helpers/tmp.ts';
import { NUMBERED, checkSequence, numberedLines, writeProject } from './fixtures.ts';

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('spotctl run --provider local', () => {
  it('streams every line once and in order, stderr apart, and exits with the job code', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'gen.py': NUMBERED });
    const r = await runSpotctl(['run', '--sync', proj.path, '--', 'gen.py', '20000', '3'], { home: home.path });
    expect(r.code, r.stderr).toBe(3);
    expect(checkSequence(numberedLines(r.stdout), 20000)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
    expect(r.stdout.split('\n').filter(Boolean)).toHaveLength(20000);
    expect(r.stderr).toContain('progress 20000');
    expect(r.stderr).toMatch(/job exited with code 3/);
  });

  it('a reader that falls behind still gets every line: spotctl waits for its output to drain before it exits', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'gen.py': NUMBERED });
    const r = await runSpotctl(['run', '--sync', proj.path, '--', 'gen.py', '30000', '0'], { home: home.path });
    expect(r.code, r.stderr).toBe(0);
    // Nobody reads stdout for a while (`spotctl logs last | less`): the pipe fills, writes queue up
    // in spotctl, and it has all its lines long before the reader wants them.
    const child = spawnSpotctl(['logs', 'last'], { home: home.path });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const logs = await collect(child);
    expect(logs.code, logs.stderr).toBe(0);
    expect(checkSequence(numberedLines(logs.stdout), 30000)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
  });

  it('a progress bar redrawn with \\r shows live, before its line ends', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    const go = path.join(proj.path, 'go');
    writeProject(proj.path, {
      'bar.py': [
        'import os, sys, time',
        'sys.stderr.write(" 50%|#####     |\\r"); sys.stderr.flush()',
        'deadline = time.time() + 30',
        `while not os.path.exists(${JSON.stringify(go)}) and time.time() < deadline: time.sleep(0.05)`,
        'sys.stderr.write("100%|##########|\\n"); print("done", flush=True)',
        '',
      ].join('\n'),
    });
    const cli = watchSpotctl(['run', '--no-install', '--sync', proj.path, '--', 'bar.py'], { home: home.path });
    // The bar's first state arrives while the job still waits: no newline has been written yet.
    await cli.until('stderr', / 50%\|#####     \|\r/, 20_000);
    writeFileSync(go, '');
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('done\n');
    expect(r.stderr).toContain(' 50%|#####     |\r\n100%|##########|\n');
  });

  it('--json prints every line as a JSON object with its seq, stream and text, live and from the stored log', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, {
      'lines.py': 'import sys\nfor i in range(1, 3001):\n    print(f"out {i} ü")\nsys.stdout.flush()\nprint("err", file=sys.stderr)\n',
    });
    const r = await runSpotctl(['run', '--json', '--no-install', '--sync', proj.path, '--', 'python3', 'lines.py'], { home: home.path });
    expect(r.code, r.stderr).toBe(0);
    type LogEvent = { type: string; seq: number; ts: number; stream: string; text: string };
    const logs = (text: string) =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as LogEvent)
        .filter((e) => e.type === 'log');
    const live = logs(r.stdout);
    expect(live.map((l) => l.seq)).toEqual(Array.from({ length: 3001 }, (_, i) => i + 1));
    // The two pipes are read independently, so only each stream's own order is given.
    expect(live.filter((l) => l.stream === 'stdout').map((l) => l.text)).toEqual(Array.from({ length: 3000 }, (_, i) => `out ${i + 1} ü`));
    expect(live.filter((l) => l.stream === 'stderr').map((l) => l.text)).toEqual(['err']);
    expect(live.every((l) => Number.isInteger(l.ts) && l.ts > 0)).toBe(true);
    // Once the agent has gone, `logs` reads the stored log: the same lines from any seq.
    const runs = JSON.parse((await runSpotctl(['ps', '--json'], { home: home.path })).stdout) as { runId: string }[];
    const agent = JSON.parse(readFileSync(path.join(home.path, 'runs', runs[0]?.runId as string, 'agent', 'agent.json'), 'utf8')) as {
      pid: number;
    };
    await waitFor(() => !pidAlive(agent.pid), { timeoutMs: 10_000, what: 'the agent to exit after the run' });
    const stored = await runSpotctl(['logs', 'last', '--json', '--from', '2999'], { home: home.path });
    expect(stored.code, stored.stderr).toBe(0);
    expect(logs(stored.stdout)).toEqual(live.slice(2998));
  });

  it('honours .gitignore when syncing and activates the project venv after installing requirements', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, {
      'show.py': 'import os, sys\nprint("prefix", sys.prefix)\nprint("files", sorted(os.listdir(".")))\n',
      'requirements.txt': '# nothing to fetch: the venv is still created\n',
      '.gitignore': 'secret.txt\n',
      'secret.txt': 'do not copy',
      '__pycache__/x.pyc': 'x',
    });
    const r = await runSpotctl(['run', '--sync', proj.path, 'show.py'], { home: home.path });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/prefix .*\/work\/\.venv/);
    expect(r.stdout).toContain("'show.py'");
    expect(r.stdout).not.toContain('secret.txt');
    expect(r.stdout).not.toContain('__pycache__');
  });

  it('--no-install skips the venv; arguments after -- reach the job untouched', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'args.py': 'import sys, json\nprint(json.dumps(sys.argv[1:]))\n', 'requirements.txt': '\n' });
    const r = await runSpotctl(['run', '--no-install', '--sync', proj.path, '--', 'python3', 'args.py', '--json', '-x', 'a b', '--'], {
      home: home.path,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toEqual(['--json', '-x', 'a b', '--']);
    const runs = JSON.parse((await runSpotctl(['ps', '--json'], { home: home.path })).stdout) as {
      runId: string;
      state: string;
      exitCode: number;
    }[];
    expect(runs[0]).toMatchObject({ state: 'exited', exitCode: 0 });
  });

  it('detach, ps, logs, attach and stop work on a running job', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, {
      'slow.py': 'import time, sys\nfor i in range(1, 1000):\n    print(f"tick {i}", flush=True)\n    time.sleep(0.05)\n',
    });
    const d = await runSpotctl(['run', '--detach', '--sync', proj.path, 'slow.py'], { home: home.path });
    expect(d.code, d.stderr).toBe(0);
    expect(d.stderr).toMatch(/spotctl attach \S+/);
    const ps = JSON.parse((await runSpotctl(['ps', '--json'], { home: home.path })).stdout) as { runId: string; state: string }[];
    expect(ps[0]?.state).toBe('running');
    const runId = ps[0]?.runId as string;

    await waitFor(async () => (await runSpotctl(['logs', 'last'], { home: home.path })).stdout.includes('tick 3'), {
      timeoutMs: 15_000,
      what: 'tick 3 in logs',
    });
    const attach = spawnSpotctl(['attach', runId.slice(0, 18)], { home: home.path });
    const attached = collect(attach, 60_000);
    await readUntil(attach.stdout, /tick \d+\n/, 15_000);

    const stop = await runSpotctl(['stop', 'last'], { home: home.path });
    expect(stop.code, stop.stderr).toBe(0);
    expect(stop.stderr).toMatch(/stopped run .*SIGTERM/);
    const a = await attached;
    expect(a.code).toBe(128 + 15);
    const ticks = a.stdout
      .split('\n')
      .filter((l) => l.startsWith('tick '))
      .map((l) => Number(l.slice(5)));
    expect(checkSequence(ticks, 0).duplicated).toBe(0);
    expect(ticks.every((v, i) => i === 0 || v === (ticks[i - 1] as number) + 1)).toBe(true);
  });

  it('Ctrl-C stops the job with SIGTERM and exits 143; the job survives a SIGKILLed controller and attach resumes', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, {
      'gen.py': NUMBERED,
      'forever.py': 'import time\ni = 0\nwhile True:\n    i += 1\n    print(f"line {i}", flush=True)\n    time.sleep(0.01)\n',
    });

    // Ctrl-C.
    const ctl = spawnSpotctl(['run', '--sync', proj.path, 'forever.py'], { home: home.path });
    const done = collect(ctl, 60_000);
    await readUntil(ctl.stdout, /line 5\n/, 20_000);
    ctl.kill('SIGINT');
    const r = await done;
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toMatch(/stopping the job/);

    // SIGKILL of the controller: the job goes on; attach resumes after the last printed line.
    const first = spawnSpotctl(['run', '--sync', proj.path, '--', 'gen.py', '30000', '0', '0.05'], { home: home.path });
    const firstDone = collect(first, 60_000);
    await readUntil(first.stdout, /line 15000\n/, 20_000);
    first.kill('SIGKILL');
    const firstOut = await firstDone;
    const seenBefore = numberedLines(firstOut.stdout);
    const att = await runSpotctl(['attach', 'last'], { home: home.path, timeoutMs: 90_000 });
    expect(att.code, att.stderr).toBe(0);
    const seenAfter = numberedLines(att.stdout);
    // attach resumes where this machine left off: at most a cursor interval of overlap, nothing lost.
    const overlap = seenBefore.filter((v) => v >= (seenAfter[0] ?? Infinity)).length;
    const merged = [...seenBefore.filter((v) => v < (seenAfter[0] ?? Infinity)), ...seenAfter];
    expect(checkSequence(merged, 30000)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
    expect(overlap).toBeLessThan(15000);
  });

  it('reaps what the job left running in its process group', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    const marker = `spotctl-orphan-${process.pid}-${Date.now()}`;
    const r = await runSpotctl(
      ['run', '--no-install', '--sync', proj.path, '--', 'sh', '-c', `python3 -c "import time; time.sleep(300)" ${marker} & echo started`],
      { home: home.path },
    );
    expect(r.code, r.stderr).toBe(0);
    await waitFor(
      () =>
        !readdirSync('/proc').some(
          (p) =>
            /^\d+$/.test(p) &&
            (() => {
              try {
                return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(marker);
              } catch {
                return false;
              }
            })(),
        ),
      { timeoutMs: 10_000, what: 'the background sleep to be gone' },
    );
  });

  it('every line arrives even when the agent exits (max runtime) while the controller is behind', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    const r = await runSpotctl(
      [
        'run',
        '--no-install',
        '--idle-timeout',
        '1s',
        '--max-runtime',
        '2s',
        '--sync',
        proj.path,
        '--',
        'sh',
        '-c',
        'trap "seq 1 1000000; exit 0" TERM; sleep 30 & wait',
      ],
      { home: home.path, timeoutMs: 120_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n').filter(Boolean);
    expect(lines).toHaveLength(1_000_000);
    expect(lines[999_999]).toBe('1000000');
  });

  it('a job that cannot start reports it and exits 127', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    const r = await runSpotctl(['run', '--sync', proj.path, '--', 'no-such-program-xyz'], { home: home.path });
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/no-such-program-xyz/);
  });

  it('keeps its files in the run directory and lets the agent go after the run', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'hi.py': 'print("hi")\n' });
    const r = await runSpotctl(['run', '--sync', proj.path, 'hi.py'], { home: home.path });
    expect(r.code, r.stderr).toBe(0);
    const runs = JSON.parse((await runSpotctl(['ps', '--json'], { home: home.path })).stdout) as { runId: string }[];
    const stateDir = path.join(home.path, 'runs', runs[0]?.runId as string, 'agent');
    expect(readStoredLog(stateDir).map((l) => l.text)).toEqual(['hi']);
    const agent = JSON.parse(readFileSync(path.join(stateDir, 'agent.json'), 'utf8')) as { pid: number };
    await waitFor(() => !pidAlive(agent.pid), { timeoutMs: 10_000, what: 'the agent to exit after the run' });
    const logs = await runSpotctl(['logs', 'last'], { home: home.path });
    expect(logs.stdout).toBe('hi\n');
    expect(existsSync(path.join(home.path, 'runs', runs[0]?.runId as string, 'run.json'))).toBe(true);
  });
});

describe('bad input', () => {
  const cases: [string, string[], number, RegExp][] = [
    ['unknown flag', ['run', '--frobnicate', '--', 'true'], 2, /unknown option '--frobnicate'.*spotctl run --help/],
    ['empty command', ['run'], 2, /no command given.*spotctl run -- python3 train.py/],
    // Fails on the flags, before any AWS call: a test must never reach real AWS.
    ['aws with --host', ['run', '--provider', 'aws', '--host', 'root@127.0.0.1', '--', 'true'], 2, /do not apply to --provider aws/],
    [
      'missing identity file',
      ['run', '--host', 'root@127.0.0.1', '--identity', '/nonexistent/key', '--', 'true'],
      2,
      /--identity file not found/,
    ],
    ['bad host', ['run', '--host', 'root@', '--', 'true'], 2, /host/i],
    ['bad duration', ['run', '--idle-timeout', 'soon', '--', 'true'], 2, /invalid duration for --idle-timeout/],
    ['unknown run', ['attach', 'nope'], 1, /no run 'nope'.*spotctl ps/],
    ['unknown command', ['frob'], 2, /unknown command 'frob'/],
  ];
  for (const [name, args, code, pattern] of cases) {
    it(`${name}: one line, exit ${code}, no stack trace`, async () => {
      await using home = await tmpDir();
      const r = await runSpotctl(args, { home: home.path });
      expect(r.code, r.stderr).toBe(code);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(pattern);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    });
  }
});
