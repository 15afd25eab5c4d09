/**
 * CheckpointSync against a real directory store on the worst day: flushes that must commit what is
 * there now or say that nothing changed, uploads that fail (visible at once, recovered from), and
 * deadlines that are close or already past.
 */
import { mkdtempSync, rmSync, writeFileSync, renameSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { FlushResult, InterruptionReport } from '@spotctl/shared';
import { InterruptionHandler } from '../spot/interruption.ts';
import { CheckpointSync, type CheckpointClock, type CheckpointCommittedEvent, type CheckpointFailure } from './checkpoint-sync.ts';
import { DirObjectStore } from './store.ts';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tmp(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-ckpt-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writeAtomic(file: string, data: Buffer | string): void {
  writeFileSync(`${file}.tmp`, data);
  renameSync(`${file}.tmp`, file);
}

/** Moves only when told to; timers fire as time passes them. */
class ManualClock implements CheckpointClock {
  #now = Date.parse('2026-12-06T01:00:00Z');
  #nextId = 1;
  readonly #timers = new Map<number, { callback: () => void; dueAt: number }>();
  now(): number {
    return this.#now;
  }
  setTimeout(callback: () => void, delayMs: number): unknown {
    const id = this.#nextId++;
    this.#timers.set(id, { callback, dueAt: this.#now + delayMs });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  advance(ms: number): void {
    this.#now += ms;
    for (const [id, t] of [...this.#timers.entries()].sort((a, b) => a[1].dueAt - b[1].dueAt)) {
      if (t.dueAt > this.#now) continue;
      this.#timers.delete(id);
      t.callback();
    }
  }
}

async function startSync(options: { settleMs: number; storeDir?: string; clock?: CheckpointClock }) {
  const root = tmp();
  const dir = path.join(root, 'ck');
  const storeDir = options.storeDir ?? path.join(root, 'store');
  const store = new DirObjectStore({ root: storeDir });
  const commits: CheckpointCommittedEvent[] = [];
  const failures: CheckpointFailure[] = [];
  const sync = await CheckpointSync.start({
    runId: 'r1',
    dir,
    store,
    settleMs: options.settleMs,
    logger: quiet,
    onCommitted: (e) => commits.push(e),
    onFailure: (f) => failures.push(f),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  cleanups.push(async () => {
    await sync.close();
    store.close();
  });
  return { root, dir, storeDir, sync, commits, failures };
}

/** Bounded wait for state that has no event of its own. */
async function until<T>(fn: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('CheckpointSync settling, on an injected clock', () => {
  it('uploads and commits a file once the clock has passed its settle time, not before', async () => {
    const clock = new ManualClock();
    const { dir, sync, commits } = await startSync({ settleMs: 60_000, clock });
    writeAtomic(path.join(dir, 'a.bin'), Buffer.alloc(4096, 3));
    await until(() => sync.pendingBytes() === 4096, 'the watcher to see the file');
    clock.advance(59_000);
    expect(commits).toEqual([]);
    clock.advance(1_000);
    const set = await until(() => commits[0], 'the set after the settle time');
    expect(set).toMatchObject({ seq: 1, files: 1, bytes: 4096, uploadedBytes: 4096, reason: 'settled' });
    expect(sync.pendingBytes()).toBe(0);
  });
});

describe('CheckpointSync flushes', () => {
  it('a rebalance flush commits the files as they are now, even one written a moment ago, or says nothing changed', async () => {
    // A settle time the background would take long to reach on its own.
    const { dir, sync, commits } = await startSync({ settleMs: 400 });
    writeAtomic(path.join(dir, 'a.bin'), Buffer.alloc(3000, 1));
    const first = await sync.flush('rebalance', { final: false });
    expect(first).toMatchObject({ committedSeq: 1, files: 1, bytes: 3000, uploadedBytes: 3000, error: null });
    expect(first.unchanged).toBeUndefined();

    writeAtomic(path.join(dir, 'b.bin'), Buffer.alloc(5000, 2));
    const second = await sync.flush('rebalance', { final: false });
    expect(second).toMatchObject({ committedSeq: 2, files: 2, bytes: 8000, uploadedBytes: 5000, error: null });

    const third = await sync.flush('rebalance', { final: false });
    expect(third).toMatchObject({ committedSeq: 2, files: 2, unchanged: true, uploadedBytes: 0, error: null });
    // One event per set, and a flush's set reports what that flush sent.
    expect(commits.map((c) => [c.seq, c.reason, c.uploadedBytes])).toEqual([
      [1, 'rebalance', 3000],
      [2, 'rebalance', 5000],
    ]);
  });

  it('says plainly when the deadline had already passed, instead of failing with no reason', async () => {
    const { dir, sync } = await startSync({ settleMs: 50 });
    writeAtomic(path.join(dir, 'a.bin'), 'x');
    const result = await sync.flush('interruption', { final: true, deadlineAt: Date.now() - 1500 });
    expect(result.error).toMatch(/the deadline had already passed when the flush began \(\d+ ms late\): nothing was uploaded/);
  });
});

describe('CheckpointSync failures', () => {
  it('reports a failing upload at once, shows it in health(), and clears it once uploads get through', async () => {
    const root = tmp();
    // The store's folder cannot be created while a file stands in its way.
    writeFileSync(path.join(root, 'blocker'), 'not a folder');
    const { dir, sync, failures, commits } = await startSync({ settleMs: 50, storeDir: path.join(root, 'blocker', 'store') });
    writeAtomic(path.join(dir, 'state.bin'), Buffer.alloc(1000, 7));
    const failure = await until(() => failures[0], 'the first upload failure');
    expect(failure).toMatchObject({ what: 'upload', file: 'state.bin', failures: 1 });
    expect(failure.message).toMatch(/ENOTDIR|not a directory/i);
    expect(sync.health()).toMatchObject({ failing: true, lastCommittedSeq: null });
    expect(sync.health().lastError).toMatch(/ENOTDIR|not a directory/i);

    rmSync(path.join(root, 'blocker'));
    mkdirSync(path.join(root, 'blocker'));
    await until(() => commits[0], 'the set once the store works again');
    expect(sync.health()).toMatchObject({ failing: false, failures: 0, lastError: null, lastCommittedSeq: 1 });
  });
});

describe('the interruption path with the deadline close', () => {
  function handlerFor(sync: CheckpointSync, reports: InterruptionReport[]) {
    return new InterruptionHandler({
      graceMs: 90_000,
      stopJob: () => undefined,
      signalJob: () => undefined,
      jobEnded: async () => ({ endedAt: Date.now(), killed: false }),
      isJobActive: () => true,
      checkpoints: {
        pendingBytes: () => sync.pendingBytes(),
        lastSetBytes: () => sync.lastCommitted?.bytes ?? 0,
        flush: (reason, o) => sync.flush(reason, o),
        describe: () => 'dir',
      },
      simulated: false,
      onNotice: () => undefined,
      onRebalanceEvent: () => undefined,
      onReport: (r) => reports.push(r),
      logger: quiet,
    });
  }

  it('with the store failing, the final flush ends by the deadline and the report says why', async () => {
    const root = tmp();
    writeFileSync(path.join(root, 'blocker'), 'not a folder');
    const { dir, sync } = await startSync({ settleMs: 50, storeDir: path.join(root, 'blocker', 'store') });
    writeAtomic(path.join(dir, 'state.bin'), Buffer.alloc(1000, 7));
    const reports: InterruptionReport[] = [];
    const handler = handlerFor(sync, reports);
    // AWS's deadline 3.5 s away: the flush gets what is left of it minus 2 s.
    handler.onInterruption({ action: 'terminate', time: new Date(Date.now() + 3500).toISOString() }, Date.now());
    const report = await handler.handling;
    const flush = report?.flush as FlushResult;
    expect(flush.committedSeq).toBeNull();
    expect(flush.error).toMatch(/state\.bin: .*(ENOTDIR|not a directory)/i);
    expect(reports).toHaveLength(1);
  });

  it('with the deadline already past, the report says so', async () => {
    const { dir, sync } = await startSync({ settleMs: 50 });
    writeAtomic(path.join(dir, 'state.bin'), 'x');
    const reports: InterruptionReport[] = [];
    const handler = handlerFor(sync, reports);
    handler.onInterruption({ action: 'terminate', time: new Date(Date.now() - 5000).toISOString() }, Date.now());
    const report = await handler.handling;
    expect(report?.flush?.error).toMatch(/deadline had already passed/);
  });
});
