import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { ContentMismatchError, downloadVerified } from './verified-download.ts';

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'spotctl-vd-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('verified bytes land under the name, with the mtime asked for, and nothing else is left', async () => {
  const data = Buffer.from('the checkpoint');
  const dest = path.join(dir, 'sub/model.bin');
  await downloadVerified({
    source: Readable.from([data]),
    dest,
    expected: { sha256: sha256(data), size: data.length },
    mtimeMs: 1_700_000_000_000,
    durable: true,
  });
  expect(await readFile(dest)).toEqual(data);
  expect((await stat(dest)).mtimeMs).toBe(1_700_000_000_000);
  expect(await readdir(path.join(dir, 'sub'))).toEqual(['model.bin']);
});

test('a mismatch, a source that fails and a source that cannot be opened keep the old file and leave no temp file', async () => {
  const dest = path.join(dir, 'model.bin');
  await writeFile(dest, 'old');
  const good = Buffer.from('new bytes');
  const expected = { sha256: sha256(good), size: good.length };
  for (let i = 0; i < 50; i++) {
    await expect(
      downloadVerified({ source: Readable.from([Buffer.from('new bytez')]), dest, expected, what: 'model.bin' }),
    ).rejects.toThrow(/model\.bin: content does not match its checksum \(sha256 /);
    await expect(downloadVerified({ source: Readable.from([good, good]), dest, expected })).rejects.toBeInstanceOf(ContentMismatchError);
    const failing = new Readable({
      read() {
        this.destroy(new Error('connection reset'));
      },
    });
    await expect(downloadVerified({ source: failing, dest, expected })).rejects.toThrow('connection reset');
    await expect(
      downloadVerified({ source: () => Promise.reject(new Error('NoSuchKey')), dest, expected, tempSuffix: 'pull.tmp' }),
    ).rejects.toThrow('NoSuchKey');
  }
  const aborted = AbortSignal.abort();
  await expect(downloadVerified({ source: Readable.from([good]), dest, expected, signal: aborted })).rejects.toThrow(/abort/i);
  expect(await readdir(dir)).toEqual(['model.bin']);
  expect(await readFile(dest, 'utf8')).toBe('old');
});
