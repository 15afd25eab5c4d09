// @ts-check
/**
 * Small statistics for noisy machines: medians and spreads, never means, and ratios taken per
 * interleaved pair so both sides of a pair saw the same background load.
 */

/** @typedef {{ median: number, min: number, max: number, q1: number, q3: number, n: number, samples: number[] }} Stat */

/** Linear-interpolated quantile of sorted values (q in 0..1). */
function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** @param {number[]} samples @returns {Stat} */
export function summarize(samples) {
  const values = samples.filter((v) => Number.isFinite(v));
  const sorted = [...values].sort((a, b) => a - b);
  return {
    median: quantile(sorted, 0.5),
    min: sorted[0] ?? NaN,
    max: sorted.at(-1) ?? NaN,
    q1: quantile(sorted, 0.25),
    q3: quantile(sorted, 0.75),
    n: sorted.length,
    samples: values,
  };
}

/** Percentile (0..100) of unsorted values. */
export function percentile(values, p) {
  return quantile(
    [...values].sort((a, b) => a - b),
    p / 100,
  );
}

/**
 * a[i] − b[i] for each pair of samples taken in the same window.
 * @param {number[]} a
 * @param {number[]} b
 * @returns {number[]}
 */
export function pairDiffs(a, b) {
  return a.map((v, i) => v - (b[i] ?? NaN));
}

/** a[i] / b[i] for each interleaved pair. */
export function pairRatios(a, b) {
  const n = Math.min(a.length, b.length);
  return Array.from({ length: n }, (_, i) => a[i] / b[i]);
}

/**
 * Runs `a` and `b` alternately (A, B, A, B, ...) `runs` times each, so slow phases of a shared
 * machine hit both sides. Stops early (after at least one pair) when `deadline` (ms since epoch) is
 * near or the signal aborts. Each function returns the sample (a number or an object).
 *
 * @template A, B
 * @param {{ runs: number, a: (i: number) => Promise<A>, b: (i: number) => Promise<B>, signal?: AbortSignal, deadline?: number, log?: (s: string) => void }} options
 * @returns {Promise<{ a: A[], b: B[] }>}
 */
export async function interleaved({ runs, a, b, signal, deadline = Infinity, log }) {
  /** @type {{ a: A[], b: B[] }} */
  const out = { a: [], b: [] };
  let pairMs = 0;
  for (let i = 0; i < runs; i++) {
    signal?.throwIfAborted();
    if (i > 0 && Date.now() + pairMs > deadline) {
      log?.(`time budget reached: stopping after ${i} pairs`);
      break;
    }
    const t0 = Date.now();
    out.a.push(await a(i));
    signal?.throwIfAborted();
    out.b.push(await b(i));
    pairMs = Math.max(pairMs, Date.now() - t0);
  }
  return out;
}
