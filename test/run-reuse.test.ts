/**
 * Repeated runs of the same project on the same host reuse what the last one left: the venv
 * (cached by the hash of requirements.txt) and the previous workdir as rsync's --link-dest.
 * Real agent, real rsync, real python venvs; the ssh case over a loopback sshd.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { sshHostArgs, startSshd, type Sshd } from './helpers/sshd.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

const PREFIX = 'import sys\nprint("prefix", sys.prefix)\n';

function runIdOf(stderr: string): string {
  const id = /run (\S+):/.exec(stderr)?.[1];
  if (!id) throw new Error(`no run id in: ${stderr}`);
  return id;
}

describe('a second run on the same machine (local provider)', () => {
  let home: TmpDir;
  let proj: TmpDir;
  beforeAll(async () => {
    home = await tmpDir();
    proj = await tmpDir();
    writeProject(proj.path, {
      'prefix.py': PREFIX,
      'requirements.txt': '# no packages: the venv is still built\n',
      'data/blob.txt': 'x'.repeat(10_000),
    });
  });
  afterAll(async () => {
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
  });

  it('reuses the cached venv (no install) and links unchanged files from the previous workdir', async () => {
    const args = ['run', '--provider', 'local', '--sync', proj.path, 'prefix.py'];
    const first = await runSpotctl(args, { home: home.path, timeoutMs: 120_000 });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/installed Python dependencies/);
    expect(first.stderr).not.toMatch(/reused the cached venv/);
    const firstId = runIdOf(first.stderr);

    const second = await runSpotctl(args, { home: home.path, timeoutMs: 120_000 });
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).not.toMatch(/installed Python dependencies/);
    expect(second.stderr).toMatch(/reused the cached venv [0-9a-f]{16}/);
    expect(second.stderr).toContain(`linked from run ${firstId}`);
    // The job ran in the shared venv, through the workdir's .venv link.
    expect(second.stdout).toMatch(/prefix .*\/work\/\.venv$/m);
    const secondId = runIdOf(second.stderr);
    const blob = (id: string) => statSync(path.join(home.path, 'runs', id, 'work', 'data', 'blob.txt'));
    expect(blob(secondId).ino).toBe(blob(firstId).ino);
    expect(readdirSync(path.join(home.path, 'venvs')).filter((n) => !n.startsWith('.'))).toHaveLength(1);
  });

  it('a changed requirements.txt builds a new venv', async () => {
    writeProject(proj.path, { 'requirements.txt': '# changed: another key\n' });
    const r = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, 'prefix.py'], { home: home.path, timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/installed Python dependencies/);
    expect(readdirSync(path.join(home.path, 'venvs'))).toHaveLength(2);
  });
});

describe('a second run on the same SSH host', () => {
  let sshd: Sshd;
  let home: TmpDir;
  let proj: TmpDir;
  let remoteDir = '';
  beforeAll(async () => {
    sshd = await startSshd();
    home = await tmpDir();
    remoteDir = `${home.path}/remote`;
    proj = await tmpDir();
    writeProject(proj.path, { 'prefix.py': PREFIX, 'requirements.txt': '# nothing to fetch\n', 'data/blob.txt': 'y'.repeat(10_000) });
  });
  afterAll(async () => {
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
    await sshd?.close();
  });

  it('reuses the venv and the previous workdir as --link-dest', async () => {
    const args = ['run', '--remote-dir', remoteDir, ...sshHostArgs(sshd), '--sync', proj.path, 'prefix.py'];
    const first = await runSpotctl(args, { home: home.path, timeoutMs: 120_000 });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/installed Python dependencies/);
    const firstId = runIdOf(first.stderr);
    const second = await runSpotctl(args, { home: home.path, timeoutMs: 120_000 });
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).not.toMatch(/installed Python dependencies/);
    expect(second.stderr).toMatch(/reused the cached venv [0-9a-f]{16}/);
    expect(second.stderr).toContain(`linked from run ${firstId}`);
    expect(second.stdout).toMatch(/prefix .*\/remote\/runs\/[^/]+\/work\/\.venv$/m);
    const blob = (id: string) => statSync(path.join(remoteDir, 'runs', id, 'work', 'data', 'blob.txt'));
    expect(blob(runIdOf(second.stderr)).ino).toBe(blob(firstId).ino);
  });
});
