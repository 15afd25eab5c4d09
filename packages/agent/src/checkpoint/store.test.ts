import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { ContentMismatchError } from './hashing.ts';
import { safeJoin } from './restore.ts';
import { isRetryableError, retryWithBackoff } from './retry.ts';
import { DirObjectStore, describeTarget } from './store.ts';

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

describe('DirObjectStore', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'spotctl-dirstore-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('puts files and buffers, lists keys under a prefix, skips temp names', async () => {
    const store = new DirObjectStore({ root });
    const src = path.join(root, 'src.bin');
    await writeFile(src, 'hello');
    await store.put('p/run/objects/a', src, { sha256: sha('hello'), size: 5 });
    await store.put('p/run/manifests/0000000001.json', Buffer.from('{}'), { sha256: sha('{}'), size: 2 });
    await writeFile(path.join(root, 'p/run/objects/.a.123.tmp'), 'half');
    expect((await store.list('p/run/')).sort()).toEqual(['p/run/manifests/0000000001.json', 'p/run/objects/a']);
    expect(await store.list('p/run/manifests/')).toEqual(['p/run/manifests/0000000001.json']);
    expect(await store.list('p/other/')).toEqual([]);
    expect(await store.head('p/run/objects/a')).toEqual({ size: 5 });
    expect(await store.exists('p/run/objects/b')).toBe(false);
    await expect(store.get('p/run/objects/b')).rejects.toMatchObject({ name: 'NoSuchKey' });
  });

  test('a body that does not match its checksum leaves nothing behind', async () => {
    const store = new DirObjectStore({ root });
    await expect(store.put('o/x', Buffer.from('abc'), { sha256: sha('abd'), size: 3 })).rejects.toBeInstanceOf(ContentMismatchError);
    await expect(store.put('o/y', Buffer.from('abcd'), { sha256: sha('abc'), size: 3 })).rejects.toBeInstanceOf(ContentMismatchError);
    expect(await readdir(path.join(root, 'o'))).toEqual([]);
    await expect(store.put('../x', Buffer.from(''), { sha256: sha(''), size: 0 })).rejects.toThrow(/invalid key/);
  });
});

test('describeTarget', () => {
  expect(describeTarget({ kind: 's3', bucket: 'bkt', prefix: '/a/b/' }, 'r1')).toBe('s3://bkt/a/b/r1/');
  expect(describeTarget({ kind: 's3', bucket: 'bkt', prefix: '' }, 'r1')).toBe('s3://bkt/r1/');
});

test('safeJoin keeps manifest paths inside the folder', () => {
  expect(safeJoin('/d', 'a/b.bin')).toBe(path.join('/d', 'a', 'b.bin'));
  for (const bad of ['', '/etc/passwd', '../x', 'a/../../x', 'a//b', './a', 'a\\b']) expect(safeJoin('/d', bad)).toBeUndefined();
});

describe('retries', () => {
  test('transient failures are retried, configuration errors and mismatches are not', () => {
    const http = (status: number, name = 'Error') => Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
    expect(isRetryableError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isRetryableError(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isRetryableError(http(503, 'SlowDown'))).toBe(true);
    expect(isRetryableError(http(500))).toBe(true);
    expect(isRetryableError(http(404, 'NoSuchUpload'))).toBe(true);
    expect(isRetryableError(http(404, 'NoSuchBucket'))).toBe(false);
    expect(isRetryableError(http(403, 'AccessDenied'))).toBe(false);
    expect(isRetryableError(Object.assign(new Error('gone'), { code: 'ENOENT' }))).toBe(false);
    expect(isRetryableError(new ContentMismatchError('f', { sha256: 'a', size: 1 }, { sha256: 'b', size: 1 }))).toBe(false);
    expect(isRetryableError(Object.assign(new Error('aborted'), { name: 'AbortError' }))).toBe(false);
  });

  test('retryWithBackoff stops at success, at a permanent error, and when its time is up', async () => {
    let calls = 0;
    const refused = Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
    await expect(
      retryWithBackoff(
        async () => {
          if (++calls < 3) throw refused;
          return 'ok';
        },
        { what: 't', retryForMs: 10_000, initialDelayMs: 1 },
      ),
    ).resolves.toBe('ok');
    expect(calls).toBe(3);
    calls = 0;
    const denied = Object.assign(new Error('denied'), { $metadata: { httpStatusCode: 403 } });
    await expect(
      retryWithBackoff(
        async () => {
          calls++;
          throw denied;
        },
        { what: 't', retryForMs: 10_000, initialDelayMs: 1 },
      ),
    ).rejects.toBe(denied);
    expect(calls).toBe(1);
    // Every wait is at least half its backoff (5, 10, 20, 20, … ms) and all waits fit in the
    // 200 ms budget, so at most 12 attempts fit; a slow machine only makes fewer. A retry that
    // ignored its budget would go on until the test's timeout.
    calls = 0;
    await expect(
      retryWithBackoff(
        () => {
          calls++;
          return Promise.reject(refused);
        },
        { what: 't', retryForMs: 200, initialDelayMs: 10, maxDelayMs: 40 },
      ),
    ).rejects.toBe(refused);
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(calls).toBeLessThanOrEqual(12);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await expect(
      retryWithBackoff(() => Promise.reject(refused), { what: 't', retryForMs: 60_000, initialDelayMs: 20, signal: controller.signal }),
    ).rejects.toThrow();
  });
});
