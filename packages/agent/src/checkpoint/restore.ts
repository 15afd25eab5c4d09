/**
 * Restores a run's latest committed checkpoint set into a folder before the job starts. Every file
 * is re-hashed as it is downloaded: a store may not verify checksums (moto does not), so our own
 * SHA-256 against the manifest is what proves the bytes are the ones the job wrote.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { checkpointKeys, downloadVerified, parseManifest, SpotctlError, type CheckpointManifest, type ManifestFile } from '@spotctl/shared';
import { ContentMismatchError } from './hashing.ts';
import { describeError, isRetryableError, retryWithBackoff, silentLogger, type CheckpointLogger } from './retry.ts';
import type { ObjectStore } from './store.ts';

export interface RestoreOptions {
  store: ObjectStore;
  /** The run whose latest set is restored. */
  runId: string;
  /** Key prefix under the store's root (the store already carries the target's prefix). @default '' */
  prefix?: string;
  /** Folder the files go into; created when missing. Files of the set replace files of the same name. */
  dir: string;
  signal?: AbortSignal;
  /** Files downloaded at the same time. @default 4 */
  concurrency?: number;
  /** How long a download keeps being retried through connection failures. @default 120000 */
  retryForMs?: number;
  logger?: CheckpointLogger;
  /** Called after each file is in place, with the running totals. @default none */
  onProgress?: (progress: RestoreProgress) => void;
}

export interface RestoreProgress {
  bytes: number;
  totalBytes: number;
  files: number;
  totalFiles: number;
}

/** Sets smaller than this restore in a moment: no progress lines for them. */
export const RESTORE_PROGRESS_MIN_BYTES = 64 * 1024 * 1024;

/**
 * Which quarter (25, 50, 75) a restore just passed, for a progress line, or undefined when it
 * passed none since `lastPercent` (or the set is small, or it is complete: the result line says that).
 */
export function restoreMilestone(progress: RestoreProgress, lastPercent: number): number | undefined {
  if (progress.totalBytes < RESTORE_PROGRESS_MIN_BYTES || progress.bytes >= progress.totalBytes) return undefined;
  const quarter = Math.floor((progress.bytes / progress.totalBytes) * 4) * 25;
  return quarter > lastPercent && quarter > 0 ? quarter : undefined;
}

export interface RestoreResult {
  seq: number;
  files: number;
  bytes: number;
  durationMs: number;
}

/** Manifests are small; anything bigger than this is not one of ours. */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

/**
 * A checkpoint object does not match its manifest.
 */
export class CheckpointIntegrityError extends SpotctlError {
  readonly file: string;

  constructor(message: string, file: string, cause?: unknown) {
    super('SPOTCTL_CHECKPOINT_CORRUPT', message, { cause, remediation: 'Restore an older set, or start the run without restoring.' });
    this.name = 'CheckpointIntegrityError';
    this.file = file;
  }
}

/** A manifest path that stays inside `dir` once joined, or undefined. */
export function safeJoin(dir: string, rel: string): string | undefined {
  if (rel === '' || rel.includes('\\') || rel.includes('\0') || path.posix.isAbsolute(rel)) return undefined;
  const parts = rel.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return undefined;
  return path.join(dir, ...parts);
}

