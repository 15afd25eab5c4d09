/**
 * What a repeated run of the same project on the same host reuses from the runs before it: the
 * previous run's workdir as rsync's `--link-dest` (unchanged files are hard-linked, not sent).
 */
import path from 'node:path';
import { formatBytes } from '@spotctl/shared';
import type { Progress } from '../output/output.ts';
import type { RunRecord, RunStore } from '../runs/run-store.ts';
import type { RsyncProgress } from '../transport/rsync.ts';

function sameTarget(a: RunRecord, b: RunRecord): boolean {
  if (a.provider !== b.provider) return false;
  if (a.provider === 'local') return true;
  return a.target?.host === b.target?.host && a.target?.port === b.target?.port && a.target?.user === b.target?.user;
}

/**
 * The workdir of the newest earlier run of the same paths on the same host and base directory,
 * as this machine recorded it; the caller checks it still exists there. `runsBaseOf(r)` is where
 * run `r`'s folder must sit to share the new run's base directory (ssh: its --remote-dir).
 */
export function previousWorkdir(store: RunStore, record: RunRecord, runsBaseOf: (earlier: RunRecord) => string): string | undefined {
  const paths = JSON.stringify(record.syncPaths);
  // An aws run's instance is new: no earlier run left anything on it.
  if (record.provider === 'aws') return undefined;
  for (const r of store.list()) {
    if (r.runId === record.runId || !sameTarget(r, record)) continue;
    if (JSON.stringify(r.syncPaths) !== paths || !r.agent) continue;
    if (path.dirname(r.layout.runDir) !== runsBaseOf(r)) continue;
    return r.layout.workdir;
  }
  return undefined;
}

/** rsync's `--info=progress2` as a progress line: `syncing the project: 12 MiB, 40% at 3.1MB/s`. */
export function syncProgress(progress: Progress, what = 'syncing the project'): (p: RsyncProgress) => void {
  return (p) => progress.update(`${what}: ${formatBytes(p.bytes)}, ${p.percent}% at ${p.rate}`, { bytes: p.bytes, percent: p.percent });
}
