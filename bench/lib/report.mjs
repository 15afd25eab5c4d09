// @ts-check
/** Judges measures against their targets and renders BENCHMARKS.md. */

/** Human number: 3 significant digits, no exponent. */
export function fmt(value) {
  if (value === undefined || value === null || Number.isNaN(value)) return '—';
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs === 0) return '0';
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}

/** "38.2 MB/s (36.1–40.0, n=3)" */
export function fmtStat(stat, unit) {
  if (!stat || stat.n === 0) return '—';
  const u = unit ? ` ${unit}` : '';
  if (stat.n === 1) return `${fmt(stat.median)}${u} (n=1)`;
  return `${fmt(stat.median)}${u} (${fmt(stat.min)}–${fmt(stat.max)}, n=${stat.n})`;
}

/**
 * @param {import('./define.mjs').Measure} m
 * @param {import('./define.mjs').Target | undefined} t
 * @returns {{ verdict: 'pass' | 'miss' | 'info', detail: string }}
 */
export function judge(m, t) {
  if (!t) return { verdict: 'info', detail: 'info' };
  const value = t.on === 'ratio' ? m.ratio?.median : m.figure.median;
  if (value === undefined || Number.isNaN(value)) return { verdict: 'miss', detail: 'miss (no figure)' };
  // The tolerance only absorbs floating-point noise (0.35 - 0.31 ≠ 0.04), never measurement error.
  const eps = Math.abs(t.value) * 1e-9;
  const ok = t.op === '<=' ? value <= t.value + eps : value >= t.value - eps;
  if (ok) return { verdict: 'pass', detail: 'pass' };
  let by;
  if (t.value === 0) by = `${fmt(value)} instead of 0`;
  else if (t.op === '<=') by = `${fmt((value / t.value - 1) * 100)} % over`;
  else by = `${fmt((1 - value / t.value) * 100)} % short`;
  return { verdict: 'miss', detail: `**miss** (${by})` };
}

function cell(text) {
  return String(text).replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function machineLine(id, m) {
  return `| ${id} | ${m.date} | ${m.cores} × ${cell(m.cpuModel)} | ${fmt(m.memoryGiB)} GiB | ${m.node} | ${cell(m.kernel)} | ${m.loadStart.map(fmt).join(' ')} → ${m.loadEnd ? m.loadEnd.map(fmt).join(' ') : '—'} | ${cell(m.commit)} |`;
}

/**
 * @param {{ runs: Record<string, any>, benchmarks: Record<string, any> }} store
 * @param {{ name: string, row?: string, title: string, method: string, target: Record<string, any> }[]} modules known benchmarks, in order
 * @param {string[]} pending descriptions of measures not implemented yet
 */
export function renderMarkdown(store, modules, pending) {
  const lines = [];
  lines.push('# Benchmarks', '');
  lines.push('Written by `pnpm bench` (`node bench/run.mjs`); do not edit by hand. One benchmark alone: the command in its row');
  lines.push("(it updates only that benchmark's rows). How to add one: [bench/README.md](bench/README.md).", '');
  lines.push('Every figure is a median over several runs, with its spread (min–max, n runs), measured **interleaved with its');
  lines.push('baseline in the same go** (A, B, A, B, …) on a shared, noisy machine. Compare ratios across machines, not absolute');
  lines.push('figures. The ratio is the median of the per-pair ratios (figure ÷ baseline).', '');
  lines.push('| Row | Measure | Figure | Baseline (same run) | Ratio | Target | Result | Run | Reproduce |');
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const usedRuns = new Set();
  for (const mod of modules) {
    const res = store.benchmarks[mod.name];
    const reproduce = `\`node bench/run.mjs ${mod.name}\``;
    if (!res) {
      lines.push(`| ${mod.row ?? ''} | ${cell(mod.title)} | not run yet | | | | | | ${reproduce} |`);
      continue;
    }
    usedRuns.add(res.runId);
    if (res.error) {
      lines.push(
        `| ${mod.row ?? ''} | ${cell(mod.title)} | **error**: ${cell(res.error.slice(0, 300))} | | | | **error** | ${res.runId} | ${reproduce} |`,
      );
      continue;
    }
    for (const m of res.measures) {
      const t = mod.target[m.key];
      const { detail } = judge(m, t);
      const base = m.baseline ? `${cell(m.baseline.label)}: ${fmtStat(m.baseline.stat, m.unit)}` : '—';
      const ratio = m.ratio ? `${fmt(m.ratio.median)}×${m.ratio.n > 1 ? ` (${fmt(m.ratio.min)}–${fmt(m.ratio.max)})` : ''}` : '—';
      lines.push(
        `| ${mod.row ?? ''} | ${cell(m.label)} | ${fmtStat(m.figure, m.unit)} | ${base} | ${ratio} | ${t ? cell(t.text) : '—'} | ${detail} | ${res.runId} | ${reproduce} |`,
      );
    }
  }
  lines.push('');
  if (pending.length) {
    lines.push('Not measured yet (issue 5): ' + pending.join('; ') + '.', '');
  }

  lines.push('## Machine', '');
  lines.push('| Run | Date (UTC) | CPU | Memory | Node | Kernel | Load avg 1/5/15 min, start → end | Commit |');
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const id of [...usedRuns].sort()) if (store.runs[id]) lines.push(machineLine(id, store.runs[id]));
  lines.push('');

  lines.push('## How each row is measured', '');
  for (const mod of modules) {
    const res = store.benchmarks[mod.name];
    lines.push(`### ${mod.row ? `${mod.row} · ` : ''}${mod.title} (\`${mod.name}\`)`, '');
    lines.push(mod.method.trim(), '');
    if (res?.notes?.length) {
      lines.push('Observed in the last run:', '');
      for (const n of res.notes) lines.push(`- ${n}`);
      lines.push('');
    }
    if (res?.measures) {
      const withNotes = res.measures.filter((m) => m.note);
      for (const m of withNotes) lines.push(`- ${m.label}: ${m.note}`);
      if (withNotes.length) lines.push('');
      if (res.durationMs) lines.push(`Took ${fmt(res.durationMs / 1000)} s.`, '');
    }
  }
  return `${lines
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trimEnd()}\n`;
}
