// @ts-check
/**
 * Issue 5 row 7 (overhead): one whole `spotctl run --host … -- true` against the same steps done by
 * hand with plain ssh and rsync.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { expectOk, runCommand } from './lib/proc.mjs';
import { interleaved } from './lib/stats.mjs';

const RUNS = 6;

export default defineBenchmark({
  name: 'run-overhead',
  row: '5.7',
  order: 1,
  title: 'Whole `spotctl run --host -- true` vs ssh + rsync + ssh by hand',
  target: {
    run: target.ratioAtMost(1.2),
  },
  timeoutMs: 180_000,
  budgetMs: 110_000,
  method: `
Wall time of \`spotctl run --host … --no-install --sync <dir> -- true\` (a small project: 20 files, 40 kB) on the loopback
sshd, from spawn to exit (exit code 0), with the agent already installed on the host by a warm-up run. Baseline, by hand
with the same ssh options and key: \`ssh host mkdir -p DIR\` (connect), \`rsync -a -e "ssh …" <dir>/ host:DIR/\`,
\`ssh host "cd DIR && true"\` — three plain connections, each into a fresh DIR as spotctl uses a fresh run dir. Runs alternate
(${RUNS} each). Info: the same \`spotctl run\` without \`--no-install\` (the default dependency step, nothing to install), run
right after each pair.`,
  async run(ctx) {
    const sshd = await ctx.sshd();
    const project = path.join(ctx.tmp, 'project');
    for (let i = 0; i < 20; i++) {
      mkdirSync(path.join(project, `pkg${i % 4}`), { recursive: true });
      writeFileSync(path.join(project, `pkg${i % 4}`, `file${i}.py`), `# file ${i}\n${'x = 1\n'.repeat(340)}`);
    }
    const remoteDir = ctx.remoteDir();
    const manualDir = path.join(ctx.tmp, 'manual');
    const ssh = ctx.plainSshArgs(sshd);
    const rsyncShell = ['ssh', ...ssh].join(' ');
    const spot = async (extra = ['--no-install']) =>
      expectOk(
        await ctx.spotctl(['run', ...ctx.hostArgs(sshd, remoteDir), ...extra, '--sync', project, '--', 'true'], { timeoutMs: 60_000 }),
        'spotctl run -- true',
      ).ms;
    let n = 0;
    const byHand = async () => {
      const dir = path.join(manualDir, String(n++));
      const t0 = performance.now();
      expectOk(await runCommand('ssh', [...ssh, sshd.host, `mkdir -p ${dir}`], { signal: ctx.signal, timeoutMs: 30_000 }), 'ssh mkdir');
      expectOk(
        await runCommand('rsync', ['-a', '-e', rsyncShell, `${project}/`, `${sshd.host}:${dir}/`], {
          signal: ctx.signal,
          timeoutMs: 30_000,
        }),
        'rsync',
      );
      expectOk(await runCommand('ssh', [...ssh, sshd.host, `cd ${dir} && true`], { signal: ctx.signal, timeoutMs: 30_000 }), 'ssh true');
      return performance.now() - t0;
    };
    await spot();
    await byHand();
    const withInstall = [];
    const { a, b } = await interleaved({
      runs: RUNS,
      a: () => spot(),
      b: async () => {
        const ms = await byHand();
        withInstall.push(await spot([]));
        return ms;
      },
      signal: ctx.signal,
      deadline: ctx.deadline,
      log: ctx.log,
    });
    ctx.log(
      `spotctl ${a.map((v) => v.toFixed(0)).join(' ')} ms; by hand ${b.map((v) => v.toFixed(0)).join(' ')} ms; default (deps step) ${withInstall.map((v) => v.toFixed(0)).join(' ')} ms`,
    );
    return {
      measures: [
        measure({
          key: 'run',
          label: 'whole `spotctl run --host --no-install -- true`',
          unit: 'ms',
          figure: a,
          baseline: b,
          baselineLabel: 'ssh mkdir + rsync + ssh true',
        }),
        measure({
          key: 'run-default',
          label: 'same without `--no-install` (info)',
          unit: 'ms',
          figure: withInstall,
          baseline: b,
          baselineLabel: 'ssh mkdir + rsync + ssh true',
        }),
      ],
    };
  },
});
