import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkPullPattern, pullFromWorkdir } from './workdir-files.ts';

describe('pullFromWorkdir (local rsync, real sh)', () => {
  const dirs: string[] = [];
  const tmp = (): string => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-pull-'));
    dirs.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('matches sh globs per segment, keeps relative paths, and runs nothing a file name or pattern says', async () => {
    const work = tmp();
    const out = tmp();
    mkdirSync(path.join(work, 'res', 'deep'), { recursive: true });
    const weird = "it's $(touch INJECTED) `touch INJECTED2`.csv";
    writeFileSync(path.join(work, 'res', 'a.csv'), 'a');
    writeFileSync(path.join(work, 'res', weird), 'w');
    writeFileSync(path.join(work, 'res', 'deep', 'b.csv'), 'b');
    writeFileSync(path.join(work, 'res', 'c.txt'), 'c');
    writeFileSync(path.join(work, 'm1.pt'), '1');
    writeFileSync(path.join(work, 'm2.pt'), '22');
    const result = await pullFromWorkdir(null, work, ['res/*.csv', 'm[12].pt', '$(touch INJECTED3)*', 'none/*'], out);
    expect(result.matched.sort()).toEqual(['m1.pt', 'm2.pt', 'res/a.csv', `res/${weird}`].sort());
    expect(result.missing).toEqual(['$(touch INJECTED3)*', 'none/*']);
    expect(result.files).toBe(4);
    expect(result.bytes).toBe(1 + 1 + 1 + 2);
    expect(readFileSync(path.join(out, 'res', weird), 'utf8')).toBe('w');
    expect(existsSync(path.join(out, 'res', 'c.txt'))).toBe(false);
    expect(existsSync(path.join(out, 'res', 'deep'))).toBe(false);
    for (const injected of ['INJECTED', 'INJECTED2', 'INJECTED3']) {
      expect(existsSync(path.join(work, injected))).toBe(false);
      expect(existsSync(path.join(process.cwd(), injected))).toBe(false);
    }
  });

  it('a directory comes whole, and a second pull of unchanged files still counts them', async () => {
    const work = tmp();
    const out = tmp();
    mkdirSync(path.join(work, 'res', 'deep'), { recursive: true });
    writeFileSync(path.join(work, 'res', 'deep', 'b.csv'), 'bb');
    writeFileSync(path.join(work, 'res', 'a.csv'), 'a');
    expect(await pullFromWorkdir(null, work, ['res'], out)).toMatchObject({ files: 2, bytes: 3, matched: ['res'], missing: [] });
    expect(await pullFromWorkdir(null, work, ['res'], out)).toMatchObject({ files: 2, bytes: 3 });
    expect(readFileSync(path.join(out, 'res', 'deep', 'b.csv'), 'utf8')).toBe('bb');
  });

  it('refuses paths outside the workdir', () => {
    expect(() => checkPullPattern('../x', '--pull')).toThrow(/must not leave the workdir/);
    expect(() => checkPullPattern('a/../../x', '--pull')).toThrow(/must not leave the workdir/);
    expect(() => checkPullPattern('/etc/passwd', '--pull')).toThrow(/must be relative/);
    expect(() => checkPullPattern('~/x', '--pull')).toThrow(/must be relative/);
    expect(() => checkPullPattern('', '--pull')).toThrow(/empty/);
    expect(() => checkPullPattern('results/*.csv', '--pull')).not.toThrow();
  });
});
