#!/usr/bin/env node
// @ts-check
/**
 * Runs spotctl's benchmarks and (re)writes BENCHMARKS.md.
 *
 *   node bench/run.mjs                    every benchmark (pnpm bench)
 *   node bench/run.mjs tail-throughput    only these (their rows are updated, the others kept)
 *   node bench/run.mjs --list             names, rows and targets
 *   node bench/run.mjs --strict           exit 1 when a target is missed (for CI)
 *   node bench/run.mjs --render           only rewrite BENCHMARKS.md from bench/results/latest.json
 *
 * Every `bench/*.mjs` file other than this one is a benchmark (see bench/README.md). The raw
 * figures of the latest run of each benchmark are kept in bench/results/latest.json; BENCHMARKS.md is
 * rendered from it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildAll } from '../scripts/build.mjs';
import { createContext, REPO, SharedSshd, snapshotBundles } from './lib/context.mjs';
import { judge, renderMarkdown, fmtStat } from './lib/report.mjs';

// Benchmarks talk to loopback only: an AWS SDK in this process (or a child that keeps this
// environment) must never fall back to the instance metadata service for credentials.
process.env.AWS_EC2_METADATA_DISABLED = 'true';

const BENCH_DIR = path.join(REPO, 'bench');
const RESULTS_FILE = path.join(BENCH_DIR, 'results', 'latest.json');
const MARKDOWN_FILE = path.join(REPO, 'BENCHMARKS.md');
/** A benchmark is killed after this long unless it says otherwise. */
const DEFAULT_TIMEOUT_MS = 240_000;

/**
 * Issue 5 rows that no benchmark file claims yet; listed under the table until one does.
 * @type {{ row: string, what: string }[]}
 */
const PLANNED = [];

function log(message) {
  process.stderr.write(`${message}\n`);
}
// Progress piped into `head` must not kill the run before it cleans up (sshd, agents, temp dirs).
process.stderr.on('error', () => undefined);
process.stdout.on('error', () => undefined);

async function loadBenchmarks() {
  const files = readdirSync(BENCH_DIR)
    .filter((f) => f.endsWith('.mjs') && f !== 'run.mjs')
    .sort();
  const modules = [];
  for (const file of files) {
    const mod = (await import(pathToFileURL(path.join(BENCH_DIR, file)).href)).default;
    if (!mod?.name || typeof mod.run !== 'function') throw new Error(`bench/${file} does not export a benchmark (use defineBenchmark)`);
    if (`${mod.name}.mjs` !== file) throw new Error(`bench/${file} exports the benchmark "${mod.name}"; name the file after it`);
    modules.push(mod);
  }
  const rowKey = (m) =>
    (m.row ?? '9.9')
      .split('.')
      .map((n) => n.padStart(3, '0'))
      .join('.');
  return modules.sort((a, b) => rowKey(a).localeCompare(rowKey(b)) || (a.order ?? 0) - (b.order ?? 0) || a.name.localeCompare(b.name));
}

