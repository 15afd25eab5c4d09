/**
 * `spotctl prune` end to end: real runs (local agent, and an SSH host over a loopback sshd), a
 * live detached job whose folder must survive, cached venvs aged by their use mark.
 */
import { existsSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { waitFor } from './helpers/read-until.ts';
import { sshHostArgs, startSshd, type Sshd } from './helpers/sshd.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

const SLOW = 'import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.5)\n';

interface PruneReport {
  dryRun: boolean;
  actions: { where: string; kind: string; id: string; result: string; why: string }[];
}

function runIdOf(stderr: string): string {
  const id = /run (\S+):/.exec(stderr)?.[1];
  if (!id) throw new Error(`no run id in: ${stderr}`);
  return id;
}

function agentGone(dir: string): () => boolean {
  return () => {
    try {
      const pid = (JSON.parse(readFileSync(path.join(dir, 'agent', 'agent.json'), 'utf8')) as { pid: number }).pid;
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  };
}

/** Makes a run look as if it started `ms` ago (its record is this machine's file). */
function age(home: string, runId: string, ms: number): void {
  const file = path.join(home, 'runs', runId, 'run.json');
  const record = JSON.parse(readFileSync(file, 'utf8')) as { createdAt: number };
  writeFileSync(file, JSON.stringify({ ...record, createdAt: record.createdAt - ms }));
}

const DAY_MS = 86_400_000;

describe('spotctl prune (local)', () => {
  let home: TmpDir;
  let proj: TmpDir;
  let live = '';
  beforeAll(async () => {
    home = await tmpDir();
    proj = await tmpDir();
    writeProject(proj.path, { 'ok.py': 'print("ok")\n', 'slow.py': SLOW, 'requirements.txt': '# none\n' });
  });
  afterAll(async () => {
    if (live) await runSpotctl(['stop', live], { home: home.path, timeoutMs: 60_000 });
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
  });

  it('removes ended runs older than the limit and venvs unused that long, never a live run', async () => {
    const ended: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, 'ok.py'], { home: home.path, timeoutMs: 120_000 });
      expect(r.code, r.stderr).toBe(0);
      ended.push(runIdOf(r.stderr));
    }
    const d = await runSpotctl(['run', '--provider', 'local', '--detach', '--no-install', '--sync', proj.path, 'slow.py'], {
      home: home.path,
      timeoutMs: 120_000,
    });
    expect(d.code, d.stderr).toBe(0);
    live = runIdOf(d.stderr);
    for (const id of ended)
      await waitFor(async () => agentGone(path.join(home.path, 'runs', id))(), { timeoutMs: 30_000, what: `agent of ${id} exits` });
    for (const id of [...ended, live]) age(home.path, id, 10 * DAY_MS);
    // The venv was last used 10 days ago too.
    const [venv] = readdirSync(path.join(home.path, 'venvs'));
    const old = new Date(Date.now() - 10 * DAY_MS);
    utimesSync(path.join(home.path, 'venvs', venv!, '.spotctl-used'), old, old);

    const dry = await runSpotctl(['prune', '--dry-run', '--json'], { home: home.path });
    expect(dry.code, dry.stderr).toBe(0);
    const planned = JSON.parse(dry.stdout) as PruneReport;
    expect(
      planned.actions
        .filter((a) => a.result === 'would remove')
        .map((a) => a.id)
        .sort(),
    ).toEqual([...ended, venv!].sort());
    for (const id of ended) expect(existsSync(path.join(home.path, 'runs', id))).toBe(true);

    const r = await runSpotctl(['prune', '--json'], { home: home.path });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as PruneReport;
    expect(report.actions.find((a) => a.id === live)).toMatchObject({ result: 'kept', why: 'its agent is running' });
    for (const id of ended) expect(existsSync(path.join(home.path, 'runs', id))).toBe(false);
    expect(existsSync(path.join(home.path, 'runs', live, 'work', 'slow.py'))).toBe(true);
    expect(existsSync(path.join(home.path, 'venvs', venv!))).toBe(false);
    const ps = await runSpotctl(['ps', '--json'], { home: home.path });
    expect((JSON.parse(ps.stdout) as { runId: string }[]).map((p) => p.runId)).toEqual([live]);
  });

  it('--keep N keeps the newest N; a bad --keep is a usage error', async () => {
    const bad = await runSpotctl(['prune', '--keep', 'many'], { home: home.path });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--keep wants a whole number/);
    const r = await runSpotctl(['run', '--provider', 'local', '--no-install', '--sync', proj.path, 'ok.py'], {
      home: home.path,
      timeoutMs: 120_000,
    });
    const recent = runIdOf(r.stderr);
    await waitFor(async () => agentGone(path.join(home.path, 'runs', recent))(), { timeoutMs: 30_000, what: 'agent exits' });
    // Newest first: [recent, live]; --keep 1 keeps `recent`, and `live` stays because it is live.
    const kept = JSON.parse((await runSpotctl(['prune', '--keep', '1', '--json'], { home: home.path })).stdout) as PruneReport;
    expect(kept.actions.filter((a) => a.result === 'removed')).toEqual([]);
    const all = JSON.parse((await runSpotctl(['prune', '--keep', '0', '--json'], { home: home.path })).stdout) as PruneReport;
    expect(all.actions.filter((a) => a.result === 'removed').map((a) => a.id)).toEqual([recent]);
    expect(existsSync(path.join(home.path, 'runs', live))).toBe(true);
  });
});

describe('spotctl prune (SSH host)', () => {
  let sshd: Sshd;
  let home: TmpDir;
  let proj: TmpDir;
  let remoteDir = '';
  let live = '';
  const args = () => ['--remote-dir', remoteDir, ...sshHostArgs(sshd)];
  beforeAll(async () => {
    sshd = await startSshd();
    home = await tmpDir();
    remoteDir = `${home.path}/remote`;
    proj = await tmpDir();
    writeProject(proj.path, { 'ok.py': 'print("ok")\n', 'slow.py': SLOW });
  });
  afterAll(async () => {
    if (live) await runSpotctl(['stop', live], { home: home.path, timeoutMs: 60_000 });
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
    await sshd?.close();
  });

  it("removes an ended run's folder on the host and here, and keeps the live one", async () => {
    const r = await runSpotctl(['run', ...args(), '--sync', proj.path, 'ok.py'], { home: home.path, timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    const ended = runIdOf(r.stderr);
    const d = await runSpotctl(['run', ...args(), '--detach', '--sync', proj.path, 'slow.py'], { home: home.path, timeoutMs: 120_000 });
    expect(d.code, d.stderr).toBe(0);
    live = runIdOf(d.stderr);
    await waitFor(async () => agentGone(path.join(remoteDir, 'runs', ended))(), { timeoutMs: 30_000, what: 'agent exits' });

    const p = await runSpotctl(['prune', '--keep', '0', '--json'], { home: home.path, timeoutMs: 120_000 });
    expect(p.code, p.stderr).toBe(0);
    const report = JSON.parse(p.stdout) as PruneReport;
    expect(report.actions.find((a) => a.id === live)).toMatchObject({ result: 'kept', why: 'its agent is running' });
    expect(existsSync(path.join(remoteDir, 'runs', ended))).toBe(false);
    expect(existsSync(path.join(home.path, 'runs', ended))).toBe(false);
    expect(existsSync(path.join(remoteDir, 'runs', live, 'work', 'slow.py'))).toBe(true);
    expect(existsSync(path.join(home.path, 'runs', live, 'run.json'))).toBe(true);
  });
});
