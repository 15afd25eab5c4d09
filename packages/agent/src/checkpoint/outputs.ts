/**
 * `--pull` outputs of an interrupted run also go to the checkpoint target (`<run>/outputs/<path>`),
 * so what the job wrote outside its checkpoint folder outlives a reclaimed instance. Patterns are
 * matched here, one path segment at a time, with sh's rules (`*`, `?`, `[abc]`; a leading dot only
 * matches a pattern that starts with one), the same as the controller's `pull` on a live host.
 */
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';
import { checkpointKeys } from '@spotctl/shared';
import { hashFile } from './hashing.ts';
import type { ObjectStore } from './store.ts';

function segmentMatcher(segment: string): RegExp | undefined {
  if (!/[*?[]/.test(segment)) return undefined;
  let source = '';
  for (let i = 0; i < segment.length; i++) {
    const ch = segment[i]!;
    const bracket = ch === '[' ? /^\[(!?)([A-Za-z0-9_.-]+)\]/.exec(segment.slice(i)) : null;
    if (ch === '*') source += '[^/]*';
    else if (ch === '?') source += '[^/]';
    else if (bracket) {
      source += `[${bracket[1] ? '^' : ''}${bracket[2]!.replace(/[\\\]^-]/g, (c) => `\\${c}`)}]`;
      i += bracket[0].length - 1;
    } else source += ch.replace(/[.*+?^${}()|[\]\\/]/g, (c) => `\\${c}`);
  }
  return new RegExp(`^${source}$`);
}

/** Workdir-relative paths (files or directories) that `pattern` matches. */
async function matchPattern(workdir: string, pattern: string): Promise<string[]> {
  let current = [''];
  for (const segment of pattern.split('/').filter((s) => s !== '' && s !== '.')) {
    const matcher = segmentMatcher(segment);
    const next: string[] = [];
    for (const dir of current) {
      if (!matcher) {
        const rel = path.join(dir, segment);
        if (await lstat(path.join(workdir, rel)).catch(() => undefined)) next.push(rel);
        continue;
      }
      const entries = await readdir(path.join(workdir, dir)).catch(() => [] as string[]);
      for (const name of entries)
        if (matcher.test(name) && (!name.startsWith('.') || segment.startsWith('.'))) next.push(path.join(dir, name));
    }
    current = next;
  }
  return current.filter((rel) => rel !== '');
}

async function filesUnder(workdir: string, rel: string, into: Set<string>): Promise<void> {
  const st = await lstat(path.join(workdir, rel)).catch(() => undefined);
  if (st?.isFile()) into.add(rel);
  else if (st?.isDirectory())
    for (const name of await readdir(path.join(workdir, rel))) await filesUnder(workdir, path.join(rel, name), into);
}

/** Every regular file the patterns reach (a matched directory brings its whole tree). */
export async function matchOutputs(workdir: string, patterns: string[]): Promise<string[]> {
  const files = new Set<string>();
  for (const pattern of patterns) for (const rel of await matchPattern(workdir, pattern)) await filesUnder(workdir, rel, files);
  return [...files].sort();
}

export interface OutputsUploadResult {
  files: number;
  bytes: number;
  /** Paths that could not be uploaded, with why. */
  failed: { path: string; error: string }[];
}

/** Uploads the matched files one by one; a failure is recorded and the rest still go. */
export async function uploadOutputs(options: {
  store: ObjectStore;
  runId: string;
  workdir: string;
  patterns: string[];
  signal?: AbortSignal;
}): Promise<OutputsUploadResult> {
  const { store, runId, workdir, signal } = options;
  const result: OutputsUploadResult = { files: 0, bytes: 0, failed: [] };
  for (const rel of await matchOutputs(workdir, options.patterns)) {
    if (signal?.aborted) {
      result.failed.push({ path: rel, error: 'out of time' });
      continue;
    }
    try {
      const file = path.join(workdir, rel);
      const { sha256, size } = await hashFile(file, signal);
      await store.put(checkpointKeys.output('', runId, rel.split(path.sep).join('/')), file, { sha256, size, signal });
      result.files++;
      result.bytes += size;
    } catch (error) {
      result.failed.push({ path: rel, error: error instanceof Error ? error.message : String(error) });
    }
  }
  return result;
}
