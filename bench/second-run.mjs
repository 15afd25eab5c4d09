/**
 * Issue 11 (no waste): a repeated `spotctl run --host` of the same project on the same host (the
 * previous workdir as --link-dest, the venv cached by the hash of requirements.txt) against a first
 * run of it there.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { expectOk } from './lib/proc.mjs';
import { interleaved } from './lib/stats.mjs';

const RUNS = 3;

export default defineBenchmark({
  name: 'second-run',
  row: '11.2',
  title: 'Second `spotctl run --host` of a 50 MB project with a requirements.txt vs its first run there',
  target: {
    second: target.ratioAtMost(0.3),
  },
  timeoutMs: 420_000,
  budgetMs: 300_000,
  method: `
Wall time of \`spotctl run --host … --sync <dir> -- true\` on the loopback sshd, from spawn to exit, for a project of 50 MB
(50 files of 1 MiB random data, incompressible) plus a \`requirements.txt\` with no packages (the venv is still built:
\`python3 -m venv\` + pip). Figure: the run repeated under a remote dir that already holds an earlier run of the project
(its workdir becomes \`--link-dest\`, its venv is reused). Baseline: the first run of the project under a fresh
\`--remote-dir\` (agent install, full upload, venv build). Runs alternate (${RUNS} each).`,
  async run(ctx) {
    const sshd = await ctx.sshd();
    const project = path.join(ctx.tmp, 'project');
    mkdirSync(path.join(project, 'data'), { recursive: true });
    for (let i = 0; i < 50; i++) writeFileSync(path.join(project, 'data', `blob${i}.bin`), randomBytes(1024 * 1024));
    writeFileSync(path.join(project, 'requirements.txt'), '# no packages: the venv is still built\n');
    writeFileSync(path.join(project, 'main.py'), 'print("ok")\n');
    const warm = ctx.remoteDir('warm');
    const spot = async (remoteDir) =>
      expectOk(
        await ctx.spotctl(['run', ...ctx.hostArgs(sshd, remoteDir), '--sync', project, '--', 'true'], { timeoutMs: 180_000 }),
        'spotctl run -- true',
      ).ms;
    await spot(warm);
    const { a, b } = await interleaved({
      runs: RUNS,
      a: () => spot(warm),
      b: () => spot(ctx.remoteDir('first')),
      signal: ctx.signal,
      deadline: ctx.deadline,
      log: ctx.log,
    });
    ctx.log(`second ${a.map((v) => v.toFixed(0)).join(' ')} ms; first ${b.map((v) => v.toFixed(0)).join(' ')} ms`);
    return {
      measures: [
        measure({
          key: 'second',
          label: 'repeated run on the same host (link-dest, cached venv)',
          unit: 'ms',
          figure: a,
          baseline: b,
          baselineLabel: 'first run of the project on the host',
        }),
      ],
    };
  },
});
