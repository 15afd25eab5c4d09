import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { matchOutputs } from './outputs.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

it('matches like sh, one segment at a time; a directory brings its tree; dotfiles only for a dot pattern', async () => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'spotctl-outputs-'));
  dirs.push(work);
  mkdirSync(path.join(work, 'res', 'deep'), { recursive: true });
  for (const f of ['res/a.csv', 'res/b.txt', 'res/.hidden.csv', 'res/deep/c.csv', 'm1.pt', 'm2.pt', 'm3.pt', 'x+y.pt'])
    writeFileSync(path.join(work, f), f);
  expect(await matchOutputs(work, ['res/*.csv'])).toEqual(['res/a.csv']);
  expect(await matchOutputs(work, ['res/.*.csv'])).toEqual(['res/.hidden.csv']);
  expect(await matchOutputs(work, ['m[12].pt', 'm[!12].pt'])).toEqual(['m1.pt', 'm2.pt', 'm3.pt']);
  expect(await matchOutputs(work, ['x+y.pt', 'm?.pt'])).toEqual(['m1.pt', 'm2.pt', 'm3.pt', 'x+y.pt']);
  expect(await matchOutputs(work, ['res/deep', 'nothing/*', 'res/*/c.csv'])).toEqual(['res/deep/c.csv']);
});
