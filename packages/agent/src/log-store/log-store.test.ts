import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { LogRecordReader, batchLines, batchOf, type LogLine } from '@spotctl/shared';
import { LogStore, type LogCursor } from './log-store.ts';

let dir: string;
let file: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spotctl-log-store-'));
  file = path.join(dir, 'log.records');
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function lines(n: number, prefix = 'line'): { stream: 'stdout'; text: string }[] {
  return Array.from({ length: n }, (_, i) => ({ stream: 'stdout' as const, text: `${prefix} ${i + 1}` }));
}

/** Reads everything the cursor has, expanding the segments the way a client would. */
async function drain(cursor: LogCursor, options: { maxLines?: number; untilSeq?: number } = {}): Promise<LogLine[]> {
  const out: LogLine[] = [];
  for (;;) {
    const chunk = await cursor.read(options);
    if (!chunk) return out;
    for (const s of chunk.segments) expect(s.data.at(-1)).toBe(0x0a);
    const parsed = batchLines(batchOf(chunk.segments));
    expect(parsed).toHaveLength(chunk.count);
    expect(parsed[0]?.seq).toBe(chunk.firstSeq);
    expect(parsed.at(-1)?.seq).toBe(chunk.lastSeq);
    if (options.maxLines !== undefined) expect(chunk.count).toBeLessThanOrEqual(options.maxLines);
    out.push(...parsed);
  }
}

/** The file as the controller's stored-log reader sees it. */
function readStored(fromSeq = 1): LogLine[] {
  const out: LogLine[] = [];
  const reader = new LogRecordReader(fromSeq, (batch) => out.push(...batchLines(batch)));
  reader.push(fs.readFileSync(file));
  return out;
}

