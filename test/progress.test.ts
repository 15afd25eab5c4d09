/**
 * Step progress as users see it: one redrawn stderr line in a real pseudo-terminal (util-linux
 * `script`), nothing extra when stderr is a pipe, `step-progress` events with --json.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SPOTCTL_BIN, runSpotctl } from './helpers/cli.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

const run = promisify(execFile);
const CLEAR = '\r\u001b[2K';

/** Runs spotctl with stdin, stdout and stderr on a pseudo-terminal; returns what the terminal got. */
async function inTerminal(args: string[], env: Record<string, string>): Promise<string> {
  const command = [process.execPath, SPOTCTL_BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const r = await run('script', ['-qfec', command, '/dev/null'], {
    env: { ...process.env, TERM: 'xterm', ...env },
    timeout: 120_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  return r.stdout;
}

describe('step progress', () => {
  let home: TmpDir;
  let proj: TmpDir;
  beforeAll(async () => {
    home = await tmpDir();
    proj = await tmpDir();
    writeProject(proj.path, { 'hi.py': 'print("hi")\n', 'requirements.txt': '# none\n' });
    writeFileSync(path.join(proj.path, 'data.bin'), Buffer.alloc(4 * 1024 * 1024, 1));
  });
  afterAll(async () => {
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
  });

  it("on a TTY: a redrawn line per step (sync, dependency install), cleared before the step's result", async () => {
    const screen = await inTerminal(['run', '--provider', 'local', '--sync', proj.path, 'hi.py'], {
      SPOTCTL_HOME: home.path,
      NO_COLOR: '',
    });
    expect(screen).toMatch(/\r\n?hi\r?\n/);
    // The line is drawn, redrawn in place (\r + erase line), in colour, and erased before the ✓.
    expect(screen).toContain(`${CLEAR}\u001b[36m`);
    expect(screen).toMatch(/(syncing|copying) the project/);
    expect(screen).toMatch(/installing Python dependencies \(\d+ ms\)|pip install -r requirements\.txt \(new venv [0-9a-f]{16}\)/);
    expect(screen).toMatch(new RegExp(`${CLEAR.replace(/[[\]\\]/g, '\\$&')}\\u001b\\[32m✓\\u001b\\[0m installed Python dependencies`));
    // pip's own chatter goes into the line, not onto the screen as lines of its own.
    expect(screen).not.toMatch(/\nLooking in/);
  });

  it('NO_COLOR: the same line without colour codes', async () => {
    const screen = await inTerminal(['run', '--provider', 'local', '--no-install', '--sync', proj.path, 'hi.py'], {
      SPOTCTL_HOME: home.path,
      NO_COLOR: '1',
    });
    expect(screen).toMatch(/\r\u001b\[2K. (syncing|copying) the project/);
    expect(screen).not.toMatch(/\u001b\[3\dm/);
  });

  it('not on a TTY: no progress lines; --json: step-progress events for the steps', async () => {
    const piped = await runSpotctl(['run', '--provider', 'local', '--no-install', '--sync', proj.path, 'hi.py'], {
      home: home.path,
      timeoutMs: 120_000,
    });
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stderr).not.toContain('\u001b[2K');
    expect(piped.stderr).not.toMatch(/copying the project/);
    expect(piped.stderr).toMatch(/✓ copied/);

    const json = await runSpotctl(['run', '--provider', 'local', '--sync', proj.path, '--json', 'hi.py'], {
      home: home.path,
      timeoutMs: 120_000,
    });
    expect(json.code, json.stderr).toBe(0);
    const events = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; step?: string; message?: string; elapsedMs?: number });
    const progress = events.filter((e) => e.type === 'step-progress');
    expect(progress.filter((e) => e.step === 'sync').length).toBeGreaterThan(0);
    expect(progress.filter((e) => e.step === 'deps').length).toBeGreaterThan(0);
    expect(progress.every((e) => Number.isInteger(e.elapsedMs) && typeof e.message === 'string')).toBe(true);
    // Each step's progress comes before its finished step event.
    const syncDone = events.findIndex((e) => e.type === 'step' && e.step === 'sync');
    expect(events.findIndex((e) => e.type === 'step-progress' && e.step === 'sync')).toBeLessThan(syncDone);
  });
});
