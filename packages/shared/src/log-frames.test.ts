import { describe, expect, test } from 'vitest';
import {
  LogRecordReader,
  batchLines,
  batchOf,
  encodeLogFrame,
  encodeRecordHeader,
  parseLogFrame,
  sliceBatch,
  type LogBatch,
  type LogSegment,
} from './log-frames.ts';

function segment(firstSeq: number, stream: LogSegment['stream'], texts: string[], ts = 1000): LogSegment {
  return { firstSeq, count: texts.length, ts, stream, data: Buffer.from(`${texts.join('\n')}\n`) };
}

/** A frame from a header object and a payload, valid or not. */
function rawFrame(header: unknown, payload: string | Buffer): Buffer {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  return Buffer.concat([len, h, Buffer.isBuffer(payload) ? payload : Buffer.from(payload)]);
}

function parseError(frame: Buffer): string {
  const parsed = parseLogFrame(frame);
  if (parsed.ok) throw new Error('expected the frame to be refused');
  return parsed.error;
}

describe('logs frames', () => {
  test('round trip: segments of both streams, empty lines, \\r and multibyte text', () => {
    const segments = [
      segment(7, 'stdout', ['a', '', 'ünï\r']),
      segment(10, 'stderr', ['🙂 err'], 2000),
      segment(11, 'system', ['spotctl: x']),
    ];
    const parsed = parseLogFrame(encodeLogFrame(segments));
    if (!parsed.ok) throw new Error(parsed.error);
    expect(parsed.value.firstSeq).toBe(7);
    expect(parsed.value.lastSeq).toBe(11);
    expect(batchLines(parsed.value)).toEqual([
      { seq: 7, ts: 1000, stream: 'stdout', text: 'a' },
      { seq: 8, ts: 1000, stream: 'stdout', text: '' },
      { seq: 9, ts: 1000, stream: 'stdout', text: 'ünï\r' },
      { seq: 10, ts: 2000, stream: 'stderr', text: '🙂 err' },
      { seq: 11, ts: 1000, stream: 'system', text: 'spotctl: x' },
    ]);
  });

  test('sliceBatch drops the lines before a seq, inside a segment too, without copying', () => {
    const batch: LogBatch = batchOf([segment(1, 'stdout', ['1', '2', '3']), segment(4, 'stderr', ['4', '5'])]);
    expect(sliceBatch(batch, 1)).toBe(batch);
    expect(sliceBatch(batch, 6)).toBeUndefined();
    const from2 = sliceBatch(batch, 2) as LogBatch;
    expect(batchLines(from2).map((l) => [l.seq, l.text])).toEqual([
      [2, '2'],
      [3, '3'],
      [4, '4'],
      [5, '5'],
    ]);
    expect(from2.segments[0]?.data.buffer).toBe(batch.segments[0]?.data.buffer);
    expect(batchLines(sliceBatch(batch, 5) as LogBatch).map((l) => l.seq)).toEqual([5]);
  });

  test('malformed frames are refused with an error that says what is wrong', () => {
    const header = { event: 'logs', firstSeq: 1, segments: [{ stream: 'stdout', ts: 1, count: 2, bytes: 4 }] };
    expect(parseLogFrame(rawFrame(header, 'a\nb\n')).ok).toBe(true);
    expect(parseError(Buffer.from([0, 0]))).toMatch(/too short/);
    expect(parseError(Buffer.from([0, 0, 1, 0, 0x7b]))).toMatch(/header length 256 does not fit/);
    expect(parseError(Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{x}')]))).toMatch(/header is not valid JSON/);
    expect(parseError(rawFrame({ ...header, event: 'other' }, 'a\nb\n'))).toMatch(/header \/event/);
    expect(parseError(rawFrame({ ...header, firstSeq: 0 }, 'a\nb\n'))).toMatch(/header \/firstSeq/);
    expect(parseError(rawFrame({ ...header, firstSeq: 1.5 }, 'a\nb\n'))).toMatch(/header \/firstSeq/);
    expect(parseError(rawFrame({ ...header, segments: [] }, ''))).toMatch(/header \/segments/);
    expect(parseError(rawFrame({ ...header, segments: [{ stream: 'video', ts: 1, count: 2, bytes: 4 }] }, 'a\nb\n'))).toMatch(
      /header \/segments\/0\/stream/,
    );
    expect(parseError(rawFrame({ ...header, extra: 1 }, 'a\nb\n'))).toMatch(/header/);
    expect(parseError(rawFrame(header, 'a\nb'))).toMatch(/shorter than its header says/);
    expect(parseError(rawFrame(header, 'a\nb\nc\n'))).toMatch(/2 bytes after its last segment/);
    expect(parseError(rawFrame(header, 'ab\n\n'.slice(0, 3) + 'x'))).toMatch(/does not hold 2 complete lines/);
    expect(parseError(rawFrame(header, '\n\n\n\n'))).toMatch(/segment at seq 1 does not hold 2 complete lines/);
  });
});

describe('LogRecordReader', () => {
  const records = Buffer.concat([
    encodeRecordHeader({ seq: 1, count: 2, ts: 5, stream: 'stdout', bytes: 8 }),
    Buffer.from('one\ntwo\n'),
    encodeRecordHeader({ seq: 3, count: 1, ts: 6, stream: 'stderr', bytes: 4 }),
    Buffer.from('日\n'),
  ]);

  function read(chunks: Buffer[], fromSeq = 1): string[] {
    const out: string[] = [];
    const reader = new LogRecordReader(fromSeq, (b) => out.push(...batchLines(b).map((l) => `${l.seq}:${l.stream}:${l.text}`)));
    for (const c of chunks) reader.push(c);
    return out;
  }

  test('reads records split anywhere, from any seq', () => {
    const all = ['1:stdout:one', '2:stdout:two', '3:stderr:日'];
    for (let cut = 0; cut <= records.length; cut++) expect(read([records.subarray(0, cut), records.subarray(cut)])).toEqual(all);
    expect(read([...records].map((b) => Buffer.from([b])))).toEqual(all);
    expect(read([records], 2)).toEqual(all.slice(1));
    expect(read([records], 4)).toEqual([]);
  });

  test('a torn last record is left out; a record out of sequence or with the wrong line count is an error', () => {
    expect(read([records.subarray(0, records.length - 1)])).toEqual(['1:stdout:one', '2:stdout:two']);
    const skipped = Buffer.concat([encodeRecordHeader({ seq: 2, count: 1, ts: 5, stream: 'stdout', bytes: 2 }), Buffer.from('x\n')]);
    expect(() => read([skipped])).toThrow(/starts at seq 2, expected 1/);
    const miscounted = Buffer.concat([encodeRecordHeader({ seq: 1, count: 2, ts: 5, stream: 'stdout', bytes: 2 }), Buffer.from('x\n')]);
    expect(() => read([miscounted])).toThrow(/does not hold 2 complete lines/);
  });
});