describe('LogStore', () => {
  test('appends records with seq from 1 and reads them back through a cursor', async () => {
    await using store = LogStore.open({ path: file, now: () => 1234 });
    expect(store.lastSeq).toBe(0);
    const written = store.append([
      { stream: 'stdout', text: 'a' },
      { stream: 'stderr', text: 'b "quoted" \u0001' },
    ]);
    expect(written.map((l) => l.seq)).toEqual([1, 2]);
    expect(store.lastSeq).toBe(2);
    // On disk synchronously: a header line per record (seq first), then the lines as they are.
    const onDisk = fs.readFileSync(file, 'utf8');
    expect(onDisk).toBe(
      '{"seq":1,"count":1,"ts":1234,"stream":"stdout","bytes":2}\na\n{"seq":2,"count":1,"ts":1234,"stream":"stderr","bytes":13}\nb "quoted" \u0001\n',
    );
    expect(store.endOffset).toBe(Buffer.byteLength(onDisk));
    const read = await drain(store.cursor(0));
    expect(read).toEqual(written);
    expect(readStored()).toEqual(written);
  });

  test('appendBlock stores a chunk of lines as one record; a text with a newline becomes two lines', async () => {
    await using store = LogStore.open({ path: file, now: () => 7 });
    const block = Buffer.from('one\ntwo\r\n\nfour\n');
    expect(store.appendBlock('stdout', [block.subarray(0, 5), block.subarray(5)], 4)).toMatchObject({
      firstSeq: 1,
      lastSeq: 4,
      count: 4,
      ts: 7,
      startOffset: 0,
      endOffset: store.endOffset,
    });
    const written = store.append([{ stream: 'system', text: 'x\ny' }]);
    expect(written.map((l) => [l.seq, l.text])).toEqual([
      [5, 'x'],
      [6, 'y'],
    ]);
    const expected = ['one', 'two\r', '', 'four', 'x', 'y'];
    expect((await drain(store.cursor(1))).map((l) => l.text)).toEqual(expected);
    expect(readStored().map((l) => l.text)).toEqual(expected);
    expect(readStored(3).map((l) => l.seq)).toEqual([3, 4, 5, 6]);
    // A cursor can start inside a record.
    expect((await drain(store.cursor(2))).map((l) => l.seq)).toEqual([2, 3, 4, 5, 6]);
  });

  test('continues seq after a reopen and rebuilds the index', async () => {
    {
      await using store = LogStore.open({ path: file, indexEvery: 4 });
      for (let i = 0; i < 5; i++) store.append(lines(2));
    }
    await using store = LogStore.open({ path: file, indexEvery: 4 });
    expect(store.lastSeq).toBe(10);
    // Records start at 1, 3, 5, 7, 9: entries at 1, 5, 9.
    expect(store.indexSize).toBe(3);
    store.append(lines(3, 'again'));
    expect(store.lastSeq).toBe(13);
    // The new record (seq 11) is only 2 lines past the last entry (9): no entry of its own.
    expect(store.indexSize).toBe(3);
    const read = await drain(store.cursor(1));
    expect(read.map((l) => l.seq)).toEqual(Array.from({ length: 13 }, (_, i) => i + 1));
    expect(read.at(-1)?.text).toBe('again 3');
    // Seeking through the rebuilt index lands on the right line.
    expect((await drain(store.cursor(9))).map((l) => l.seq)).toEqual([9, 10, 11, 12, 13]);
  });

  test('a torn last record (crash mid-write) is cut off on reopen, header or lines', async () => {
    for (const torn of ['{"seq":3,"count":1,"ts":1,"str', '{"seq":3,"count":2,"ts":1,"stream":"stdout","bytes":8}\nabc\nd']) {
      fs.rmSync(file, { force: true });
      {
        await using store = LogStore.open({ path: file });
        store.append(lines(2));
      }
      fs.appendFileSync(file, torn);
      // The controller's reader leaves a torn record out too.
      expect(readStored().map((l) => l.seq)).toEqual([1, 2]);
      await using store = LogStore.open({ path: file });
      expect(store.lastSeq).toBe(2);
      store.append(lines(1, 'next'));
      expect(readStored().map((l) => [l.seq, l.text])).toEqual([
        [1, 'line 1'],
        [2, 'line 2'],
        [3, 'next 1'],
      ]);
    }
  });

  test('refuses a file that is not a log of records numbered from 1', () => {
    fs.writeFileSync(file, '{"seq":5,"count":1,"ts":1,"stream":"stdout","bytes":2}\nx\n');
    expect(() => LogStore.open({ path: file })).toThrow(/starts at seq 5, expected 1/);
    fs.writeFileSync(file, '{"seq":1,"ts":1,"stream":"stdout","text":"x"}\n');
    expect(() => LogStore.open({ path: file })).toThrow(/not a spotctl log/);
    expect(() => readStored()).toThrow(/not a log record header/);
  });

  test('cursor seeks to every fromSeq via the sparse index, across small chunks', async () => {
    await using store = LogStore.open({ path: file, indexEvery: 8, readChunkBytes: 200 });
    for (let i = 0; i < 20; i++) store.append(lines(5));
    // One entry per record that starts ≥ 8 lines after the last entry: seqs 1, 11, 21, ... 91.
    expect(store.indexSize).toBe(10);
    for (const from of [0, 1, 2, 7, 8, 9, 16, 17, 50, 99, 100]) {
      const read = await drain(store.cursor(from));
      const first = Math.max(1, from);
      expect(read.map((l) => l.seq)).toEqual(Array.from({ length: 100 - first + 1 }, (_, i) => first + i));
    }
    expect(await drain(store.cursor(101))).toEqual([]);
  });

  test('the index stays sparse: at most one entry per indexEvery lines, whatever the record size', async () => {
    await using store = LogStore.open({ path: file });
    for (let i = 0; i < 50; i++) store.append(lines(1000));
    for (let i = 0; i < 5000; i++) store.append(lines(1));
    expect(store.lastSeq).toBe(55_000);
    expect(store.indexSize).toBeLessThanOrEqual(Math.ceil(55_000 / 1024));
    expect(store.indexSize).toBeGreaterThan(20);
    await using reopened = LogStore.open({ path: `${file}` });
    expect(reopened.indexSize).toBe(store.indexSize);
  });

  test('cursor respects maxLines and untilSeq, then picks up lines appended later', async () => {
    await using store = LogStore.open({ path: file });
    store.append(lines(10));
    const cursor = store.cursor(3);
    expect((await drain(cursor, { maxLines: 3, untilSeq: 8 })).map((l) => l.seq)).toEqual([3, 4, 5, 6, 7, 8]);
    expect(cursor.nextSeq).toBe(9);
    expect(await cursor.read()).not.toBeNull();
    expect(await cursor.read()).toBeNull();
    store.append(lines(2, 'late'));
    expect((await drain(cursor)).map((l) => l.text)).toEqual(['late 1', 'late 2']);
  });

  test('skip moves a cursor past a record just appended only when it is exactly at its start', async () => {
    await using store = LogStore.open({ path: file });
    store.append(lines(3));
    // A follower that has read everything sits at the end of the file.
    const live = store.cursor(3);
    expect((await drain(live)).map((l) => l.seq)).toEqual([3]);
    const behind = store.cursor(3);
    const record = store.appendBlock('stdout', Buffer.from('x\ny\n'), 2);
    expect(behind.skip(record)).toBe(false);
    expect(live.skip(record)).toBe(true);
    expect(live.nextSeq).toBe(6);
    expect(await live.read()).toBeNull();
    store.append(lines(1, 'after'));
    expect((await drain(live)).map((l) => [l.seq, l.text])).toEqual([[6, 'after 1']]);
    expect((await drain(behind)).map((l) => l.text)).toEqual(['line 3', 'x', 'y', 'after 1']);
  });

  test('a cursor created before the lines exist waits for them', async () => {
    await using store = LogStore.open({ path: file, indexEvery: 4 });
    const cursor = store.cursor(6);
    expect(await cursor.read()).toBeNull();
    store.append(lines(3));
    expect(await cursor.read()).toBeNull();
    store.append(lines(5));
    expect((await drain(cursor)).map((l) => l.seq)).toEqual([6, 7, 8]);
  });

  test('a line longer than the read chunk is read whole', async () => {
    await using store = LogStore.open({ path: file, readChunkBytes: 64 });
    const long = 'é'.repeat(5000);
    store.append([
      { stream: 'stdout', text: 'short' },
      { stream: 'stdout', text: long },
      { stream: 'stdout', text: 'after' },
    ]);
    const read = await drain(store.cursor(1));
    expect(read.map((l) => l.text)).toEqual(['short', long, 'after']);
  });

  test('multibyte text survives the round trip', async () => {
    await using store = LogStore.open({ path: file, readChunkBytes: 32 });
    const texts = ['日本語のテキスト', '🙂 emoji 🚀', 'ascii', 'ünïcödé\r'];
    store.append(texts.map((text) => ({ stream: 'stdout' as const, text })));
    expect((await drain(store.cursor(1))).map((l) => l.text)).toEqual(texts);
  });

  test('close is idempotent and waits for reads in flight', async () => {
    const store = LogStore.open({ path: file });
    store.append(lines(1000));
    const reading = drain(store.cursor(1)).catch((err: unknown) => err);
    await store.close();
    await store.close();
    const result = await reading;
    // Either the read finished before close, or it saw the closed store; never a crash or stray fd read.
    if (result instanceof Error) expect(result.message).toMatch(/closed/);
    else expect((result as LogLine[]).length).toBeGreaterThan(0);
    expect(() => store.append(lines(1))).toThrow(/closed/);
  });
});
