/**
 * Outputs come back and a shell when you need one, end to end: `run --pull` on success, failure,
 * Ctrl-C and max-runtime, `spotctl pull` from a live run, `spotctl ssh -- cmd` in the workdir with
 * the venv active (and holding the agent's idle watchdog off), `run --ssh` in a pty. Local provider
 * and a real sshd on loopback.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SPOTCTL_BIN, runSpotctl, watchSpotctl } from './helpers/cli.ts';
import { sshHostArgs, startSshd, type Sshd } from './helpers/sshd.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

/** Writes outputs, prints `ready`, optionally waits (bounded) for a `go` file, exits with argv[1]. */
const OUTJOB = `import os, sys, time
os.makedirs('results/sub', exist_ok=True)
open('results/a.csv', 'w').write('a,b\\n1,2\\n')
open('results/sub/b.txt', 'w').write('deep\\n')
open('model.pt', 'wb').write(bytes(range(256)) * 40)
open('skip.log', 'w').write('not pulled\\n')
print('ready', flush=True)
wait = len(sys.argv) > 2 and sys.argv[2] == 'wait'
deadline = time.time() + 120
while wait and not os.path.exists('go') and time.time() < deadline:
    time.sleep(0.05)
sys.exit(int(sys.argv[1]))
`;

/** What the job writes to model.pt. */
const MODEL_PT = Buffer.concat(Array.from({ length: 40 }, () => Buffer.from(Array.from({ length: 256 }, (_, i) => i))));

const PULLS = ['--pull', 'results', '--pull', '*.pt', '--pull', 'missing/*'];

/** The three pulled files arrived whole under `dir`, the unnamed one did not. */
function expectPulled(dir: string): void {
  expect(readFileSync(path.join(dir, 'results', 'a.csv'), 'utf8')).toBe('a,b\n1,2\n');
  expect(readFileSync(path.join(dir, 'results', 'sub', 'b.txt'), 'utf8')).toBe('deep\n');
  expect(readFileSync(path.join(dir, 'model.pt'))).toEqual(MODEL_PT);
  expect(existsSync(path.join(dir, 'skip.log'))).toBe(false);
}

function runIdOf(stderr: string): string {
  const m = /run (\d{8}-\d{6}-[0-9a-f]{4})/.exec(stderr);
  if (!m) throw new Error(`no run id in: ${stderr}`);
  return m[1]!;
}

