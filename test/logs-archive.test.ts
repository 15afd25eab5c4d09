/**
 * Logs outlive the host, end to end: a real sshd on loopback, the real agent bundle installed over
 * SSH, its log archived to a directory checkpoint target; then the host goes away (sshd stopped)
 * and `spotctl logs` reads the archive, the copy this machine kept, or says plainly that neither exists.
 * (The S3 archive of a terminated aws instance is covered in aws-run.test.ts.)
 */
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { sshHostArgs, startSshd, type Sshd } from './helpers/sshd.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { NUMBERED, checkSequence, numberedLines, writeProject } from './fixtures.ts';

describe('spotctl logs after the host is gone (loopback sshd)', () => {
  let sshd: Sshd;
  let home: TmpDir;
  let proj: TmpDir;
  let remoteDir = '';
  const sshArgs = () => ['--remote-dir', remoteDir, ...sshHostArgs(sshd)];
  const lastRunId = () => readdirSync(path.join(home.path, 'runs')).sort().at(-1) as string;
  const copyOf = (runId: string) => path.join(home.path, 'runs', runId, 'streamed.records');

  beforeAll(async () => {
    sshd = await startSshd();
    home = await tmpDir();
    remoteDir = `${home.path}/remote`;
    proj = await tmpDir();
    writeProject(proj.path, { 'gen.py': NUMBERED });
  });
  beforeEach(async () => {
    await sshd.start().catch(() => undefined);
  });
  afterAll(async () => {
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
    await sshd?.close();
  });

  it('reads the archive on a directory target once the host is unreachable, and says what may be missing', async () => {
    const store = `${home.path}/archive`;
    const r = await runSpotctl(
      ['run', ...sshArgs(), '--no-install', '--checkpoint-to', store, '--sync', proj.path, '--', 'gen.py', '5000'],
      { home: home.path, timeoutMs: 120_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const runId = lastRunId();
    expect(readdirSync(path.join(store, runId, 'log')).length).toBeGreaterThan(0);
    // Only the archive can answer: the host is down and this machine's copy is gone.
    rmSync(copyOf(runId));
    await sshd.stop();
    const logs = await runSpotctl(['logs', runId], { home: home.path, timeoutMs: 60_000 });
    expect(logs.code, logs.stderr).toBe(0);
    expect(checkSequence(numberedLines(logs.stdout), 5000)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
    expect(logs.stderr).toMatch(
      /cannot be reached.*printed its log from the archive at .*At most the last few seconds of output may be missing/s,
    );
    // -f on a finished run prints and exits, the same way.
    const follow = await runSpotctl(['logs', runId, '-f', '--from', '4990'], { home: home.path, timeoutMs: 60_000 });
    expect(follow.code, follow.stderr).toBe(0);
    // seq counts the stderr lines too, interleaved as the job wrote them: only the tail is printed.
    const tail = numberedLines(follow.stdout);
    expect(tail.length).toBeGreaterThan(0);
    expect(tail.length).toBeLessThanOrEqual(16);
    expect(tail).toEqual(Array.from({ length: tail.length }, (_, i) => 5001 - tail.length + i));
  });

  it('without an archive, uses the copy of every line this machine received while following the run', async () => {
    const r = await runSpotctl(['run', ...sshArgs(), '--no-install', '--sync', proj.path, '--', 'gen.py', '3000'], {
      home: home.path,
      timeoutMs: 120_000,
    });
    expect(r.code, r.stderr).toBe(0);
    const runId = lastRunId();
    expect(existsSync(copyOf(runId))).toBe(true);
    await sshd.stop();
    const logs = await runSpotctl(['logs', runId], { home: home.path, timeoutMs: 60_000 });
    expect(logs.code, logs.stderr).toBe(0);
    expect(checkSequence(numberedLines(logs.stdout), 3000)).toEqual({ lost: 0, duplicated: 0, outOfOrder: 0 });
    expect(logs.stderr).toMatch(/printed the copy of its log this machine kept/);
  });

  it('with neither archive nor copy, says so plainly and how to keep logs next time', async () => {
    const r = await runSpotctl(['run', ...sshArgs(), '--no-install', '--sync', proj.path, '--', 'gen.py', '10'], {
      home: home.path,
      timeoutMs: 120_000,
    });
    expect(r.code, r.stderr).toBe(0);
    const runId = lastRunId();
    rmSync(copyOf(runId));
    await sshd.stop();
    const logs = await runSpotctl(['logs', runId], { home: home.path, timeoutMs: 60_000 });
    expect(logs.code).not.toBe(0);
    expect(logs.stderr).toMatch(/cannot be reached.*and its log was not archived/);
    expect(logs.stderr).toMatch(/--checkpoint-to s3:\/\/BUCKET\/PREFIX/);
    expect(logs.stderr).not.toMatch(/this looks like a bug|\n\s+at /);
  });
});
