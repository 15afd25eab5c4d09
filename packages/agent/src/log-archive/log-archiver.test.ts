import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { logArchiveKeys } from '@spotctl/shared';
import { DirObjectStore } from '../checkpoint/index.ts';
import { LogStore } from '../log-store/index.ts';
import { LogArchiver } from './log-archiver.ts';

const logger = pino({ level: 'silent' });
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spotctl-log-archive-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A clock whose interval only fires when the test says so. */
function manualClock() {
  const ticks: (() => void)[] = [];
  return {
    ticks,
    clock: {
      now: () => Date.now(),
      setInterval: (cb: () => void) => ticks.push(cb),
      clearInterval: () => ticks.splice(0),
      setTimeout: (cb: () => void, ms: number) => setTimeout(cb, ms),
      clearTimeout: (h: unknown) => clearTimeout(h as NodeJS.Timeout),
    },
  };
}

/** The archive's segments, in offset order, concatenated. */
function archived(root: string, runId: string): { keys: string[]; bytes: Buffer } {
  const logDir = path.join(root, runId, 'log');
  const keys = fs.existsSync(logDir)
    ? fs
        .readdirSync(logDir)
        .filter((n) => !n.startsWith('.'))
        .sort()
    : [];
  return { keys, bytes: Buffer.concat(keys.map((k) => fs.readFileSync(path.join(logDir, k)))) };
}

describe('LogArchiver', () => {
  test('archives the log as contiguous segments: on each tick with new output, and on demand', async () => {
    const logPath = path.join(dir, 'log.records');
    await using store = LogStore.open({ path: logPath });
    const sink = new DirObjectStore({ root: path.join(dir, 'archive') });
    const { ticks, clock } = manualClock();
    const archiver = new LogArchiver({ runId: 'r1', logPath, endOffset: () => store.endOffset, sink, logger, clock });
    archiver.start();
    expect(ticks).toHaveLength(1);

    store.append([
      { stream: 'stdout', text: 'one' },
      { stream: 'stderr', text: 'two' },
    ]);
    ticks[0]?.();
    await archiver.archive('test', { timeoutMs: 10_000 }); // waits for the tick's archive
    expect(archiver.archivedOffset).toBe(store.endOffset);
    expect(archived(path.join(dir, 'archive'), 'r1').keys).toHaveLength(1);

    // Nothing new: a tick uploads nothing.
    ticks[0]?.();
    expect((await archiver.archive('test', { timeoutMs: 10_000 })).uploadedBytes).toBe(0);

    store.append([{ stream: 'stdout', text: 'three' }]);
    const r = await archiver.archive('exit', { timeoutMs: 10_000 });
    expect(r.error).toBeUndefined();
    const a = archived(path.join(dir, 'archive'), 'r1');
    expect(a.keys).toHaveLength(2);
    expect(a.bytes.equals(fs.readFileSync(logPath))).toBe(true);
    const ranges = a.keys.map((k) => logArchiveKeys.rangeOf(`r1/log/${k}`));
    expect(ranges[0]?.startOffset).toBe(0);
    expect(ranges[1]?.startOffset).toBe(ranges[0]?.endOffset);
    archiver.close();
    expect(ticks).toHaveLength(0);
  });

  test('splits large growth into segments of at most maxSegmentBytes, the whole still the log file', async () => {
    const logPath = path.join(dir, 'log.records');
    await using store = LogStore.open({ path: logPath });
    store.append(Array.from({ length: 2000 }, (_, i) => ({ stream: 'stdout' as const, text: `line ${i + 1}` })));
    const sink = new DirObjectStore({ root: path.join(dir, 'archive') });
    const archiver = new LogArchiver({ runId: 'r2', logPath, endOffset: () => store.endOffset, sink, logger, maxSegmentBytes: 1000 });
    await archiver.archive('exit', { timeoutMs: 10_000 });
    const a = archived(path.join(dir, 'archive'), 'r2');
    expect(a.keys.length).toBe(Math.ceil(store.endOffset / 1000));
    expect(a.bytes.equals(fs.readFileSync(logPath))).toBe(true);
  });

  test('a failed upload is reported, not thrown, and the next archive sends the same bytes again', async () => {
    const logPath = path.join(dir, 'log.records');
    await using store = LogStore.open({ path: logPath });
    store.append([{ stream: 'stdout', text: 'kept' }]);
    // The archive's root is a file at first: every put fails.
    const root = path.join(dir, 'archive');
    fs.writeFileSync(root, '');
    const archiver = new LogArchiver({
      runId: 'r3',
      logPath,
      endOffset: () => store.endOffset,
      sink: new DirObjectStore({ root }),
      logger,
    });
    const failed = await archiver.archive('exit', { timeoutMs: 10_000 });
    expect(failed.error).toBeDefined();
    expect(failed.archivedOffset).toBe(0);
    fs.rmSync(root);
    const ok = await archiver.archive('exit', { timeoutMs: 10_000 });
    expect(ok.error).toBeUndefined();
    expect(archived(root, 'r3').bytes.equals(fs.readFileSync(logPath))).toBe(true);
  });
});
