// @ts-check
import { pairRatios, summarize } from './stats.mjs';

/**
 * The benchmark contract. A benchmark is one file `bench/<name>.mjs` whose default export is
 * `defineBenchmark({ name, row, title, target, method, run })`; `bench/run.mjs` finds it by itself.
 *
 * `target` maps each measure key that `run(ctx)` returns to its goal; a measure without a target is
 * reported for information only.
 *
 * @typedef {import('./stats.mjs').Stat} Stat
 * @typedef {{ on: 'figure' | 'ratio', op: '<=' | '>=', value: number, text: string }} Target
 * @typedef {{
 *   key: string,
 *   label: string,
 *   unit: string,
 *   figure: Stat,
 *   baseline?: { label: string, stat: Stat },
 *   ratio?: Stat,
 *   note?: string,
 * }} Measure
 * @typedef {{ measures: Measure[], notes?: string[] }} BenchResult
 * @typedef {{
 *   name: string,
 *   row?: string,
 *   order?: number,
 *   title: string,
 *   target: Record<string, Target>,
 *   method: string,
 *   timeoutMs?: number,
 *   budgetMs?: number,
 *   run: (ctx: ReturnType<typeof import('./context.mjs').createContext>) => Promise<BenchResult>,
 * }} Benchmark
 */

/** @param {Benchmark} benchmark @returns {Benchmark} */
export function defineBenchmark(benchmark) {
  for (const key of ['name', 'title', 'target', 'method', 'run']) {
    if (benchmark[key] === undefined) throw new Error(`benchmark ${benchmark.name ?? '?'} lacks "${key}"`);
  }
  if (!/^[a-z0-9-]+$/.test(benchmark.name)) throw new Error(`benchmark name "${benchmark.name}" must be kebab-case`);
  return benchmark;
}

/** Goals, on the measured figure itself or on its ratio to the baseline measured in the same run. */
export const target = {
  /** figure ≤ value @param {number} value @param {string} [unit] @returns {Target} */
  atMost: (value, unit = '') => ({ on: 'figure', op: '<=', value, text: `≤ ${value}${unit ? ` ${unit}` : ''}` }),
  /** figure ≥ value @param {number} value @param {string} [unit] @returns {Target} */
  atLeast: (value, unit = '') => ({ on: 'figure', op: '>=', value, text: `≥ ${value}${unit ? ` ${unit}` : ''}` }),
  /** figure / baseline ≤ value @param {number} value @returns {Target} */
  ratioAtMost: (value) => ({ on: 'ratio', op: '<=', value, text: `≤ ${value}× baseline` }),
  /** figure / baseline ≥ value @param {number} value @returns {Target} */
  ratioAtLeast: (value) => ({ on: 'ratio', op: '>=', value, text: `≥ ${value}× baseline` }),
};

/**
 * A measure from samples: `figure` and `baseline` are arrays of numbers (interleaved pairs when the
 * lengths match, so the ratio is taken per pair; otherwise median over median).
 *
 * @param {{
 *   key: string,
 *   label: string,
 *   unit: string,
 *   figure: number[],
 *   baseline?: number[],
 *   baselineLabel?: string,
 *   note?: string,
 * }} spec
 * @returns {Measure}
 */
export function measure({ key, label, unit, figure, baseline, baselineLabel, note }) {
  const f = summarize(figure);
  /** @type {Measure} */
  const m = { key, label, unit, figure: f };
  if (baseline) {
    const b = summarize(baseline);
    m.baseline = { label: baselineLabel ?? 'baseline', stat: b };
    // Per pair when the runs were interleaved; a zero baseline (idle CPU of a bare node) has no ratio.
    if (baseline.length === figure.length && figure.length > 1 && baseline.every((v) => v > 0))
      m.ratio = summarize(pairRatios(figure, baseline));
    else if (b.median > 0) m.ratio = summarize([f.median / b.median]);
  }
  if (note) m.note = note;
  return m;
}
