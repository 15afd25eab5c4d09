/**
 * Issue 11's "also broken" parts, end to end with the real CLI and agent bundles (local provider):
 * `attach` + Ctrl-C detaches and leaves the job running; `--max-runtime` says so in text mode.
 */
import { describe, expect, it } from 'vitest';
import { runSpotctl, watchSpotctl } from './helpers/cli.ts';
import { waitFor } from './helpers/read-until.ts';
import { tmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

const TICKS = 'import time\nfor i in range(1, 100000):\n    print(f"tick {i}", flush=True)\n    time.sleep(0.05)\n';

describe('attach and max runtime', () => {
  it('Ctrl-C in attach detaches, says how to stop the job, and the job keeps running', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'slow.py': TICKS });
    const d = await runSpotctl(['run', '--detach', '--no-install', '--sync', proj.path, 'slow.py'], { home: home.path });
    expect(d.code, d.stderr).toBe(0);
    try {
      const attach = watchSpotctl(['attach', 'last'], { home: home.path, timeoutMs: 60_000 });
      await attach.until('stdout', /tick \d+\n/, 20_000);
      attach.child.kill('SIGINT');
      const a = await attach.done;
      expect(a.code, a.stderr).toBe(0);
      expect(a.stderr).toMatch(/detached; the job keeps running/);
      expect(a.stderr).toMatch(/spotctl stop \S+/);
      expect(a.stderr).not.toMatch(/stopping the job/);
      const lastTick = Math.max(
        ...a.stdout
          .split('\n')
          .filter((l) => l.startsWith('tick '))
          .map((l) => Number(l.slice(5))),
      );
      // Still running: ps says so, and the log keeps growing past what attach saw.
      const ps = JSON.parse((await runSpotctl(['ps', '--json'], { home: home.path })).stdout) as { state: string }[];
      expect(ps[0]?.state).toBe('running');
      await waitFor(
        async () => {
          const logs = await runSpotctl(['logs', 'last', '--from', String(lastTick + 5)], { home: home.path });
          return /tick \d+/.test(logs.stdout);
        },
        { timeoutMs: 20_000, what: `tick ${lastTick + 5} in the log after detaching` },
      );
    } finally {
      await runSpotctl(['stop', 'last', '--force'], { home: home.path });
    }
  });

  it('a job stopped by --max-runtime says so in text mode', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    const r = await runSpotctl(
      ['run', '--no-install', '--idle-timeout', '1s', '--max-runtime', '2s', '--grace', '2s', '--sync', proj.path, '--', 'sleep', '60'],
      { home: home.path, timeoutMs: 60_000 },
    );
    expect(r.code).toBe(128 + 15);
    expect(r.stderr).toMatch(/spotctl: max runtime 2s reached: stopping the job/);
    expect(r.stderr).toMatch(/job stopped after max runtime 2s \(killed by SIGTERM\)/);
  });
});
