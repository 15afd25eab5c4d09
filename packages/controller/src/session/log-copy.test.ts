import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LogRecordReader, batchLines, batchOf, linesData, type LogBatch } from '@spotctl/shared';
import { LogCopyWriter } from './log-copy.ts';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spotctl-log-copy-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function batch(firstSeq: number, texts: string[]): LogBatch {
  return batchOf([{ firstSeq, count: texts.length, ts: 1, stream: 'stdout', data: linesData(texts) }]);
}

function read(file: string): string[] {
  const texts: string[] = [];
  const reader = new LogRecordReader(1, (b) => texts.push(...batchLines(b).map((l) => `${l.seq}:${l.text}`)));
  reader.push(fs.readFileSync(file));
  return texts;
}

describe('LogCopyWriter', () => {
  it('keeps lines contiguous from seq 1: overlaps are trimmed, a reopened copy continues, a gap stops the copy', () => {
    const file = path.join(dir, 'streamed.records');
    {
      using copy = LogCopyWriter.open(file);
      copy?.write(batch(1, ['a', 'b']));
      copy?.write(batch(2, ['b', 'c'])); // a reconnect's overlap
    }
    {
      using copy = LogCopyWriter.open(file);
      expect(copy?.nextSeq).toBe(4);
      copy?.write(batch(4, ['d']));
      copy?.write(batch(9, ['i'])); // attach --from 9: cannot be numbered after a gap
      copy?.write(batch(5, ['e']));
    }
    expect(read(file)).toEqual(['1:a', '2:b', '3:c', '4:d']);
  });

  it('drops a record torn by a crash and continues after the last whole one', () => {
    const file = path.join(dir, 'streamed.records');
    {
      using copy = LogCopyWriter.open(file);
      copy?.write(batch(1, ['a']));
    }
    fs.appendFileSync(file, '{"seq":2,"count":1,"ts":1,"stream":"stdout","bytes":2}\nb');
    using copy = LogCopyWriter.open(file);
    expect(copy?.nextSeq).toBe(2);
    copy?.write(batch(2, ['b2']));
    copy?.close();
    expect(read(file)).toEqual(['1:a', '2:b2']);
  });
});