describe('run --pull, spotctl pull and spotctl ssh (local provider)', () => {
  let home: TmpDir;
  let proj: TmpDir;
  let cwd: TmpDir;
  beforeAll(async () => {
    home = await tmpDir();
    proj = await tmpDir();
    cwd = await tmpDir();
    writeProject(proj.path, { 'outjob.py': OUTJOB, 'requirements.txt': '# empty on purpose: a venv all the same\n' });
  });
  afterAll(async () => {
    await cwd?.[Symbol.asyncDispose]();
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
  });

  it('on success: the named paths land in ./spotctl-out/<run-id>/ with a one-line summary; a pattern that matched nothing is a warning', async () => {
    const r = await runSpotctl(['run', '--provider', 'local', '--no-install', '--sync', proj.path, ...PULLS, '--', 'outjob.py', '0'], {
      home: home.path,
      cwd: cwd.path,
    });
    expect(r.code, r.stderr).toBe(0);
    const dir = path.join(cwd.path, 'spotctl-out', runIdOf(r.stderr));
    expectPulled(dir);
    expect(r.stderr).toContain(`pulled 3 files (10 KiB) into ${dir}`);
    expect(r.stderr).toMatch(/warning: nothing matched missing\/\* in the workdir/);
  });

  it('on failure: the job exit code stands, and the files come back into --pull-to', async () => {
    await using to = await tmpDir();
    const r = await runSpotctl(
      ['run', '--provider', 'local', '--no-install', '--sync', proj.path, ...PULLS, '--pull-to', to.path, '--', 'outjob.py', '3'],
      { home: home.path, cwd: cwd.path },
    );
    expect(r.code, r.stderr).toBe(3);
    expectPulled(to.path);
    expect(r.stderr.indexOf('pulled 3 files')).toBeLessThan(r.stderr.indexOf('job exited with code 3'));
  });

  it('on Ctrl-C: the job is stopped, then its files come back before the run ends', async () => {
    await using to = await tmpDir();
    const cli = watchSpotctl(
      ['run', '--provider', 'local', '--no-install', '--sync', proj.path, ...PULLS, '--pull-to', to.path, '--', 'outjob.py', '0', 'wait'],
      { home: home.path, cwd: cwd.path },
    );
    await cli.until('stdout', /ready/, 60_000);
    cli.child.kill('SIGINT');
    const r = await cli.done;
    expect(r.stderr).toMatch(/stopping the job/);
    expect(r.code, r.stderr).not.toBe(0);
    expectPulled(to.path);
    expect(r.stderr.indexOf('pulled 3 files')).toBeLessThan(r.stderr.indexOf('job killed by SIGTERM'));
  });

  it('on --max-runtime: the files come back too', async () => {
    await using to = await tmpDir();
    const r = await runSpotctl(
      [
        'run',
        '--provider',
        'local',
        '--no-install',
        '--sync',
        proj.path,
        ...PULLS,
        '--pull-to',
        to.path,
        '--max-runtime',
        '1s',
        '--',
        'outjob.py',
        '0',
        'wait',
      ],
      { home: home.path, cwd: cwd.path },
    );
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(/pulled 3 files/);
    expectPulled(to.path);
  });

  it('on a (rehearsed) spot interruption: the job is stopped by the notice, its files come back, and the agent also saves them to the checkpoint target', async () => {
    await using to = await tmpDir();
    await using store = await tmpDir();
    const r = await runSpotctl(
      [
        'run',
        '--provider',
        'local',
        '--no-install',
        '--sync',
        proj.path,
        ...PULLS,
        '--pull-to',
        to.path,
        '--checkpoint-to',
        store.path,
        '--simulate-interruption',
        '1s',
        '--',
        'outjob.py',
        '0',
        'wait',
      ],
      { home: home.path, cwd: cwd.path, timeoutMs: 90_000 },
    );
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toMatch(/rehearsed interruption/);
    expect(r.stderr).toMatch(/pulled 3 files/);
    expectPulled(to.path);
    // The agent also saved them to the checkpoint target, beside the final set: they outlive a reclaimed instance.
    expect(r.stdout + r.stderr).toMatch(/outputs: 3 files \(10 KiB\) saved to the checkpoint target under outputs\//);
    expectPulled(path.join(store.path, runIdOf(r.stderr), 'outputs'));
  });

  it('spotctl pull copies from a live run; spotctl ssh -- cmd runs in the workdir with the venv, and holds the idle watchdog off', async () => {
    const started = await runSpotctl(
      ['run', '--provider', 'local', '--detach', '--idle-timeout', '2s', '--sync', proj.path, '--', 'outjob.py', '0', 'wait'],
      { home: home.path, cwd: cwd.path },
    );
    expect(started.code, started.stderr).toBe(0);
    const runId = runIdOf(started.stderr);
    const logs = watchSpotctl(['logs', runId, '-f'], { home: home.path });
    await logs.until('stdout', /ready/, 60_000);

    await using to = await tmpDir();
    const pulled = await runSpotctl(['pull', runId, 'results/*.csv', 'model.pt', '--to', to.path], { home: home.path, cwd: cwd.path });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(readFileSync(path.join(to.path, 'results', 'a.csv'), 'utf8')).toBe('a,b\n1,2\n');
    expect(existsSync(path.join(to.path, 'results', 'sub'))).toBe(false);
    expect(pulled.stderr).toContain(`pulled 2 files (10 KiB) into ${to.path}`);

    const workdir = path.join(home.path, 'runs', runId, 'work');
    const sh = await runSpotctl(['ssh', runId, '--', 'pwd; command -v python; echo "$VIRTUAL_ENV"'], { home: home.path });
    expect(sh.code, sh.stderr).toBe(0);
    expect(sh.stdout.split('\n').slice(0, 3)).toEqual([workdir, path.join(workdir, '.venv', 'bin', 'python'), path.join(workdir, '.venv')]);

    // The job ends (go), then the shell stays open well past the 2 s idle timeout: the agent must still be there.
    const agentPid = (JSON.parse(readFileSync(path.join(home.path, 'runs', runId, 'run.json'), 'utf8')) as { agent: { pid: number } }).agent
      .pid;
    const held = await runSpotctl(['ssh', runId, '--', `touch go; sleep 5; kill -0 ${agentPid} && echo agent-alive`], { home: home.path });
    expect(held.stdout, held.stderr).toContain('agent-alive');
    expect((await logs.done).code).toBe(0);
    const code = await runSpotctl(['ssh', runId, '--', 'exit 7'], { home: home.path });
    expect(code.code).toBe(7);
  });

  it('spotctl pull of a path that is not there fails in one line', async () => {
    const r = await runSpotctl(['pull', 'last', 'nothing-here'], { home: home.path, cwd: cwd.path });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/spotctl error: nothing matched nothing-here in the workdir of run \S+ → look around with: spotctl ssh/);
  });

  it('refuses bad --pull, --pull-to and --ssh combinations before anything happens', async () => {
    for (const [args, message] of [
      [['--pull', '../up'], /--pull "..\/up": must not leave the workdir/],
      [['--pull', '/abs'], /--pull "\/abs": must be relative to the workdir/],
      [['--pull-to', 'x'], /--pull-to needs something to pull/],
      [['--pull', 'x', '--detach'], /--pull cannot be used with --detach/],
      [['--ssh', '--detach'], /--ssh cannot be used with --detach/],
    ] as const) {
      const r = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, ...args, '--', 'true'], {
        home: home.path,
        cwd: cwd.path,
      });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
    }
    const r = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, '--ssh', '--', 'true'], {
      home: home.path,
      cwd: cwd.path,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--ssh opens a shell instead of running a command/);
  });
});

