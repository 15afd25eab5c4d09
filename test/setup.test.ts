/**
 * The setup command (`--setup CMD`, `setup = "…"` in spotctl.toml) end to end on the local
 * provider, through the real `spotctl` executable and the real agent: it runs before the job with
 * its output streamed, once per host (again when the command or the dependency files change), and
 * a failing setup is a setup failure — its own error code, no job started.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { sshHostArgs, startSshd } from './helpers/sshd.ts';
import { tmpDir } from './helpers/tmp.ts';

const ENV = { SPOTCTL_PROVIDER: 'local' };

describe('setup', () => {
  it('runs before the job, streamed, once per host; again when a dependency file changes', async () => {
    await using dir = await tmpDir();
    const project = path.join(dir.path, 'project');
    mkdirSync(project);
    writeFileSync(path.join(project, 'requirements.txt'), '# nothing yet\n');
    const counter = path.join(dir.path, 'setup-count');
    const home = path.join(dir.path, 'home');
    // The setup leaves something outside the workdir (as apt or a data download would) and counts its runs.
    const setup = `echo "setting up in $PWD"; echo x >> ${counter}; echo ready > ${path.join(dir.path, 'tool')}`;
    const args = [
      'run',
      '--idle-timeout',
      '2s',
      '--no-install',
      '--sync',
      project,
      '--setup',
      setup,
      '--',
      'sh',
      '-c',
      `cat ${path.join(dir.path, 'tool')}`,
    ];

    const first = await runSpotctl(args, { home, env: ENV, timeoutMs: 60_000 });
    expect(first.stderr).toMatch(/^setting up in .*\/runs\/[^/]+\/work$/m);
    expect(first.stderr).toMatch(/✓ ran the setup command/);
    expect(first.stdout).toBe('ready\n');
    expect(first.code).toBe(0);

    const second = await runSpotctl(args, { home, env: ENV, timeoutMs: 60_000 });
    expect(second.stderr).toMatch(/✓ setup already done on this machine/);
    expect(second.stderr).not.toMatch(/setting up/);
    expect(second.code).toBe(0);
    expect(readFileSync(counter, 'utf8')).toBe('x\n');

    writeFileSync(path.join(project, 'requirements.txt'), '# now with a package\n');
    const third = await runSpotctl(args, { home, env: ENV, timeoutMs: 60_000 });
    expect(third.stderr).toMatch(/✓ ran the setup command/);
    expect(third.code).toBe(0);
    expect(readFileSync(counter, 'utf8')).toBe('x\nx\n');
  });

  it("takes setup from spotctl.toml, run in the workdir with the job's environment", async () => {
    await using dir = await tmpDir();
    const project = path.join(dir.path, 'project');
    mkdirSync(project);
    writeFileSync(
      path.join(project, 'spotctl.toml'),
      [
        'idle-timeout = "2s"',
        'env = { STAGE = "prepared" }',
        `setup = "echo $STAGE > ${path.join(dir.path, 'seen')}; test -f spotctl.toml"`,
      ].join('\n'),
    );
    const r = await runSpotctl(['run', '--', 'true'], { home: path.join(dir.path, 'home'), cwd: project, env: ENV, timeoutMs: 60_000 });
    expect(r.stderr).toMatch(/✓ ran the setup command/);
    expect(r.code).toBe(0);
    expect(readFileSync(path.join(dir.path, 'seen'), 'utf8')).toBe('prepared\n');
  });

  it('reports a failing setup as a setup failure, and the job never starts', async () => {
    await using dir = await tmpDir();
    const home = path.join(dir.path, 'home');
    const ranMarker = path.join(dir.path, 'job-ran');
    const r = await runSpotctl(
      [
        'run',
        '--json',
        '--idle-timeout',
        '2s',
        '--sync',
        dir.path,
        '--setup',
        'echo "E: Unable to locate package nope" >&2; exit 100',
        '--',
        'touch',
        ranMarker,
      ],
      { home, env: ENV, timeoutMs: 60_000 },
    );
    const events = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'setup-output', text: expect.stringContaining('Unable to locate package nope') as unknown }),
    );
    expect(events.at(-1)).toMatchObject({
      type: 'error',
      code: 'SPOTCTL_SETUP_FAILED',
      message: 'the setup command failed (exit 100): E: Unable to locate package nope',
    });
    expect(r.code).toBe(1);
    expect(existsSync(ranMarker)).toBe(false);
    const ps = await runSpotctl(['ps', '--json'], { home, env: ENV, timeoutMs: 30_000 });
    expect(JSON.parse(ps.stdout)).toEqual([
      expect.objectContaining({ state: 'failed', reason: expect.stringMatching(/setup command failed/) as unknown }),
    ]);

    // A failed setup leaves no marker: the next run tries it again.
    const again = await runSpotctl(
      ['run', '--idle-timeout', '2s', '--sync', dir.path, '--setup', 'echo "E: Unable to locate package nope" >&2; exit 100', '--', 'true'],
      { home, env: ENV, timeoutMs: 60_000 },
    );
    expect(again.stderr).toMatch(/Unable to locate package nope\n/);
    expect(again.code).toBe(1);
  });

  it('on an SSH host: runs once per host, skips on the next run, and a failure is a setup failure', async () => {
    const sshd = await startSshd();
    try {
      await using dir = await tmpDir();
      const project = path.join(dir.path, 'project');
      mkdirSync(project);
      writeFileSync(path.join(project, 'job.sh'), 'echo job ran\n');
      const remote = path.join(dir.path, 'remote');
      const ssh = ['--remote-dir', remote, ...sshHostArgs(sshd)];
      const home = path.join(dir.path, 'home');
      const args = [...ssh, '--idle-timeout', '2s', '--sync', project];
      const first = await runSpotctl(['run', ...args, '--setup', 'echo remote setup; test -f job.sh', '--', 'sh', 'job.sh'], {
        home,
        env: {},
        timeoutMs: 120_000,
      });
      expect(first.stderr).toMatch(/^remote setup$/m);
      expect(first.stderr).toMatch(/✓ ran the setup command on /);
      expect(first.stdout).toBe('job ran\n');
      expect(first.code, first.stderr).toBe(0);
      const second = await runSpotctl(['run', ...args, '--setup', 'echo remote setup; test -f job.sh', '--', 'sh', 'job.sh'], {
        home,
        env: {},
        timeoutMs: 120_000,
      });
      expect(second.stderr).toMatch(/✓ setup already done on /);
      expect(second.stderr).not.toMatch(/^remote setup$/m);
      expect(second.code, second.stderr).toBe(0);
      const failed = await runSpotctl(['run', '--json', ...args, '--setup', 'echo no disk >&2; exit 7', '--', 'sh', 'job.sh'], {
        home,
        env: {},
        timeoutMs: 120_000,
      });
      const last = JSON.parse(failed.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
      expect(last).toMatchObject({
        type: 'error',
        code: 'SPOTCTL_SETUP_FAILED',
        message: expect.stringMatching(/^the setup command failed on .* \(exit 7\): no disk$/) as unknown,
      });
      expect(failed.stdout).not.toMatch(/job ran/);
      expect(failed.code).toBe(1);
    } finally {
      await sshd.close();
    }
  });
});