function git(args) {
  try {
    return execFileSync('git', args, { cwd: REPO, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return '';
  }
}

function machine() {
  const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    cores: os.availableParallelism?.() ?? os.cpus().length,
    cpuModel: os.cpus()[0]?.model?.trim() ?? 'unknown',
    memoryGiB: os.totalmem() / 2 ** 30,
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    loadStart: os.loadavg(),
    /** @type {number[] | undefined} */
    loadEnd: undefined,
    commit: `${git(['rev-parse', '--short', 'HEAD']) || 'unknown'}${dirty ? ' (uncommitted changes)' : ''}`,
  };
}

function readStore() {
  if (!existsSync(RESULTS_FILE)) return { version: 1, runs: {}, benchmarks: {} };
  try {
    const store = JSON.parse(readFileSync(RESULTS_FILE, 'utf8'));
    if (store.version === 1) return store;
  } catch {
    // Unreadable: start over.
  }
  return { version: 1, runs: {}, benchmarks: {} };
}

function writeMarkdown(store, modules) {
  const claimed = new Set(modules.map((m) => m.row));
  const pending = PLANNED.filter((p) => !claimed.has(p.row)).map((p) => `row ${p.row.split('.')[1]} ${p.what}`);
  writeFileSync(MARKDOWN_FILE, renderMarkdown(store, modules, pending));
  log(`wrote ${path.relative(process.cwd(), MARKDOWN_FILE) || MARKDOWN_FILE} from ${path.relative(process.cwd(), RESULTS_FILE)}`);
}

function runIdNow() {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

async function main(argv) {
  const flags = new Set(argv.filter((a) => a.startsWith('--')));
  const names = argv.filter((a) => !a.startsWith('--'));
  const modules = await loadBenchmarks();

  if (flags.has('--list')) {
    for (const m of modules) {
      process.stdout.write(
        `${(m.row ?? '').padEnd(4)} ${m.name.padEnd(22)} ${m.title} — ${Object.values(m.target)
          .map((t) => t.text)
          .join(', ')}\n`,
      );
    }
    return 0;
  }
  if (flags.has('--render')) {
    writeMarkdown(readStore(), modules);
    return 0;
  }
  const unknown = names.filter((n) => !modules.some((m) => m.name === n));
  if (unknown.length) {
    log(`unknown benchmark(s): ${unknown.join(', ')}; known: ${modules.map((m) => m.name).join(', ')}`);
    return 2;
  }
  const selected = names.length ? modules.filter((m) => names.includes(m.name)) : modules;

  log('building the bundles (node scripts/build.mjs)…');
  await buildAll({ quiet: true });
  const snapshot = snapshotBundles();
  const sshd = new SharedSshd();
  const runId = runIdNow();
  const info = machine();
  const store = readStore();
  store.runs[runId] = info;

  const interrupt = new AbortController();
  let interrupted = 0;
  const onSignal = (sig) => {
    interrupted += 1;
    if (interrupted > 1) process.exit(130);
    log(`${sig}: stopping the current benchmark and cleaning up (again to force)…`);
    interrupt.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);

  let failed = false;
  let missed = false;
  try {
    for (const mod of selected) {
      if (interrupt.signal.aborted) break;
      const timeoutMs = mod.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      const started = Date.now();
      const signal = AbortSignal.any([interrupt.signal, AbortSignal.timeout(timeoutMs)]);
      const ctx = createContext({
        name: mod.name,
        signal,
        deadline: started + (mod.budgetMs ?? timeoutMs * 0.6),
        snapshot,
        sshd,
        log: (s) => log(`[${mod.name}] ${s}`),
      });
      log(`▶ ${mod.name}: ${mod.title}`);
      const entry = { name: mod.name, runId, startedAt: new Date(started).toISOString() };
      try {
        const result = await mod.run(ctx);
        entry.measures = result.measures;
        entry.notes = result.notes ?? [];
      } catch (e) {
        failed = true;
        const err = e instanceof Error ? e : new Error(String(e));
        entry.error = signal.aborted && !interrupt.signal.aborted ? `timed out after ${timeoutMs / 1000} s: ${err.message}` : err.message;
        log(`[${mod.name}] error: ${err.stack ?? err.message}`);
      } finally {
        await ctx.close();
      }
      entry.durationMs = Date.now() - started;
      if (interrupt.signal.aborted) break;
      store.benchmarks[mod.name] = entry;
      for (const m of entry.measures ?? []) {
        const { verdict, detail } = judge(m, mod.target[m.key]);
        if (verdict === 'miss') missed = true;
        const ratio = m.ratio ? `  ratio ${m.ratio.median.toFixed(3)}` : '';
        const base = m.baseline ? `  baseline ${fmtStat(m.baseline.stat, m.unit)}` : '';
        log(`  ${m.label}: ${fmtStat(m.figure, m.unit)}${base}${ratio}  → ${detail.replace(/\*/g, '')}`);
      }
      log(`  (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    }
  } finally {
    await sshd.close();
    snapshot.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
  }
  if (interrupted) return 130;

  info.loadEnd = os.loadavg();
  // Keep only runs still referenced by a benchmark result.
  const used = new Set(Object.values(store.benchmarks).map((b) => b.runId));
  for (const id of Object.keys(store.runs)) if (!used.has(id)) delete store.runs[id];
  for (const name of Object.keys(store.benchmarks)) if (!modules.some((m) => m.name === name)) delete store.benchmarks[name];
  writeFileSync(RESULTS_FILE, `${JSON.stringify(store, null, 1)}\n`);
  writeMarkdown(store, modules);
  if (failed) return 1;
  return missed && flags.has('--strict') ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
