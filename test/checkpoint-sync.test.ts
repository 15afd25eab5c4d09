/**
 * Checkpoint sync end to end, against a real moto_server (over real sockets) and against a
 * directory target: real files, a real watcher, real uploads. Then restore, and the controller's
 * read side on what the agent wrote.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { checkpointKeys, parseManifest, type CheckpointManifest, type CheckpointTarget } from '@spotctl/shared';
import {
  CheckpointSync,
  createObjectStore,
  DirObjectStore,
  restoreLatest,
  S3ObjectStore,
  type CheckpointCommittedEvent,
  type ObjectStore,
} from '@spotctl/agent';
import { listCheckpointSets, pullCheckpointSet } from '@spotctl/controller';
import { startMoto, type Moto } from './helpers/moto.ts';
import { waitFor } from './helpers/read-until.ts';
import { tmpDir } from './helpers/tmp.ts';

const SETTLE_MS = 200;

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

/** How jobs should write: a temp name, then rename into place. */
function writeAtomic(file: string, data: Buffer | string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, data);
  renameSync(`${file}.tmp`, file);
}

function commitsOf(): {
  events: CheckpointCommittedEvent[];
  onCommitted: (e: CheckpointCommittedEvent) => void;
  next: (seq: number) => Promise<CheckpointCommittedEvent>;
} {
  const events: CheckpointCommittedEvent[] = [];
  return {
    events,
    onCommitted: (e) => events.push(e),
    next: (seq) => waitFor(() => events.find((e) => e.seq === seq), { timeoutMs: 20_000, what: `checkpoint set ${seq}` }),
  };
}

async function readManifestOf(store: ObjectStore, runId: string, seq: number): Promise<CheckpointManifest> {
  const chunks: Buffer[] = [];
  for await (const c of await store.get(checkpointKeys.manifest('', runId, seq))) chunks.push(c as Buffer);
  const parsed = parseManifest(Buffer.concat(chunks).toString('utf8'));
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.value;
}

async function manifestSeqs(store: ObjectStore, runId: string): Promise<number[]> {
  const keys = await store.list(checkpointKeys.manifestsPrefix('', runId));
  return keys
    .map((k) => checkpointKeys.seqOf(k))
    .filter((s): s is number => s !== undefined)
    .sort((a, b) => a - b);
}

/** What a target needs in these tests: how the agent and the controller see it, and how a test inspects it. */
interface TargetFixture {
  target: CheckpointTarget;
  /** The store the agent uses. */
  store: ObjectStore;
  /** The same target, for the test to look at and tamper with. */
  inspect: ObjectStore;
  /** Object PUTs (by key) while `fn` runs, when the backend can tell; undefined otherwise. */
  recordPuts?: (fn: () => Promise<void>) => Promise<string[]>;
}

let moto: Moto;
let bucketCount = 0;

beforeAll(async () => {
  moto = await startMoto();
});
afterAll(async () => {
  await moto?.close();
});

const targets: Array<[string, () => Promise<TargetFixture & AsyncDisposable>]> = [
  [
    's3',
    async () => {
      const bucket = `ckpt-sync-${++bucketCount}`;
      await moto.createBucket(bucket);
      const target: CheckpointTarget = { kind: 's3', bucket, prefix: 'team/checkpoints', endpoint: moto.endpoint };
      const store = createObjectStore(target);
      const inspect = new S3ObjectStore({ bucket, prefix: 'team/checkpoints', endpoint: moto.directEndpoint });
      return {
        target,
        store,
        inspect,
        async recordPuts(fn) {
          await moto.startRecording();
          await fn();
          const requests = await moto.stopRecording();
          return requests.filter((r) => r.method === 'PUT').map((r) => decodeURIComponent(r.path.split('?')[0] as string));
        },
        async [Symbol.asyncDispose]() {
          store.close();
          inspect.close();
        },
      };
    },
  ],
  [
    'dir',
    async () => {
      const root = await tmpDir('spotctl-ckpt-target-');
      const target: CheckpointTarget = { kind: 'dir', path: root.path };
      return {
        target,
        store: createObjectStore(target),
        inspect: new DirObjectStore({ root: root.path }),
        async [Symbol.asyncDispose]() {
          await root[Symbol.asyncDispose]();
        },
      };
    },
  ],
];