async function readText(stream: AsyncIterable<Buffer | string>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    size += buf.length;
    if (size > limit) throw new Error(`larger than ${limit} bytes`);
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The highest committed seq of a run, or undefined when it has none. */
export async function latestSeq(store: ObjectStore, prefix: string, runId: string, signal?: AbortSignal): Promise<number | undefined> {
  const keys = await store.list(checkpointKeys.manifestsPrefix(prefix, runId), { signal });
  let max: number | undefined;
  for (const key of keys) {
    const seq = checkpointKeys.seqOf(key);
    if (seq !== undefined && (max === undefined || seq > max)) max = seq;
  }
  return max;
}

/** Reads and validates one manifest. */
export async function readManifest(
  store: ObjectStore,
  prefix: string,
  runId: string,
  seq: number,
  signal?: AbortSignal,
): Promise<CheckpointManifest> {
  const key = checkpointKeys.manifest(prefix, runId, seq);
  const text = await readText(await store.get(key, { signal }), MAX_MANIFEST_BYTES);
  const parsed = parseManifest(text);
  if (!parsed.ok) throw new CheckpointIntegrityError(`checkpoint manifest ${key} is invalid: ${parsed.error}`, key);
  if (parsed.value.seq !== seq || parsed.value.runId !== runId) {
    throw new CheckpointIntegrityError(`checkpoint manifest ${key} names run ${parsed.value.runId} set ${parsed.value.seq}`, key);
  }
  return parsed.value;
}

async function downloadFile(options: {
  store: ObjectStore;
  key: string;
  file: ManifestFile;
  dest: string;
  signal: AbortSignal | undefined;
}): Promise<void> {
  const { store, key, file, dest, signal } = options;
  await downloadVerified({
    source: () => store.get(key, { signal }),
    dest,
    expected: file,
    what: `checkpoint file ${file.path}`,
    // A dot name in the same folder: renamed atomically, and ignored by the checkpoint watcher.
    tempSuffix: 'restore.tmp',
    // Keep the job's mtimes: a job that compares them sees its files as it left them.
    mtimeMs: file.mtimeMs,
    signal,
  });
}

/**
 * Downloads the highest-seq set of `runId` into `dir`, verifying every file's SHA-256. Resolves
 * undefined when the run has no committed set; rejects (naming the file) on a checksum mismatch.
 */
export async function restoreLatest(options: RestoreOptions): Promise<RestoreResult | undefined> {
  const { store, runId, dir, signal } = options;
  const prefix = options.prefix ?? '';
  const logger = options.logger ?? silentLogger;
  const startedAt = Date.now();
  const seq = await latestSeq(store, prefix, runId, signal);
  if (seq === undefined) {
    logger.info({ runId, store: store.location }, 'no checkpoint set to restore');
    return undefined;
  }
  const manifest = await readManifest(store, prefix, runId, seq, signal);
  const targets = manifest.files.map((file) => {
    const dest = safeJoin(dir, file.path);
    if (!dest)
      throw new CheckpointIntegrityError(
        `checkpoint set ${seq} of run ${runId} has an unsafe path: ${JSON.stringify(file.path)}`,
        file.path,
      );
    return { file, dest };
  });
  await mkdir(dir, { recursive: true });
  const totals = { bytes: 0, totalBytes: manifest.files.reduce((sum, f) => sum + f.size, 0), files: 0, totalFiles: manifest.files.length };
  const queue = [...targets];
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const { file, dest } = next;
      const key = checkpointKeys.object(prefix, runId, file.sha256);
      try {
        await retryWithBackoff(() => downloadFile({ store, key, file, dest, signal }), {
          what: `download of ${file.path}`,
          signal,
          retryForMs: options.retryForMs ?? 120_000,
          logger,
          isRetryable: (err) => !(err instanceof ContentMismatchError) && isRetryableError(err),
        });
        totals.bytes += file.size;
        totals.files++;
        options.onProgress?.({ ...totals });
      } catch (err) {
        queue.length = 0;
        if (err instanceof ContentMismatchError) {
          throw new CheckpointIntegrityError(
            `checkpoint file ${file.path} (set ${seq} of run ${runId}, object ${key}) is corrupt: ${err.message}`,
            file.path,
            err,
          );
        }
        throw new SpotctlError('SPOTCTL_INTERNAL', `restoring checkpoint file ${file.path} failed: ${describeError(err)}`, { cause: err });
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.max(1, options.concurrency ?? 4) }, worker));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  const result: RestoreResult = {
    seq,
    files: manifest.files.length,
    bytes: manifest.files.reduce((sum, f) => sum + f.size, 0),
    durationMs: Date.now() - startedAt,
  };
  logger.info({ runId, ...result, store: store.location }, 'checkpoint restored');
  return result;
}
