/**
 * `spotctl run --host` end to end: a real sshd (own host key, key-only auth), real ssh master,
 * real rsync, the real agent bundle installed over SSH, output through an `ssh -L` tunnel.
 * Network faults are real: the tunnel is killed, sshd drops every connection, the link goes down.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSpotctl, watchSpotctl } from './helpers/cli.ts';
import { createNetns, type Netns } from './helpers/netns.ts';
import { sshHostArgs, startSshd, type Sshd } from './helpers/sshd.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { NUMBERED, checkSequence, numberedLines, writeProject } from './fixtures.ts';

/**
 * Numbered lines (1000 at a time, 50 ms apart) until the file argv[1] exists, then `wrote N lines`
 * on stderr and exit 0; exit 3 if it is not released within 120 s.
 */
const STREAM_UNTIL_RELEASED = `
import os, sys, time
release = sys.argv[1]
deadline = time.monotonic() + 120
i = 0
while not os.path.exists(release):
    if time.monotonic() > deadline:
        sys.stderr.write("never released\\n")
        sys.exit(3)
    for _ in range(1000):
        i += 1
        sys.stdout.write(f"line {i}\\n")
    sys.stdout.flush()
    time.sleep(0.05)
sys.stderr.write(f"wrote {i} lines\\n")
`;

/** Runs live under a temp dir on the "host" (this machine), never in the real ~/.spotctl. */
let remoteDir = '';
function sshArgs(sshd: Sshd): string[] {
  return ['--remote-dir', remoteDir, ...sshHostArgs(sshd)];
}