describe.each(targets)('checkpoint sync to %s', (kind, makeTarget) => {
  test('uploads new files, then only what changed; the manifest comes after its objects', async () => {
    await using fx = await makeTarget();
    await using work = await tmpDir();
    const dir = path.join(work.path, 'ckpt');
    const runId = `run-changes-${kind}`;
    // Files already there when the job starts count too.
    const a = randomBytes(300_000);
    const b1 = randomBytes(20_000);
    writeAtomic(path.join(dir, 'a.bin'), a);
    writeAtomic(path.join(dir, 'nested/b.bin'), b1);
    writeFileSync(path.join(dir, 'ignored.partial'), 'half');
    writeFileSync(path.join(dir, '.hidden'), 'x');
    const commits = commitsOf();
    {
      await using sync = await CheckpointSync.start({ runId, dir, store: fx.store, settleMs: SETTLE_MS, onCommitted: commits.onCommitted });
      const first = await commits.next(1);
      expect(first).toMatchObject({
        seq: 1,
        files: 2,
        bytes: a.length + b1.length,
        uploadedBytes: a.length + b1.length,
        reason: 'settled',
      });
      expect(sync.pendingBytes()).toBe(0);

      const b2 = randomBytes(25_000);
      const c = Buffer.from('step 2\n');
      const puts = await (fx.recordPuts ?? (async (fn: () => Promise<void>) => (await fn(), undefined)))(async () => {
        writeAtomic(path.join(dir, 'nested/b.bin'), b2);
        writeAtomic(path.join(dir, 'c.txt'), c);
        await commits.next(2);
      });
      const second = commits.events.find((e) => e.seq === 2);
      expect(second).toMatchObject({ files: 3, bytes: a.length + b2.length + c.length, uploadedBytes: b2.length + c.length });
      if (puts) {
        // Exactly the two new contents, then the manifest, last.
        const prefix = `/${(fx.target as { bucket: string }).bucket}/team/checkpoints/${runId}`;
        expect(puts).toEqual([
          expect.stringMatching(new RegExp(`^${prefix}/objects/[0-9a-f]{64}$`)),
          expect.stringMatching(new RegExp(`^${prefix}/objects/[0-9a-f]{64}$`)),
          `${prefix}/manifests/0000000002.json`,
        ]);
        expect(new Set(puts.slice(0, 2))).toEqual(new Set([`${prefix}/objects/${sha256(b2)}`, `${prefix}/objects/${sha256(c)}`]));
      }
      const manifest = await readManifestOf(fx.inspect, runId, 2);
      expect(manifest.files.map((f) => [f.path, f.size, f.sha256])).toEqual([
        ['a.bin', a.length, sha256(a)],
        ['c.txt', c.length, sha256(c)],
        ['nested/b.bin', b2.length, sha256(b2)],
      ]);
      // Every object the manifest names exists with its size.
      for (const f of manifest.files)
        expect(await fx.inspect.head(checkpointKeys.object('', runId, f.sha256))).toMatchObject({ size: f.size });

      // A deleted file leaves the next set.
      await import('node:fs/promises').then((fs) => fs.unlink(path.join(dir, 'c.txt')));
      const third = await commits.next(3);
      expect(third).toMatchObject({ files: 2, uploadedBytes: 0 });
    }

    // A restarted agent (same run) finds the objects in the store and sends nothing again.
    const before = await fx.inspect.list(checkpointKeys.runPrefix('', runId) + 'objects/');
    const objectTimes = await Promise.all(
      before.map(async (k) => (kind === 'dir' ? (await stat(path.join((fx.target as { path: string }).path, k))).mtimeMs : 0)),
    );
    const restartCommits = commitsOf();
    const puts = await (fx.recordPuts ?? (async (fn: () => Promise<void>) => (await fn(), undefined)))(async () => {
      await using sync = await CheckpointSync.start({
        runId,
        dir,
        store: fx.store,
        settleMs: SETTLE_MS,
        onCommitted: restartCommits.onCommitted,
      });
      const result = await sync.flush('exit');
      expect(result).toMatchObject({ committedSeq: 4, files: 2, uploadedBytes: 0, error: null });
    });
    if (puts) expect(puts.filter((p) => p.includes('/objects/'))).toEqual([]);
    if (kind === 'dir') {
      const after = await Promise.all(before.map(async (k) => (await stat(path.join((fx.target as { path: string }).path, k))).mtimeMs));
      expect(after).toEqual(objectTimes);
    }
    expect(await manifestSeqs(fx.inspect, runId)).toEqual([1, 2, 3, 4]);
  });

  test('a file still being written at the final flush is not committed half-written', async () => {
    await using fx = await makeTarget();
    await using work = await tmpDir();
    const dir = path.join(work.path, 'ckpt');
    const runId = `run-half-${kind}`;
    const v1 = randomBytes(200_000);
    writeAtomic(path.join(dir, 'state.bin'), v1);
    const commits = commitsOf();
    await using sync = await CheckpointSync.start({ runId, dir, store: fx.store, settleMs: SETTLE_MS, onCommitted: commits.onCommitted });
    await commits.next(1);

    // A writer that appends in place (no temp + rename) every 20 ms, to the committed file and to a
    // new one: neither ever settles. Bounded: it stops by itself after 15 s.
    const writer = spawn(
      'python3',
      [
        '-c',
        "import sys,time\nfs=[open(p,'ab') for p in sys.argv[1:]]\nfor _ in range(750):\n  for f in fs:\n    f.write(b'x'*4096); f.flush()\n  time.sleep(0.02)\n",
        path.join(dir, 'state.bin'),
        path.join(dir, 'new.bin'),
      ],
      { stdio: 'ignore' },
    );
    try {
      await waitFor(() => (statSync(path.join(dir, 'new.bin'), { throwIfNoEntry: false })?.size ?? 0) > 40_000, {
        what: 'the writer to get going',
      });
      // The watcher has seen both files change; neither is uploaded in its current version.
      await waitFor(() => sync.pendingBytes() > v1.length + 40_000, { what: 'pendingBytes to count the changing files' });
      // A flush while the job runs (a rebalance) takes only settled files: nothing new here.
      expect(await sync.flush('rebalance')).toMatchObject({ committedSeq: 1, files: 1, uploadedBytes: 0, error: null });
      const result = await sync.flush('interruption', { deadlineAt: Date.now() + 15_000 });
      expect(result.error).toBeNull();
      const manifest = await readManifestOf(fx.inspect, runId, result.committedSeq ?? 1);
      // The set keeps the last complete version of state.bin and leaves new.bin out.
      expect(manifest.files.map((f) => [f.path, f.sha256])).toEqual([['state.bin', sha256(v1)]]);
    } finally {
      writer.kill('SIGKILL');
    }
    await new Promise((resolve) => writer.once('exit', resolve));
    // Once the writer is gone, the final flush takes both files as they are.
    const result = await sync.flush('interruption');
    expect(result.error).toBeNull();
    const manifest = await readManifestOf(fx.inspect, runId, result.committedSeq as number);
    expect(manifest.files.map((f) => [f.path, f.sha256])).toEqual([
      ['new.bin', sha256(readFileSync(path.join(dir, 'new.bin')))],
      ['state.bin', sha256(readFileSync(path.join(dir, 'state.bin')))],
    ]);
  });

  test('restore takes the highest committed set, verifies it, and fails loudly on a corrupt object', async () => {
    await using fx = await makeTarget();
    await using work = await tmpDir();
    const dir = path.join(work.path, 'ckpt');
    const runId = `run-restore-${kind}`;
    const commits = commitsOf();
    const versions: Buffer[] = [];
    {
      await using sync = await CheckpointSync.start({ runId, dir, store: fx.store, settleMs: SETTLE_MS, onCommitted: commits.onCommitted });
      for (let step = 1; step <= 3; step++) {
        const model = randomBytes(50_000 + step);
        versions.push(model);
        writeAtomic(path.join(dir, 'model.bin'), model);
        writeAtomic(path.join(dir, 'meta/step.json'), JSON.stringify({ step }));
        const r = await sync.flush(`step-${step}`, { final: true });
        expect(r).toMatchObject({ committedSeq: step, files: 2, error: null });
      }
    }
    // An object without a manifest (an upload whose set was never committed) changes nothing.
    const stray = randomBytes(1000);
    await fx.inspect.put(checkpointKeys.object('', runId, sha256(stray)), stray, { sha256: sha256(stray), size: stray.length });

    const into = path.join(work.path, 'restored');
    const progress: { bytes: number; totalBytes: number; files: number; totalFiles: number }[] = [];
    const restored = await restoreLatest({ store: fx.store, runId, dir: into, onProgress: (p) => progress.push(p) });
    expect(restored).toMatchObject({ seq: 3, files: 2, bytes: (versions[2] as Buffer).length + JSON.stringify({ step: 3 }).length });
    // One report per file in place, the last one at the set's totals.
    expect(progress.map((p) => p.files)).toEqual([1, 2]);
    expect(progress.at(-1)).toEqual({ bytes: restored!.bytes, totalBytes: restored!.bytes, files: 2, totalFiles: 2 });
    expect(sha256(await readFile(path.join(into, 'model.bin')))).toBe(sha256(versions[2] as Buffer));
    expect(await readFile(path.join(into, 'meta/step.json'), 'utf8')).toBe('{"step":3}');
    expect(await restoreLatest({ store: fx.store, runId: 'no-such-run', dir: path.join(work.path, 'none') })).toBeUndefined();

    // The controller reads the same sets.
    const sets = await listCheckpointSets(fx.target, runId);
    expect(sets.map((s) => [s.seq, s.reason, s.files])).toEqual([
      [1, 'step-1', 2],
      [2, 'step-2', 2],
      [3, 'step-3', 2],
    ]);
    const pulled = await pullCheckpointSet(fx.target, runId, 2, path.join(work.path, 'pulled'));
    expect(pulled).toMatchObject({ seq: 2, files: 2, reason: 'step-2' });
    expect(sha256(await readFile(path.join(work.path, 'pulled/model.bin')))).toBe(sha256(versions[1] as Buffer));
    const latest = await pullCheckpointSet(fx.target, runId, 'latest', path.join(work.path, 'pulled-latest'));
    expect(latest.seq).toBe(3);
    await expect(pullCheckpointSet(fx.target, runId, 9, path.join(work.path, 'nope'))).rejects.toThrow(/no checkpoint set 9/);

    // Overwrite the latest model's object with other bytes: the store accepts it (moto does not check
    // that the content matches the key), our re-hash must not.
    const evil = Buffer.from('not the model');
    await fx.inspect.put(checkpointKeys.object('', runId, sha256(versions[2] as Buffer)), evil, {
      sha256: sha256(evil),
      size: evil.length,
    });
    const broken = path.join(work.path, 'restored-broken');
    await expect(restoreLatest({ store: fx.store, runId, dir: broken })).rejects.toThrow(/checkpoint file model\.bin .*is corrupt/);
    // Nothing half-written is left behind under the real name, nor a temp file.
    const left = await readdir(broken, { recursive: true }).catch(() => []);
    expect(left.filter((n) => String(n).includes('model.bin'))).toEqual([]);
    await expect(pullCheckpointSet(fx.target, runId, 'latest', path.join(work.path, 'pulled-broken'))).rejects.toThrow(
      /model\.bin is corrupt/,
    );
  });
});

