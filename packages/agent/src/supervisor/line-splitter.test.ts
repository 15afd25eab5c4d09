import { describe, expect, test } from 'vitest';
import { LineSplitter, type LineBlock } from './line-splitter.ts';

/** The block's lines as strings, checking that its count matches its newlines. */
function texts(block: LineBlock | undefined): string[] {
  if (!block) return [];
  const text = Buffer.concat(block.data).toString('utf8');
  expect(text.endsWith('\n')).toBe(true);
  const lines = text.slice(0, -1).split('\n');
  expect(lines.length).toBe(block.count);
  return lines;
}

function feed(splitter: LineSplitter, chunks: Buffer[]): string[] {
  const out: string[] = [];
  for (const chunk of chunks) out.push(...texts(splitter.push(chunk)));
  out.push(...texts(splitter.flush()));
  return out;
}

/** Every way of cutting `data` into two chunks. */
function allSplits(data: Buffer): Buffer[][] {
  return Array.from({ length: data.length + 1 }, (_, i) => [data.subarray(0, i), data.subarray(i)]);
}

describe('LineSplitter', () => {
  test('splits on \\n, keeps \\r and empty lines, flushes a trailing partial line', () => {
    const s = new LineSplitter(1024);
    expect(feed(s, [Buffer.from('a\r\n\nb\nparti'), Buffer.from('al')])).toEqual(['a\r', '', 'b', 'partial']);
    expect(s.flush()).toBeUndefined();
  });

  test('a lone \\r ends a line at once (progress bars are live), \\r\\n stays one line break, wherever the chunks are cut', () => {
    const bar = new LineSplitter(1024);
    expect(texts(bar.push(Buffer.from(' 10%|#   |\r')))).toEqual([' 10%|#   |\r']);
    expect(texts(bar.push(Buffer.from(' 20%|##  |\r 30%')))).toEqual([' 20%|##  |\r']);
    expect(feed(bar, [Buffer.from('|### |\r100%|####|\n')])).toEqual([' 30%|### |\r', '100%|####|']);
    const data = Buffer.from('a\r\nb\rc\r\r\nd\n');
    for (const chunks of allSplits(data)) {
      expect(feed(new LineSplitter(1024), chunks)).toEqual(['a\r', 'b\r', 'c\r', '\r', 'd']);
    }
    const bytes = [...data].map((b) => Buffer.from([b]));
    expect(feed(new LineSplitter(1024), bytes)).toEqual(['a\r', 'b\r', 'c\r', '\r', 'd']);
  });

  test('a multibyte character cut by a chunk boundary survives, wherever the cut falls', () => {
    const data = Buffer.from('日本🙂é\nzweite Zeile ü\n');
    for (const chunks of allSplits(data)) {
      expect(feed(new LineSplitter(1024), chunks)).toEqual(['日本🙂é', 'zweite Zeile ü']);
    }
    // Byte by byte too.
    const bytes = [...data].map((b) => Buffer.from([b]));
    expect(feed(new LineSplitter(1024), bytes)).toEqual(['日本🙂é', 'zweite Zeile ü']);
  });

  test('a line longer than maxLineBytes becomes several records of at most that size', () => {
    const s = new LineSplitter(10);
    const out = feed(s, [Buffer.from('0123456789abcdefghij'), Buffer.from('XYZ\nshort\n')]);
    expect(out).toEqual(['0123456789', 'abcdefghij', 'XYZ', 'short']);
    // Exactly maxLineBytes is not cut.
    expect(feed(new LineSplitter(10), [Buffer.from('0123456789\n')])).toEqual(['0123456789']);
  });

  test('a chunk of whole lines is handed on as a view, without a copy', () => {
    const chunk = Buffer.from('one\ntwo\n');
    const splitter = new LineSplitter(1024);
    const block = splitter.push(chunk);
    expect(block?.count).toBe(2);
    expect(block?.data).toHaveLength(1);
    expect(block?.data[0]?.buffer).toBe(chunk.buffer);
    // After a partial line, only the line that straddles the chunks is a copy.
    expect(splitter.push(Buffer.from('thr'))).toBeUndefined();
    const next = Buffer.from('ee\nfour\nfive\n');
    const after = splitter.push(next);
    expect(after?.count).toBe(3);
    expect(after?.data.map((b) => b.toString())).toEqual(['three\n', 'four\nfive\n']);
    expect(after?.data[1]?.buffer).toBe(next.buffer);
  });

  test('cutting a long line never splits a UTF-8 character', () => {
    const text = 'aé🙂'.repeat(50);
    const data = Buffer.from(`${text}\n`);
    for (const max of [4, 5, 6, 7, 10, 13]) {
      for (const chunks of [[data], [...data].map((b) => Buffer.from([b]))]) {
        const out = feed(new LineSplitter(max), chunks);
        expect(out.join('')).toBe(text);
        for (const record of out) {
          expect(Buffer.byteLength(record)).toBeLessThanOrEqual(max);
          expect(record).not.toContain('\uFFFD');
        }
      }
    }
  });
});
