import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { applyProjectFile } from './project-file.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-pf-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A command whose options are declared like run's, parsed from `argv` as commander would. */
function command(argv: string[]): Command {
  const cmd = new Command('x')
    .exitOverride()
    .option('--profile <name>')
    .option('--level <n>', 'a number the option parses itself', (v: string) => {
      if (!/^\d+$/.test(v)) throw new InvalidArgumentError('not a whole number');
      return Number(v);
    })
    .option('--tag <t>', 'repeatable', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--mode <m>', 'a choice');
  cmd.parse(argv, { from: 'user' });
  return cmd;
}

describe('applyProjectFile', () => {
  it("runs the option's own parser on file values and names file and line when it refuses one", () => {
    writeFileSync(path.join(dir, 'spotctl.toml'), 'tag = ["a", "b"]\n\nlevel = "high"\n');
    expect(() => applyProjectFile(command([]), dir)).toThrow(/spotctl\.toml:3: level: not a whole number$/);
    writeFileSync(path.join(dir, 'spotctl.toml'), 'tag = ["a", "b"]\nlevel = 3\n');
    const cmd = command([]);
    applyProjectFile(cmd, dir);
    expect(cmd.opts()).toEqual({ tag: ['a', 'b'], level: 3 });
    expect(cmd.getOptionValueSource('level')).toBe('config');
  });

  it('leaves typed flags alone and lets a profile override the top level', () => {
    writeFileSync(path.join(dir, 'spotctl.toml'), 'level = 1\nmode = "a"\n[profile.p]\nmode = "b"\n');
    const cmd = command(['--level', '9', '--profile', 'p']);
    const applied = applyProjectFile(cmd, dir);
    expect(cmd.opts()).toMatchObject({ level: 9, mode: 'b' });
    expect(applied?.origins.get('mode')?.where).toMatch(/spotctl\.toml:4 \[profile\.p\]$/);
    expect(applied?.origins.has('level')).toBe(false);
  });
});