test('dir target: a manifest never names an object that is not there yet', async () => {
  // The dir store shows every write as it happens: poll the run's folder while sets are committed
  // and check that every manifest present names only objects already present.
  await using work = await tmpDir();
  const root = path.join(work.path, 'target');
  const dir = path.join(work.path, 'ckpt');
  const store = new DirObjectStore({ root });
  const runId = 'run-order';
  await using sync = await CheckpointSync.start({ runId, dir, store, settleMs: 50 });
  const checked = new Set<number>();
  let polls = 0;
  const checkAll = async (): Promise<void> => {
    for (const seq of await manifestSeqs(store, runId)) {
      if (checked.has(seq)) continue;
      const m = await readManifestOf(store, runId, seq);
      for (const f of m.files) expect(await store.head(checkpointKeys.object('', runId, f.sha256))).toEqual({ size: f.size });
      checked.add(seq);
    }
    polls++;
  };
  let stop = false;
  const poller = (async () => {
    while (!stop) {
      await checkAll();
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  })();
  try {
    for (let step = 1; step <= 4; step++) {
      const shards = Array.from({ length: 4 }, () => randomBytes(2_000_000));
      shards.forEach((data, i) => writeAtomic(path.join(dir, `shard-${i}.bin`), data));
      const want = shards.map(sha256).sort();
      await waitFor(
        async () => {
          const seqs = await manifestSeqs(store, runId);
          const last = seqs.at(-1);
          if (last === undefined) return false;
          const m = await readManifestOf(store, runId, last);
          return JSON.stringify(m.files.map((f) => f.sha256).sort()) === JSON.stringify(want);
        },
        { what: `step ${step} committed`, timeoutMs: 20_000 },
      );
    }
  } finally {
    stop = true;
    await poller;
  }
  expect(checked.size).toBeGreaterThanOrEqual(4);
  expect(polls).toBeGreaterThan(10);
  expect(sync.pendingBytes()).toBe(0);
  // Temp names never show up as keys.
  expect(await store.list(checkpointKeys.runPrefix('', runId))).not.toContainEqual(expect.stringMatching(/\/\./));
});
