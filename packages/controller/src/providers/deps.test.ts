/**
 * The dependency installer script, run for real with `sh` in a temporary project. uv itself
 * cannot be fetched here (no network in tests), so a stand-in `uv` on the PATH records how it was
 * called: the script's choice of installer is what is under test, not uv.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UV_MISSING, depsInstallScript } from './deps.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-deps-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function run(workdir: string, pathDirs: string[]) {
  return spawnSync('sh', ['-c', depsInstallScript(workdir)], {
    encoding: 'utf8',
    env: { ...process.env, PATH: [...pathDirs, process.env.PATH ?? ''].join(':') },
    timeout: 120_000,
  });
}

describe('depsInstallScript', () => {
  it('honours uv.lock with uv sync --frozen when uv is on the PATH', () => {
    const bin = path.join(dir, 'bin');
    const work = path.join(dir, 'work');
    mkdirSync(bin);
    mkdirSync(work);
    writeFileSync(path.join(bin, 'uv'), `#!/bin/sh\necho "$PWD $*" >> ${path.join(dir, 'uv-calls')}\n`);
    chmodSync(path.join(bin, 'uv'), 0o755);
    writeFileSync(path.join(work, 'pyproject.toml'), '[project]\nname = "x"\nversion = "0"\n');
    writeFileSync(path.join(work, 'uv.lock'), 'version = 1\n');
    writeFileSync(path.join(work, 'requirements.txt'), '\n');
    const r = run(work, [bin]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/uv sync --frozen \(uv\.lock\)/);
    expect(readFileSync(path.join(dir, 'uv-calls'), 'utf8')).toBe(`${work} sync --frozen\n`);
  });

  it('says so when a uv.lock cannot be honoured because the host has no uv', () => {
    const work = path.join(dir, 'work');
    mkdirSync(work);
    writeFileSync(path.join(work, 'uv.lock'), 'version = 1\n');
    writeFileSync(path.join(work, 'requirements.txt'), '\n');
    // A PATH without uv: only the directories of sh, python3 and the coreutils the script uses.
    const pathDirs = ['sh', 'python3', 'mkdir', 'cat'].map((cmd) =>
      path.dirname(spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim()),
    );
    const r = spawnSync('sh', ['-c', depsInstallScript(work)], {
      encoding: 'utf8',
      env: { ...process.env, PATH: [...new Set(pathDirs)].join(':') },
      timeout: 120_000,
    });
    expect(spawnSync('sh', ['-c', 'command -v uv'], { env: { PATH: [...new Set(pathDirs)].join(':') } }).status).not.toBe(0);
    expect(r.stderr).toContain(UV_MISSING);
    expect(r.status).toBe(0);
  });
});
