// @ts-check
/** Issue 5 row 7 (startup): `spotctl --help` wall time through the real executable. */
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { buildAll } from '../scripts/build.mjs';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { REPO, REPO_AGENT, REPO_CLI_BUNDLE } from './lib/context.mjs';
import { expectOk, runCommand } from './lib/proc.mjs';
import { interleaved } from './lib/stats.mjs';

const RUNS = 15;

function newestSourceMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSourceMtime(p));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/** The bin's own freshness rule: it rebuilds when any package source is newer than a bundle. */
function bundlesStale() {
  const sources = ['shared', 'agent', 'controller'].map((p) => path.join(REPO, 'packages', p, 'src')).filter(existsSync);
  const oldestBundle = Math.min(...[REPO_CLI_BUNDLE, REPO_AGENT].map((f) => (existsSync(f) ? statSync(f).mtimeMs : 0)));
  return Math.max(...sources.map(newestSourceMtime)) > oldestBundle;
}

export default defineBenchmark({
  name: 'cli-help',
  row: '5.7',
  title: '`spotctl --help` wall time',
  target: {
    // A ratio to the same-run `node -e 0`: absolute milliseconds flip with the machine and its load.
    help: target.ratioAtMost(1.6),
  },
  timeoutMs: 120_000,
  budgetMs: 60_000,
  method: `
Wall time from spawn to exit of \`node packages/controller/bin/spotctl.mjs --help\` — the real executable in the checkout,
which first checks that its bundles are newer than every source file and then imports
\`packages/controller/dist/spotctl.mjs\`. The bundles are rebuilt (outside the timing) whenever a source is newer, so no
sample includes a rebuild (a sample during which a bundle changed anyway is taken again). Baseline: \`node -e 0\`,
interleaved (${RUNS} each, after one warm-up of each). Target: at most 1.6× \`node -e 0\` (the median of the per-pair
ratios); it replaces an absolute 150 ms, which passed or failed with the machine's load rather than with spotctl.

**How it got under the target.** It missed at 1.78× (quiet) to 2.12× (loaded): a CPU profile put about 30 % in
compiling the CLI's main chunk, 855 kB that held TypeBox (the protocol schemas) and \`ws\`, neither of which \`--help\`
uses. Now \`--help\` loads commander and a small command registry only (name, arguments, description per command); a
command's file is imported when it is the one run or asked about, and \`@spotctl/shared\` is \`sideEffects: false\` so
its error classes come without TypeBox. What \`--help\` compiles went from 897 kB to 137 kB (test/cli-startup.test.ts
checks the entry closure with esbuild's metafile): 1.41–1.44× across runs, one of them during a full test suite.`,
  async run(ctx) {
    let retakes = 0;
    const help = async () => {
      for (let attempt = 0; ; attempt++) {
        if (bundlesStale()) await buildAll({ quiet: true });
        const before = statSync(REPO_CLI_BUNDLE).mtimeMs;
        const r = await runCommand(process.execPath, [ctx.repoBin, '--help'], { signal: ctx.signal });
        const rebuilt = statSync(REPO_CLI_BUNDLE).mtimeMs !== before;
        if (rebuilt && attempt < 3) {
          // Someone rebuilt the bundles (or their chunks) under this sample: take it again.
          retakes += 1;
          continue;
        }
        expectOk(r, 'spotctl --help');
        if (!/Usage: spotctl/.test(r.stdout)) throw new Error(`spotctl --help printed no usage: ${r.stdout.slice(0, 300)}`);
        return r.ms;
      }
    };
    const bare = async () => expectOk(await runCommand(process.execPath, ['-e', '0'], { signal: ctx.signal }), 'node -e 0').ms;
    await help();
    await bare();
    const { a, b } = await interleaved({ runs: RUNS, a: help, b: bare, signal: ctx.signal, deadline: ctx.deadline, log: ctx.log });
    ctx.log(`--help ${a.map((v) => v.toFixed(0)).join(' ')} ms; node -e 0 ${b.map((v) => v.toFixed(0)).join(' ')} ms`);
    return {
      measures: [
        measure({
          key: 'help',
          label: '`spotctl --help` (bin → dist bundle)',
          unit: 'ms',
          figure: a,
          baseline: b,
          baselineLabel: '`node -e 0`',
          ...(retakes ? { note: `${retakes} samples retaken: a bundle was rebuilt while they ran.` } : {}),
        }),
      ],
    };
  },
});
