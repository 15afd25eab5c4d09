import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import type { LogLine } from '@spotctl/shared';
import { LogStore, type LogCursor } from './log-store.ts';

let dir: string;
let file: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spotctl-log-store-'));
  file = path.join(dir, 'log.jsonl');
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function lines(n: number, prefix = 'line'): { stream: 'stdout'; text: string }[] {
  return Array.from({ length: n }, (_, i) => ({ stream: 'stdout' as const, text: `${prefix} ${i + 1}` }));
}

/** Reads everything the cursor has, parsing the raw bytes the way a client would. */
async function drain(cursor: LogCursor, options: { maxLines?: number; untilSeq?: number } = {}): Promise<LogLine[]> {
  const out: LogLine[] = [];
  for (;;) {
    const chunk = await cursor.read(options);
    if (!chunk) return out;
    const text = chunk.raw.toString('utf8');
    expect(text.endsWith('\n')).toBe(true);
    const parsed = text.trimEnd().split('\n').map((l) => JSON.parse(l) as LogLine);
    expect(parsed).toHaveLength(chunk.count);
    expect(parsed[0]?.seq).toBe(chunk.firstSeq);
    expect(parsed.at(-1)?.seq).toBe(chunk.lastSeq);
    if (options.maxLines !== undefined) expect(chunk.count).toBeLessThanOrEqual(options.maxLines);
    out.push(...parsed);
  }
}

describe('LogStore', () => {
  test('appends JSON lines with seq from 1 and reads them back through a cursor', async () => {
    await using store = LogStore.open({ path: file, now: () => 1234 });
    expect(store.lastSeq).toBe(0);
    const written = store.append([{ stream: 'stdout', text: 'a' }, { stream: 'stderr', text: 'b "quoted" \u0001' }]);
    expect(written.map((l) => l.seq)).toEqual([1, 2]);
    expect(store.lastSeq).toBe(2);
    // On disk synchronously, one JSON object per line, seq first.
    const onDisk = fs.readFileSync(file, 'utf8');
    expect(onDisk).toBe(
      '{"seq":1,"ts":1234,"stream":"stdout","text":"a"}\n{"seq":2,"ts":1234,"stream":"stderr","text":"b \\"quoted\\" \\u0001"}\n',
    );
    expect(store.endOffset).toBe(Buffer.byteLength(onDisk));
    const read = await drain(store.cursor(0));
    expect(read).toEqual(written);
  });

  test('continues seq after a reopen and rebuilds the index', async () => {
    {
      await using store = LogStore.open({ path: file, indexEvery: 4 });
      store.append(lines(10));
    }
    await using store = LogStore.open({ path: file, indexEvery: 4 });
    expect(store.lastSeq).toBe(10);
    expect(store.indexSize).toBe(3);
    store.append(lines(3, 'again'));
    expect(store.lastSeq).toBe(13);
    expect(store.indexSize).toBe(4);
    const read = await drain(store.cursor(1));
    expect(read.map((l) => l.seq)).toEqual(Array.from({ length: 13 }, (_, i) => i + 1));
    expect(read.at(-1)?.text).toBe('again 3');
    // Seeking through the rebuilt index lands on the right line.
    expect((await drain(store.cursor(9))).map((l) => l.seq)).toEqual([9, 10, 11, 12, 13]);
  });

  test('a torn last line (crash mid-write) is cut off on reopen', async () => {
    {
      await using store = LogStore.open({ path: file });
      store.append(lines(2));
    }
    fs.appendFileSync(file, '{"seq":3,"ts":1,"str');
    await using store = LogStore.open({ path: file });
    expect(store.lastSeq).toBe(2);
    store.append(lines(1, 'next'));
    const text = fs.readFileSync(file, 'utf8');
    expect(text.trimEnd().split('\n').map((l) => (JSON.parse(l) as LogLine).seq)).toEqual([1, 2, 3]);
  });

  test('refuses a file whose seqs do not match its line numbers', () => {
    fs.writeFileSync(file, '{"seq":5,"ts":1,"stream":"stdout","text":"x"}\n');
    expect(() => LogStore.open({ path: file })).toThrow(/seqs run 5\.\.5/);
  });

  test('cursor seeks to every fromSeq via the sparse index, across small chunks', async () => {
    await using store = LogStore.open({ path: file, indexEvery: 8, readChunkBytes: 200 });
    store.append(lines(100));
    expect(store.indexSize).toBe(13);
    for (const from of [0, 1, 2, 7, 8, 9, 16, 17, 50, 99, 100]) {
      const read = await drain(store.cursor(from));
      const first = Math.max(1, from);
      expect(read.map((l) => l.seq)).toEqual(Array.from({ length: 100 - first + 1 }, (_, i) => first + i));
    }
    expect(await drain(store.cursor(101))).toEqual([]);
  });

  test('the index stays sparse: one entry per indexEvery lines', async () => {
    await using store = LogStore.open({ path: file });
    for (let i = 0; i < 50; i++) store.append(lines(1000));
    expect(store.lastSeq).toBe(50_000);
    expect(store.indexSize).toBe(Math.ceil(50_000 / 1024));
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
    store.append([{ stream: 'stdout', text: 'short' }, { stream: 'stdout', text: long }, { stream: 'stdout', text: 'after' }]);
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