/** Pids of the ssh client processes that use this server's client key (the master and its helpers). */
function sshClientPids(identityFile: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (/(^|\/)ssh$/.test(argv[0] ?? '') && argv.includes(identityFile)) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

describe('spotctl run --host (loopback sshd)', () => {
  let sshd: Sshd;
  let home: TmpDir;
  let proj: TmpDir;

  beforeAll(async () => {
    sshd = await startSshd();
    home = await tmpDir();
    remoteDir = `${home.path}/remote`;
    proj = await tmpDir();
    writeProject(proj.path, {
      'gen.py': NUMBERED,
      'stream.py': STREAM_UNTIL_RELEASED,
      'requirements.txt': '# empty on purpose\n',
      'env.py': 'import sys\nprint(sys.prefix)\n',
    });
  });
  afterAll(async () => {
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
    await sshd?.close();
  });

  it('delivers 100 000 stdout lines once and in order, stderr apart, and exit code 3', async () => {
    const r = await runSpotctl(['run', ...sshArgs(sshd), '--sync', proj.path, '--', 'gen.py', '100000', '3'], {
      home: home.path,
      timeoutMs: 180_000,
    });
    expect(r.code, r.stderr).toBe(3);
    const seen = numberedLines(r.stdout);
    expect(seen).toHaveLength(100_000);
    expect(checkSequence(seen, 100_000)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
    expect(r.stderr.match(/^progress \d+$/gm)).toHaveLength(100);
    expect(r.stderr).toMatch(/installed agent build [0-9a-f]{16}/);
    expect(r.stderr).toMatch(/job exited with code 3/);
  });

  it('reuses the installed agent and runs .py files with the venv python', async () => {
    const r = await runSpotctl(['run', ...sshArgs(sshd), '--sync', proj.path, 'env.py'], { home: home.path, timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/\/remote\/runs\/[^/]+\/work\/\.venv$/);
    expect(r.stderr).not.toMatch(/installed agent build/);
  });

  it('loses and repeats no line when the tunnel is killed several times mid-stream', async () => {
    // The job streams until the test releases it, so every kill lands on a live stream: with a job
    // that ended on its own, a kill could land after the agent's `end` (the controller still
    // printing what it had received) or while the previous reconnect was still under way, and
    // then it needed no reconnect of its own. Each kill waits for the previous reconnect.
    await using gate = await tmpDir();
    const release = path.join(gate.path, 'release');
    const cli = watchSpotctl(['run', ...sshArgs(sshd), '--no-install', '--sync', proj.path, '--', 'stream.py', release], {
      home: home.path,
    });
    const kills = [5_000, 20_000, 35_000];
    for (const [i, at] of kills.entries()) {
      await cli.until('stdout', new RegExp(`line ${at}\\n`), 60_000);
      const pids = sshClientPids(sshd.identityFile);
      expect(pids.length).toBeGreaterThan(0);
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      await cli.until('stderr', new RegExp(`(reconnected after[^]*){${i + 1}}`), 60_000);
    }
    writeFileSync(release, '');
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(0);
    // One reconnect per kill: each one broke a stream that was still going.
    expect(r.stderr.match(/reconnected after/g)?.length ?? 0).toBe(kills.length);
    const wrote = Number(/wrote (\d+) lines/.exec(r.stderr)?.[1]);
    expect(wrote).toBeGreaterThan(kills.at(-1)!);
    expect(checkSequence(numberedLines(r.stdout), wrote)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
  });

  it('survives sshd dropping every connection and coming back', async () => {
    const n = 40_000;
    const cli = watchSpotctl(['run', ...sshArgs(sshd), '--no-install', '--sync', proj.path, '--', 'gen.py', String(n), '0', '0.05'], {
      home: home.path,
    });
    await cli.until('stdout', /line 10000\n/, 60_000);
    await sshd.stop();
    try {
      await cli.until('stderr', /lost the agent/, 30_000);
    } finally {
      await sshd.start();
    }
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(0);
    expect(checkSequence(numberedLines(r.stdout), n)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
  });

  it('the job survives a SIGKILLed controller, and attach resumes with nothing lost', async () => {
    const n = 40_000;
    const first = watchSpotctl(['run', ...sshArgs(sshd), '--no-install', '--sync', proj.path, '--', 'gen.py', String(n), '4', '0.05'], {
      home: home.path,
    });
    await first.until('stdout', /line 8000\n/, 60_000);
    first.child.kill('SIGKILL');
    const before = numberedLines((await first.done).stdout);
    const att = await runSpotctl(['attach', 'last'], { home: home.path, timeoutMs: 120_000 });
    expect(att.code, att.stderr).toBe(4);
    const after = numberedLines(att.stdout);
    const merged = [...before.filter((v) => v < (after[0] ?? Infinity)), ...after];
    expect(checkSequence(merged, n)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
    const logs = await runSpotctl(['logs', 'last'], { home: home.path, timeoutMs: 60_000 });
    expect(checkSequence(numberedLines(logs.stdout), n)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
  });

  it('refuses a host whose key does not match, in one line', async () => {
    await using other = await tmpDir();
    const wrongKnownHosts = `${other.path}/known_hosts`;
    const { writeFileSync } = await import('node:fs');
    writeFileSync(
      wrongKnownHosts,
      `[${sshd.host}]:${sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBu1ydZ6KMVXkmOQ4mZkEj1aRvK5YCz1ttgj0ZK9qSqD\n`,
    );
    const r = await runSpotctl(
      [
        'run',
        '--host',
        sshd.hostSpec,
        '--identity',
        sshd.identityFile,
        '--known-hosts',
        wrongKnownHosts,
        '--ssh-config',
        sshd.configFile,
        '--',
        'true',
      ],
      { home: home.path },
    );
    expect(r.code).toBe(1);
    expect(
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.includes('error')),
    ).toHaveLength(1);
    expect(r.stderr).toMatch(/host key/i);
  });

  it('an unreachable host is one clear line and exit 1', async () => {
    const r = await runSpotctl(
      ['run', '--host', 'root@127.0.0.1:1', '--identity', sshd.identityFile, '--ssh-config', sshd.configFile, '--', 'true'],
      { home: home.path },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/spotctl error: .*127\.0\.0\.1/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('spotctl run --host (sshd in a network namespace)', () => {
  let ns: Netns;
  let sshd: Sshd;
  beforeAll(async () => {
    ns = await createNetns();
    sshd = await startSshd({ netns: ns });
  });
  afterAll(async () => {
    await sshd?.close();
    await ns?.close();
  });

  it('streams through a link that goes down and comes back, losing nothing', async () => {
    await using home = await tmpDir();
    remoteDir = `${home.path}/remote`;
    await using proj = await tmpDir();
    writeProject(proj.path, { 'gen.py': NUMBERED });
    const n = 30_000;
    const cli = watchSpotctl(['run', ...sshArgs(sshd), '--no-install', '--sync', proj.path, '--', 'gen.py', String(n), '0', '0.05'], {
      home: home.path,
    });
    await cli.until('stdout', /line 5000\n/, 60_000);
    await ns.linkDown();
    // A few seconds of silence: packets are dropped, no RST; the job keeps writing to its log.
    await new Promise((r) => setTimeout(r, 3000));
    await ns.linkUp();
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(0);
    expect(checkSequence(numberedLines(r.stdout), n)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
  });
});
