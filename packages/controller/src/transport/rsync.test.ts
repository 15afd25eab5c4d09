import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { rsyncTo, type RsyncProgress } from './rsync.ts';

// conn = null is the local provider's copy: the same rsync filters without an SSH host.
describe('rsyncTo (local copy)', () => {
  let root: string;
  let proj: string;
  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'spotctl-rsync-unit-'));
    proj = path.join(root, 'proj');
    const files: Record<string, string> = {
      'train.py': 'print(1)\n',
      '.gitignore': 'checkpoints/\n*.tmp\n',
      'sub/.gitignore': 'local-only.txt\n',
      'sub/local-only.txt': 'x',
      'sub/kept.txt': 'x',
      'checkpoints/c1.pt': 'x',
      'a.tmp': 'x',
      '.git/config': 'x',
      '.venv/pyvenv.cfg': 'x',
      'venv/pyvenv.cfg': 'x',
      '__pycache__/a.pyc': 'x',
      'node_modules/m/i.js': 'x',
      '.spotctl/x': 'x',
    };
    for (const [name, text] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(proj, name)), { recursive: true });
      await writeFile(path.join(proj, name), text);
    }
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  async function tree(dir: string, prefix = ''): Promise<string[]> {
    const out: string[] = [];
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const rel = `${prefix}${e.name}`;
      if (e.isDirectory()) out.push(...(await tree(path.join(dir, e.name), `${rel}/`)));
      else out.push(rel);
    }
    return out.sort();
  }

  test('copies directory contents, honouring nested .gitignore files and the fixed excludes', async () => {
    const dest = path.join(root, 'dest', 'nested');
    const r = await rsyncTo(null, [proj], dest);
    const expected = ['.gitignore', 'sub/.gitignore', 'sub/kept.txt', 'train.py'];
    expect(await tree(dest)).toEqual(expected);
    expect(r.files.sort()).toEqual(expected);
  });

  test('re-sync sends only changes; deleteExtraneous keeps excluded files on the far side', async () => {
    const dest = path.join(root, 'dest');
    await rsyncTo(null, [proj], dest);
    await writeFile(path.join(proj, 'train.py'), 'print("changed")\n');
    await rm(path.join(proj, 'sub', 'kept.txt'));
    await mkdir(path.join(dest, '.venv'));
    await writeFile(path.join(dest, '.venv', 'pyvenv.cfg'), 'remote venv');
    const r = await rsyncTo(null, [proj], dest, { deleteExtraneous: true });
    expect(r.files).toEqual(['train.py']);
    expect(await tree(dest)).toEqual(['.gitignore', '.venv/pyvenv.cfg', 'sub/.gitignore', 'train.py']);
    expect(await readFile(path.join(dest, 'train.py'), 'utf8')).toBe('print("changed")\n');
  });

  test("several sources: a file goes in by its name next to a directory's contents", async () => {
    const extra = path.join(root, 'config.yaml');
    await writeFile(extra, 'lr: 1\n');
    const dest = path.join(root, 'dest');
    await rsyncTo(null, [path.join(proj, 'sub'), extra], dest);
    expect(await tree(dest)).toEqual(['.gitignore', 'config.yaml', 'kept.txt']);
  });

  test('a missing path or an empty list is a usage error', async () => {
    await expect(rsyncTo(null, [path.join(root, 'missing')], root)).rejects.toMatchObject({ code: 'SPOTCTL_USAGE', exitCode: 2 });
    await expect(rsyncTo(null, [], root)).rejects.toMatchObject({ code: 'SPOTCTL_USAGE' });
  });

  test("an rsync failure becomes SPOTCTL_SYNC_FAILED with rsync's own reason", async () => {
    // A non-empty directory where a file must go: rsync refuses to delete it (no --force).
    const dest = path.join(root, 'dest');
    await mkdir(path.join(dest, 'train.py'), { recursive: true });
    await writeFile(path.join(dest, 'train.py', 'inside'), 'x');
    const err = await rsyncTo(null, [proj], dest).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'SPOTCTL_SYNC_FAILED' });
    expect((err as Error).message).toMatch(/^rsync failed \(exit \d+\): .*train\.py/);
    expect((err as Error).message).not.toContain('\n');
  });

  test('a destination that cannot be created is SPOTCTL_SYNC_FAILED', async () => {
    const blocker = path.join(root, 'blocker');
    await writeFile(blocker, 'x');
    await expect(rsyncTo(null, [proj], path.join(blocker, 'dest'))).rejects.toMatchObject({ code: 'SPOTCTL_SYNC_FAILED' });
  });

  test('abort stops the copy and rejects with the reason', async () => {
    const reason = new Error('cancelled');
    await expect(rsyncTo(null, [proj], path.join(root, 'd'), { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  test('linkDest hard-links unchanged files from an earlier copy and sends only the changed one', async () => {
    const first = path.join(root, 'run1');
    await rsyncTo(null, [proj], first);
    await writeFile(path.join(proj, 'train.py'), 'print("changed")\n');
    const second = path.join(root, 'run2');
    const r = await rsyncTo(null, [proj], second, { linkDest: first });
    expect(r.files).toEqual(['train.py']);
    const kept = [await stat(path.join(first, 'sub', 'kept.txt')), await stat(path.join(second, 'sub', 'kept.txt'))];
    expect(kept[1]!.ino).toBe(kept[0]!.ino);
    expect((await stat(path.join(second, 'train.py'))).ino).not.toBe((await stat(path.join(first, 'train.py'))).ino);
    expect(await readFile(path.join(first, 'train.py'), 'utf8')).toBe('print(1)\n');
  });

  test("onProgress receives rsync's overall progress, ending at the bytes sent", async () => {
    await writeFile(path.join(proj, 'big.bin'), Buffer.alloc(3 * 1024 * 1024, 7));
    const seen: RsyncProgress[] = [];
    await rsyncTo(null, [proj], path.join(root, 'dest'), { onProgress: (p) => seen.push(p) });
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.at(-1)!.bytes).toBeGreaterThanOrEqual(3 * 1024 * 1024);
    expect(seen.at(-1)!.percent).toBe(100);
  });
});
