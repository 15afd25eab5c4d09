/**
 * Regression for temp files left behind by failed downloads: the agent's restore, its directory
 * store's `put` and the controller's `checkpoints pull` all go through the shared verified-download
 * module. Many corrupt downloads in a row must leave no `*.tmp` anywhere.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect, test } from 'vitest';
import { ContentMismatchError, checkpointKeys, type CheckpointManifest } from '@spotctl/shared';
import { DirObjectStore, restoreLatest } from '@spotctl/agent';
import { pullCheckpointSet } from '@spotctl/controller';
import { tmpDir } from './helpers/tmp.ts';

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

const ROUNDS = 60;

async function tempFilesUnder(dir: string): Promise<string[]> {
  const names = await readdir(dir, { recursive: true });
  return names.map(String).filter((n) => n.endsWith('.tmp'));
}

test('corrupt restores, pulls and directory puts leave no temp file behind', async () => {
  await using work = await tmpDir();
  const root = path.join(work.path, 'target');
  const store = new DirObjectStore({ root });
  const runId = 'run-corrupt';
  // Three files whose objects are then replaced: other bytes of the same size, fewer bytes, more
  // bytes (the last fails while bytes still flow, the first two only at the end).
  const files = ['same-size.bin', 'short.bin', 'long.bin'].map((name) => ({ name, data: randomBytes(20_000) }));
  const manifest: CheckpointManifest = {
    version: 1,
    runId,
    seq: 1,
    createdAt: Date.now(),
    reason: 'test',
    files: files.map((f) => ({ path: f.name, size: f.data.length, sha256: sha256(f.data), mtimeMs: Date.now() })),
  };
  const body = Buffer.from(JSON.stringify(manifest));
  await store.put(checkpointKeys.manifest('', runId, 1), body, { sha256: sha256(body), size: body.length });
  const corrupt = [randomBytes(20_000), randomBytes(100), randomBytes(40_000)];
  for (const [i, f] of files.entries()) {
    const objectFile = path.join(root, checkpointKeys.object('', runId, sha256(f.data)));
    await mkdir(path.dirname(objectFile), { recursive: true });
    await writeFile(objectFile, corrupt[i] as Buffer);
  }

  const restoreDir = path.join(work.path, 'restored');
  const pullDir = path.join(work.path, 'pulled');
  for (let round = 0; round < ROUNDS; round++) {
    await expect(restoreLatest({ store, runId, dir: restoreDir, retryForMs: 0 })).rejects.toThrow(/is corrupt/);
    await expect(pullCheckpointSet({ kind: 'dir', path: root }, runId, 'latest', pullDir)).rejects.toThrow(/is corrupt/);
    const wrong = randomBytes(5000);
    await expect(store.put(`scratch/${round}`, wrong, { sha256: sha256('other'), size: wrong.length })).rejects.toBeInstanceOf(
      ContentMismatchError,
    );
  }
  expect(await tempFilesUnder(work.path)).toEqual([]);
  expect((await readdir(restoreDir)).filter((n) => n.endsWith('.bin'))).toEqual([]);
  expect((await readdir(pullDir)).filter((n) => n.endsWith('.bin'))).toEqual([]);
});
