/**
 * One way to put downloaded bytes in a file, used by the agent's restore, its directory store's
 * `put` and the controller's `checkpoints pull`: stream → temp file → SHA-256 and size check →
 * rename into place. The temp file is opened before any byte flows and removed on every failure
 * only once its handle is closed. (With `createWriteStream(tmp)` the open ran asynchronously: a
 * verification that failed first rejected the pipeline, the cleanup's unlink ran, and the late open
 * then created the file, leaving `.x.<hex>.restore.tmp` behind.) Pure Node, no dependencies.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface ExpectedContent {
  sha256: string;
  size: number;
}

/**
 * The bytes read were not the bytes that were hashed before: a file changed between its hash and
 * its upload, or a download does not match its manifest. A content-addressed key must never hold
 * other content than its name says, so nothing is kept.
 */
export class ContentMismatchError extends Error {
  readonly expected: ExpectedContent;
  readonly actual: { sha256: string | undefined; size: number };
  /** What differs, e.g. `100 bytes instead of 20000`. */
  readonly detail: string;

  constructor(what: string, expected: ExpectedContent, actual: { sha256: string | undefined; size: number }) {
    const detail =
      actual.size !== expected.size
        ? `${actual.size} bytes instead of ${expected.size}`
        : `sha256 ${actual.sha256 ?? '?'} instead of ${expected.sha256}`;
    super(`${what}: content does not match its checksum (${detail})`);
    this.name = 'ContentMismatchError';
    this.expected = expected;
    this.actual = actual;
    this.detail = detail;
  }
}

/**
 * A pass-through that hashes and counts, and fails the stream at its end (before the consumer sees
 * the end) when the bytes differ from `expected`. It also fails as soon as more bytes than expected
 * arrive, so a source that grows is not read to its new end.
 */
export class VerifyingStream extends Transform {
  readonly #hash = createHash('sha256');
  readonly #expected: ExpectedContent;
  readonly #what: string;
  #bytes = 0;

  constructor(what: string, expected: ExpectedContent) {
    super();
    this.#what = what;
    this.#expected = { sha256: expected.sha256, size: expected.size };
  }

  get bytes(): number {
    return this.#bytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#expected.size) {
      callback(new ContentMismatchError(this.#what, this.#expected, { sha256: undefined, size: this.#bytes }));
      return;
    }
    this.#hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const sha256 = this.#hash.digest('hex');
    if (this.#bytes !== this.#expected.size || sha256 !== this.#expected.sha256) {
      callback(new ContentMismatchError(this.#what, this.#expected, { sha256, size: this.#bytes }));
      return;
    }
    callback();
  }
}

export interface VerifiedDownloadOptions {
  /** The bytes: a stream, or a function that opens one (called after the temp file is open). */
  source: Readable | (() => Promise<Readable>);
  /** Where the file ends up; its folder is created when missing. An existing file is replaced. */
  dest: string;
  expected: ExpectedContent;
  /** Names the file in a `ContentMismatchError`. @default dest */
  what?: string;
  /** The temp name is `.<dest name>.<12 hex>.<tempSuffix>` next to `dest` (a dot name: watchers skip it). @default 'tmp' */
  tempSuffix?: string;
  /** Set the file's mtime (ms since the epoch) before it is renamed into place. @default unchanged */
  mtimeMs?: number;
  /** fsync before the rename, so after a crash the name holds the whole file or nothing. @default false */
  durable?: boolean;
  signal?: AbortSignal | undefined;
}

async function writeAll(handle: FileHandle, chunk: Buffer): Promise<void> {
  // Bounded: every pass writes at least one byte or throws.
  for (let done = 0; done < chunk.length;) {
    const { bytesWritten } = await handle.write(chunk, done, chunk.length - done);
    if (bytesWritten <= 0) throw new Error('write made no progress');
    done += bytesWritten;
  }
}

/**
 * Streams `source` into a temp file next to `dest`, checks size and SHA-256, and renames it into
 * place. On any failure (mismatch, source error, abort) the temp file is removed after its handle
 * is closed, and the error is rethrown; `dest` is left as it was.
 */
export async function downloadVerified(options: VerifiedDownloadOptions): Promise<void> {
  const { dest, expected, signal } = options;
  const dir = path.dirname(dest);
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(dest)}.${randomBytes(6).toString('hex')}.${options.tempSuffix ?? 'tmp'}`);
  // 'wx': the name is ours alone; the file exists from here on, so cleanup below always finds it.
  const handle = await open(tmp, 'wx');
  let closed = false;
  try {
    const source = typeof options.source === 'function' ? await options.source() : options.source;
    await pipeline(
      source,
      new VerifyingStream(options.what ?? dest, expected),
      async (verified: AsyncIterable<Buffer>) => {
        for await (const chunk of verified) await writeAll(handle, chunk);
      },
      signal ? { signal } : {},
    );
    if (options.mtimeMs !== undefined) {
      const mtime = new Date(options.mtimeMs);
      await handle.utimes(mtime, mtime).catch(() => undefined);
    }
    if (options.durable) await handle.sync();
    closed = true;
    await handle.close();
    await rename(tmp, dest);
  } catch (err) {
    // close() waits for any write still in flight on the handle, so nothing touches the file after
    // the unlink.
    if (!closed) await handle.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}
