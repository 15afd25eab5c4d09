/**
 * The CLI's view of a run's checkpoints: list the committed sets, pull one into a folder. Every
 * pulled file is re-hashed against its manifest; a store may not verify checksums (moto does not).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import createDebug from 'debug';
import {
  checkpointKeys,
  ContentMismatchError,
  downloadVerified,
  parseManifest,
  SpotctlError,
  UserError,
  type CheckpointManifest,
  type CheckpointTarget,
} from '@spotctl/shared';
import { mapLimit } from '../util/map-limit.ts';
import { openCheckpointReader, type CheckpointReader } from './reader.ts';

const debug = createDebug('spotctl:checkpoints');

/** Manifests are small; anything bigger is not one of ours. */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

export interface CheckpointSetSummary {
  seq: number;
  createdAt: number;
  reason: string;
  files: number;
  bytes: number;
}

export interface PullResult extends CheckpointSetSummary {
  destDir: string;
  durationMs: number;
}

export interface CheckpointReadOptions {
  signal?: AbortSignal;
  /** Manifests or files read at the same time. @default 4 */
  concurrency?: number;
}

function summary(m: CheckpointManifest): CheckpointSetSummary {
  return { seq: m.seq, createdAt: m.createdAt, reason: m.reason, files: m.files.length, bytes: m.files.reduce((s, f) => s + f.size, 0) };
}

async function readManifest(reader: CheckpointReader, runId: string, seq: number, signal?: AbortSignal): Promise<CheckpointManifest> {
  const key = checkpointKeys.manifest('', runId, seq);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of await reader.get(key, signal)) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += buf.length;
    if (size > MAX_MANIFEST_BYTES)
      throw new SpotctlError('SPOTCTL_PROTOCOL', `checkpoint manifest ${key} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    chunks.push(buf);
  }
  const parsed = parseManifest(Buffer.concat(chunks).toString('utf8'));
  if (!parsed.ok) throw new SpotctlError('SPOTCTL_PROTOCOL', `checkpoint manifest ${reader.location}${key} is invalid: ${parsed.error}`);
  if (parsed.value.seq !== seq || parsed.value.runId !== runId) {
    throw new SpotctlError(
      'SPOTCTL_PROTOCOL',
      `checkpoint manifest ${reader.location}${key} names run ${parsed.value.runId} set ${parsed.value.seq}`,
    );
  }
  return parsed.value;
}

async function committedSeqs(reader: CheckpointReader, runId: string, signal?: AbortSignal): Promise<number[]> {
  const keys = await reader.list(checkpointKeys.manifestsPrefix('', runId), signal);
  return keys
    .map((k) => checkpointKeys.seqOf(k))
    .filter((s): s is number => s !== undefined)
    .sort((a, b) => a - b);
}

/** Every committed set of a run, oldest first. A run without checkpoints gives []. */
export async function listCheckpointSets(
  target: CheckpointTarget,
  runId: string,
  options: CheckpointReadOptions = {},
): Promise<CheckpointSetSummary[]> {
  const reader = await openCheckpointReader(target);
  try {
    const seqs = await committedSeqs(reader, runId, options.signal);
    debug('run %s: %d sets in %s', runId, seqs.length, reader.location);
    const manifests = await mapLimit(seqs, options.concurrency ?? 4, (seq) => readManifest(reader, runId, seq, options.signal));
    return manifests.map(summary);
  } finally {
    reader.close();
  }
}

/** A manifest path that stays inside `dir` once joined, or undefined. */
function safeJoin(dir: string, rel: string): string | undefined {
  if (rel === '' || rel.includes('\\') || rel.includes('\0') || path.posix.isAbsolute(rel)) return undefined;
  const parts = rel.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return undefined;
  return path.join(dir, ...parts);
}

/**
 * Downloads a committed set (a seq, or 'latest') into `destDir`, verifying every file's SHA-256.
 * Files are written under temp names and renamed, so a failed pull leaves no half file; files of
 * the set replace files of the same name.
 */
export async function pullCheckpointSet(
  target: CheckpointTarget,
  runId: string,
  which: number | 'latest',
  destDir: string,
  options: CheckpointReadOptions = {},
): Promise<PullResult> {
  const startedAt = Date.now();
  const { signal } = options;
  const reader = await openCheckpointReader(target);
  try {
    const seqs = await committedSeqs(reader, runId, signal);
    const seq = which === 'latest' ? seqs.at(-1) : seqs.includes(which) ? which : undefined;
    if (seq === undefined) {
      const known = seqs.length ? `sets ${seqs[0]}..${seqs.at(-1)} exist` : 'it has no committed set';
      throw new UserError('SPOTCTL_CHECKPOINT_NOT_FOUND', `no checkpoint set ${which} for run ${runId} in ${reader.location}: ${known}`, {
        remediation: `see the committed sets with: spotctl checkpoints ls ${runId}`,
      });
    }
    const manifest = await readManifest(reader, runId, seq, signal);
    const dest = path.resolve(destDir);
    const jobs = manifest.files.map((file) => {
      const to = safeJoin(dest, file.path);
      if (!to)
        throw new SpotctlError(
          'SPOTCTL_PROTOCOL',
          `checkpoint set ${seq} of run ${runId} has an unsafe path: ${JSON.stringify(file.path)}`,
        );
      return { file, to };
    });
    await mkdir(dest, { recursive: true });
    await mapLimit(jobs, options.concurrency ?? 4, async ({ file, to }) => {
      try {
        await downloadVerified({
          source: () => reader.get(checkpointKeys.object('', runId, file.sha256), signal),
          dest: to,
          expected: file,
          what: `checkpoint file ${file.path}`,
          tempSuffix: 'pull.tmp',
          mtimeMs: file.mtimeMs,
          signal,
        });
      } catch (err) {
        if (!(err instanceof ContentMismatchError)) throw err;
        throw new UserError('SPOTCTL_CHECKPOINT_CORRUPT', `checkpoint file ${file.path} is corrupt: ${err.detail}`, {
          cause: err,
          remediation: 'pull an older set with --seq N (see: spotctl checkpoints ls RUN)',
        });
      }
    });
    debug('pulled set %d of run %s into %s', seq, runId, dest);
    return { ...summary(manifest), destDir: dest, durationMs: Date.now() - startedAt };
  } finally {
    reader.close();
  }
}