describe('run --pull, spotctl pull, spotctl ssh and run --ssh (loopback sshd)', () => {
  let sshd: Sshd;
  let home: TmpDir;
  let proj: TmpDir;
  let cwd: TmpDir;
  let remoteDir = '';
  const sshArgs = (): string[] => ['--remote-dir', remoteDir, ...sshHostArgs(sshd)];

  beforeAll(async () => {
    sshd = await startSshd();
    home = await tmpDir();
    proj = await tmpDir();
    cwd = await tmpDir();
    remoteDir = `${home.path}/remote`;
    writeProject(proj.path, { 'outjob.py': OUTJOB, 'requirements.txt': '# empty on purpose: a venv all the same\n' });
  });
  afterAll(async () => {
    await cwd?.[Symbol.asyncDispose]();
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
    await sshd?.close();
  });

  it('pulls over the ssh master on failure; spotctl pull and spotctl ssh -- cmd reach the same workdir with its venv', async () => {
    const r = await runSpotctl(['run', ...sshArgs(), '--sync', proj.path, ...PULLS, '--', 'outjob.py', '4'], {
      home: home.path,
      cwd: cwd.path,
      timeoutMs: 120_000,
    });
    expect(r.code, r.stderr).toBe(4);
    const runId = runIdOf(r.stderr);
    expectPulled(path.join(cwd.path, 'spotctl-out', runId));
    expect(r.stderr).toMatch(/pulled 3 files \(10 KiB\)/);

    await using to = await tmpDir();
    const pulled = await runSpotctl(['pull', runId, 'results/sub', '--to', to.path], { home: home.path, cwd: cwd.path });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(readFileSync(path.join(to.path, 'results', 'sub', 'b.txt'), 'utf8')).toBe('deep\n');

    const workdir = `${remoteDir}/runs/${runId}/work`;
    const sh = await runSpotctl(['ssh', runId, '--', 'pwd; command -v python'], { home: home.path });
    expect(sh.code, sh.stderr).toBe(0);
    expect(sh.stdout.split('\n').slice(0, 2)).toEqual([workdir, `${workdir}/.venv/bin/python`]);
  });

  it('run --ssh: sync, install, a shell in a pty in the workdir; the run ends with the shell and its code', async () => {
    const command = ['node', SPOTCTL_BIN, 'run', ...sshArgs(), '--sync', proj.path, '--ssh'].map((w) => `'${w}'`).join(' ');
    const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], {
      cwd: cwd.path,
      env: { ...process.env, SPOTCTL_HOME: home.path, NO_COLOR: '1', SHELL: '/bin/sh' },
    });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr.on('data', (d: Buffer) => (text += d.toString()));
    child.stdin.write('test -t 0 && echo "tty-yes in=$PWD py=$(command -v python)"; exit 7\n');
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    clearTimeout(timer);
    expect(code, text).toBe(7);
    expect(text).toMatch(new RegExp(`tty-yes in=${remoteDir}/runs/\\S+/work py=${remoteDir}/runs/\\S+/work/\\.venv/bin/python`));
    expect(text).toMatch(/shell exited with code 7/);
  });
});
