/**
 * How a run's life is recorded, with the real CLI: options are refused before anything exists,
 * a setup that fails or is cancelled says so in `ps`, and a closed terminal (SIGHUP) detaches
 * instead of killing the controller — the job goes on and `attach` resumes it.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { collect, runSpotctl, spawnSpotctl } from './helpers/cli.ts';
import { readUntil } from './helpers/read-until.ts';
import { tmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

interface PsRow {
  runId: string;
  state: string;
  reason?: string;
}

async function ps(home: string): Promise<PsRow[]> {
  const r = await runSpotctl(['ps', '--json'], { home });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as PsRow[];
}

function runRecord(home: string, runId: string): { detached: boolean; setup?: { state: string; reason: string } } {
  return JSON.parse(readFileSync(path.join(home, 'runs', runId, 'run.json'), 'utf8')) as {
    detached: boolean;
    setup?: { state: string; reason: string };
  };
}

/** Ticks until the file named by its argument exists (bounded), then prints "released". */
const WAIT_FOR_RELEASE = `import os, sys, time
flag = sys.argv[1]
for i in range(1, 6001):
    if os.path.exists(flag):
        break
    print(f"tick {i}", flush=True)
    time.sleep(0.05)
print("released", flush=True)
`;

describe('run options are checked before anything exists', () => {
  it('a bad --checkpoint-to is refused with exit 2, before a run record or a sync', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'hello.py': 'print("hi")\n' });
    const r = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, '--checkpoint-to', 'relative/dir', 'hello.py'], {
      home: home.path,
    });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/--checkpoint-to: 'relative\/dir' must be s3:\/\/BUCKET\/PREFIX or an absolute directory/);
    expect(existsSync(path.join(home.path, 'runs')) ? readdirSync(path.join(home.path, 'runs')) : []).toEqual([]);
    expect(await ps(home.path)).toEqual([]);
  });
});

describe('a setup that does not get the job going is recorded as such', () => {
  it('failed, with the reason, when the host cannot be reached', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'hello.py': 'print("hi")\n' });
    // A port nothing listens on: the connection is refused at once.
    const closed = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const r = await runSpotctl(['run', '--host', `nobody@127.0.0.1:${closed}`, '--sync', proj.path, 'hello.py'], {
      home: home.path,
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).not.toBe(0);
    const [row] = await ps(home.path);
    expect(row?.state).toBe('failed');
    expect(row?.reason).toBeTruthy();
    expect(runRecord(home.path, row!.runId).setup?.state).toBe('failed');
  });

  it('cancelled, when Ctrl-C arrives during setup', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'hello.py': 'print("hi")\n' });
    // Accepts the TCP connection and never speaks SSH: the setup hangs at "connect" until cancelled.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = silent.address() as net.AddressInfo;
      const ctl = spawnSpotctl(['run', '--host', `nobody@127.0.0.1:${port}`, '--sync', proj.path, 'hello.py'], { home: home.path });
      const done = collect(ctl, 60_000);
      await readUntil(ctl.stderr, /run \S+: /, 20_000);
      ctl.kill('SIGINT');
      const r = await done;
      expect(r.code, r.stderr).toBe(130);
      expect(r.stderr).toMatch(/cancelled during setup/);
      const [row] = await ps(home.path);
      expect(row?.state).toBe('cancelled');
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});

describe('SIGHUP (the terminal closed)', () => {
  it('detaches: the job keeps running, the run is recorded as detached, and attach resumes it', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    await using flags = await tmpDir();
    const release = path.join(flags.path, 'release');
    writeProject(proj.path, { 'wait.py': WAIT_FOR_RELEASE });
    const ctl = spawnSpotctl(['run', '--provider', 'local', '--sync', proj.path, '--', 'wait.py', release], { home: home.path });
    const done = collect(ctl, 60_000);
    await readUntil(ctl.stdout, /tick 3\n/, 20_000);
    ctl.kill('SIGHUP');
    const r = await done;
    expect(r.signal, r.stderr).toBeNull();
    expect(r.code, r.stderr).toBe(129);
    expect(r.stderr).toMatch(/detached: .*spotctl attach \S+/);
    expect(r.stderr).not.toMatch(/stopping the job/);

    const [row] = await ps(home.path);
    expect(row?.state).toBe('running');
    expect(runRecord(home.path, row!.runId).detached).toBe(true);

    const attach = spawnSpotctl(['attach', 'last'], { home: home.path });
    const attached = collect(attach, 60_000);
    await readUntil(attach.stdout, /tick \d+\n/, 20_000);
    writeFileSync(release, '');
    const a = await attached;
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toMatch(/released\n/);
  });

  it('during setup, lets the setup finish and then detaches instead of following', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    await using flags = await tmpDir();
    const release = path.join(flags.path, 'release');
    // A requirements file makes the setup build a venv: seconds, so the hangup arrives during it.
    writeProject(proj.path, { 'wait.py': WAIT_FOR_RELEASE, 'requirements.txt': '# nothing to install\n' });
    const ctl = spawnSpotctl(['run', '--provider', 'local', '--sync', proj.path, '--', 'wait.py', release], { home: home.path });
    const done = collect(ctl, 120_000);
    await readUntil(ctl.stderr, /run \S+: /, 20_000);
    ctl.kill('SIGHUP');
    const r = await done;
    expect(r.code, r.stderr).toBe(129);
    expect(r.stderr).toMatch(/started the agent/);
    // Detached before following: not one line of the job was printed here.
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/detached: .*spotctl attach \S+/);
    const [row] = await ps(home.path);
    expect(row?.state).toBe('running');
    expect(runRecord(home.path, row!.runId).detached).toBe(true);
    writeFileSync(release, '');
    const a = await runSpotctl(['attach', 'last'], { home: home.path, timeoutMs: 60_000 });
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toMatch(/released\n/);
  });
});
