/**
 * Large files and outages against a real moto_server: a 200 MB file goes multipart and comes back
 * byte for byte; an S3 outage in the middle of an upload (connections reset and refused, then 503s)
 * delays the set but never produces a torn one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, renameSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { checkpointKeys, parseManifest, type CheckpointManifest } from '@spotctl/shared';
import { CheckpointSync, hashFile, restoreLatest, S3ObjectStore, type CheckpointCommittedEvent, type ObjectStore } from '@spotctl/agent';
import { startMoto, type Moto } from './helpers/moto.ts';
import { waitFor } from './helpers/read-until.ts';
import { tmpDir } from './helpers/tmp.ts';

const MIB = 1024 * 1024;

/** A full garbage collection on demand, without starting vitest with --expose-gc. */
function forcedGc(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

let moto: Moto;
let buckets = 0;

beforeAll(async () => {
  moto = await startMoto();
});
afterAll(async () => {
  await moto?.close();
});

/** Writes `bytes` of random data to a temp name and renames it into place; returns its sha256. */
async function writeRandomFile(file: string, bytes: number): Promise<string> {
  mkdirSync(path.dirname(file), { recursive: true });
  const hash = createHash('sha256');
  const out = createWriteStream(`${file}.tmp`);
  for (let left = bytes; left > 0;) {
    const chunk = randomBytes(Math.min(left, 4 * MIB));
    hash.update(chunk);
    left -= chunk.length;
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'close');
  renameSync(`${file}.tmp`, file);
  return hash.digest('hex');
}

async function readManifestOf(store: ObjectStore, runId: string, seq: number): Promise<CheckpointManifest> {
  const chunks: Buffer[] = [];
  for await (const c of await store.get(checkpointKeys.manifest('', runId, seq))) chunks.push(c as Buffer);
  const parsed = parseManifest(Buffer.concat(chunks).toString('utf8'));
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.value;
}

async function newBucket(): Promise<string> {
  const bucket = `ckpt-large-${++buckets}`;
  await moto.createBucket(bucket);
  return bucket;
}

test('a 200 MB file goes multipart and round-trips through restore with the same sha256', async () => {
  const bucket = await newBucket();
  await using work = await tmpDir();
  const dir = path.join(work.path, 'ckpt');
  const size = 200 * MIB;
  const sha = await writeRandomFile(path.join(dir, 'weights.bin'), size);
  const events: CheckpointCommittedEvent[] = [];
  const store = new S3ObjectStore({ bucket, prefix: 'ck', endpoint: moto.endpoint });
  try {
    const startedAt = Date.now();
    await using sync = await CheckpointSync.start({ runId: 'run-big', dir, store, settleMs: 200, onCommitted: (e) => events.push(e) });
    const event = await waitFor(() => events[0], { timeoutMs: 60_000, what: 'the 200 MB set' });
    const seconds = (Date.now() - startedAt) / 1000;
    console.log(
      `200 MiB to moto through CheckpointSync: ${seconds.toFixed(1)} s (${(size / MIB / seconds).toFixed(1)} MiB/s, hash included)`,
    );
    expect(event).toMatchObject({ seq: 1, files: 1, bytes: size, uploadedBytes: size });
    expect(sync.pendingBytes()).toBe(0);

    const head = await store.head(checkpointKeys.object('', 'run-big', sha));
    expect(head?.size).toBe(size);
    // A multipart ETag ends in -<parts>: 200 MiB in 8 MiB parts.
    expect(head?.etag).toMatch(/-25"?$/);

    const into = path.join(work.path, 'restored');
    const restoreStart = Date.now();
    const restored = await restoreLatest({ store, runId: 'run-big', dir: into });
    console.log(`restore of 200 MiB (download + sha256): ${((Date.now() - restoreStart) / 1000).toFixed(1)} s`);
    expect(restored).toMatchObject({ seq: 1, files: 1, bytes: size });
    expect(await hashFile(path.join(into, 'weights.bin'))).toEqual({ sha256: sha, size });
  } finally {
    store.close();
  }
});

test('an S3 outage mid-upload delays the set; no torn set is ever the latest', async () => {
  const bucket = await newBucket();
  await using work = await tmpDir();
  const dir = path.join(work.path, 'ckpt');
  const runId = 'run-outage';
  const events: CheckpointCommittedEvent[] = [];
  // The agent goes through the front door; the test looks at moto directly, also during the outage.
  const store = new S3ObjectStore({ bucket, prefix: 'ck', endpoint: moto.endpoint, retryForMs: 60_000, connectionTimeoutMs: 1000 });
  const direct = new S3ObjectStore({ bucket, prefix: 'ck', endpoint: moto.directEndpoint });
  const verified = new Set<number>();
  let polls = 0;
  let stopPolling = false;
  /** Every manifest that exists names objects that exist, with the right sizes. */
  const checkSets = async (): Promise<void> => {
    const keys = await direct.list(checkpointKeys.manifestsPrefix('', runId));
    for (const key of keys) {
      const seq = checkpointKeys.seqOf(key);
      if (seq === undefined || verified.has(seq)) continue;
      const m = await readManifestOf(direct, runId, seq);
      for (const f of m.files) {
        const head = await direct.head(checkpointKeys.object('', runId, f.sha256));
        if (head?.size !== f.size)
          throw new Error(`set ${seq} is torn: ${f.path} (${f.sha256}) is ${head ? `${head.size} bytes` : 'missing'}`);
      }
      verified.add(seq);
    }
    polls++;
  };
  const poller = (async () => {
    while (!stopPolling) {
      await checkSets();
      await sleep(20);
    }
  })();
  try {
    await using sync = await CheckpointSync.start({ runId, dir, store, settleMs: 200, onCommitted: (e) => events.push(e) });
    await writeRandomFile(path.join(dir, 'step.json'), 100);
    await waitFor(() => events[0], { timeoutMs: 20_000, what: 'set 1' });

    const size = 64 * MIB;
    const received = moto.bytesReceived();
    const sha = await writeRandomFile(path.join(dir, 'weights.bin'), size);
    // Cut S3 off once a quarter of the file has gone through.
    await waitFor(() => moto.bytesReceived() - received > size / 4, { timeoutMs: 30_000, intervalMs: 5, what: 'the upload to get going' });
    await moto.stop('refuse');
    const outageAt = Date.now();
    const pollsBefore = polls;
    await sleep(2500);
    await moto.stop('503');
    await sleep(1000);
    // At least one check ran wholly inside the outage (the first may have begun before it). How
    // many fit in 3.5 s depends on the machine's load, not on the code under test.
    expect(polls - pollsBefore).toBeGreaterThanOrEqual(2);
    // No set with the new file could have been committed while S3 was unreachable.
    expect(events.every((e) => e.files === 1)).toBe(true);
    expect(sync.pendingBytes()).toBe(size);
    await moto.start();
    const endedAt = Date.now();
    console.log(`outage: ${endedAt - outageAt} ms (refused, then 503)`);

    const event = await waitFor(() => events.find((e) => e.files === 2), { timeoutMs: 60_000, what: 'the set with the large file' });
    console.log(`set ${event.seq} committed ${Date.now() - endedAt} ms after the outage ended`);
    expect(sync.pendingBytes()).toBe(0);
    const into = path.join(work.path, 'restored');
    const restored = await restoreLatest({ store: direct, runId, dir: into });
    expect(restored?.seq).toBe(event.seq);
    expect(await hashFile(path.join(into, 'weights.bin'))).toEqual({ sha256: sha, size });
  } finally {
    stopPolling = true;
    await poller;
    await moto.start();
    store.close();
    direct.close();
  }
  await checkSets();
  expect(verified.size).toBeGreaterThanOrEqual(2);
});

test('the final flush gives up at its deadline while S3 is down, without throwing', async () => {
  const bucket = await newBucket();
  await using work = await tmpDir();
  const dir = path.join(work.path, 'ckpt');
  const store = new S3ObjectStore({ bucket, prefix: 'ck', endpoint: moto.endpoint, connectionTimeoutMs: 1000 });
  try {
    await using sync = await CheckpointSync.start({ runId: 'run-deadline', dir, store, settleMs: 60_000 });
    await writeRandomFile(path.join(dir, 'state.bin'), 1000);
    await waitFor(() => sync.pendingBytes() === 1000, { what: 'the watcher to see state.bin' });
    await moto.stop('refuse');
    // The store would retry for 10 minutes (its default), far past the test's timeout: only the
    // flush's own deadline can end this call, so its returning at all shows the deadline fired.
    // Full GCs meanwhile: on Node 20 a deadline that only an AbortSignal.any() reaches can be
    // collected and never fire (this test timed out under load that way).
    const flushing = sync.flush('interruption', { deadlineAt: Date.now() + 3000 });
    let settled = false;
    void flushing.finally(() => (settled = true));
    const gc = forcedGc();
    for (let i = 0; i < 100 && !settled; i++) {
      gc();
      await sleep(50);
    }
    const result = await flushing;
    expect(result.committedSeq).toBeNull();
    expect(result.error).toMatch(/deadline/);
    expect(sync.pendingBytes()).toBe(1000);
  } finally {
    await moto.start();
    store.close();
  }
});

test('a final flush that starts during an outage keeps trying and commits once S3 is back', async () => {
  const bucket = await newBucket();
  await using work = await tmpDir();
  const dir = path.join(work.path, 'ckpt');
  // No retries below the flush: the SDK's budget and the store's own retry are spent at once, as
  // they are after a long outage. Only the flush's retry can bring the set home.
  const store = new S3ObjectStore({
    bucket,
    prefix: 'ck',
    endpoint: moto.endpoint,
    connectionTimeoutMs: 1000,
    maxAttempts: 1,
    retryForMs: 0,
  });
  try {
    await using sync = await CheckpointSync.start({ runId: 'run-outage-flush', dir, store, settleMs: 60_000 });
    await writeRandomFile(path.join(dir, 'state.bin'), 1000);
    await waitFor(() => sync.pendingBytes() === 1000, { what: 'the watcher to see state.bin' });
    await moto.stop('refuse');
    const flushing = sync.flush('interruption', { final: true, deadlineAt: Date.now() + 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await moto.start();
    const result = await flushing;
    expect(result.error).toBeNull();
    expect(result.committedSeq).toBe(1);
    expect(result.files).toBe(1);
    expect(sync.pendingBytes()).toBe(0);
  } finally {
    await moto.start();
    store.close();
  }
});
