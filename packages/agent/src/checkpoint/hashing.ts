/** SHA-256 while bytes flow: the digest always describes exactly the bytes that were read. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * The bytes read from a file were not the bytes that were hashed before: the file changed between
 * the hash and the upload (or the download does not match its manifest). The upload is abandoned
 * before it completes, so a content-addressed key never holds other content than its name says.
 */
export class ContentMismatchError extends Error {
  readonly expected: { sha256: string; size: number };
  readonly actual: { sha256: string | undefined; size: number };

  constructor(what: string, expected: { sha256: string; size: number }, actual: { sha256: string | undefined; size: number }) {
    const detail =
      actual.size !== expected.size
        ? `${actual.size} bytes instead of ${expected.size}`
        : `sha256 ${actual.sha256 ?? '?'} instead of ${expected.sha256}`;
    super(`${what}: content does not match its checksum (${detail})`);
    this.name = 'ContentMismatchError';
    this.expected = expected;
    this.actual = actual;
  }
}

/**
 * A pass-through that hashes and counts, and fails the stream at its end (before the consumer sees
 * the end) when the bytes differ from `expected`. It also fails as soon as more bytes than expected
 * arrive, so a file that grows is not read to its new end.
 */
export class VerifyingStream extends Transform {
  readonly #hash = createHash('sha256');
  readonly #expected: { sha256: string; size: number };
  readonly #what: string;
  #bytes = 0;

  constructor(what: string, expected: { sha256: string; size: number }) {
    super();
    this.#what = what;
    this.#expected = expected;
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

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The `x-amz-checksum-sha256` form of a hex digest: base64 of the 32 raw bytes. */
export function sha256Base64(hex: string): string {
  return Buffer.from(hex, 'hex').toString('base64');
}

/** Streams a file through SHA-256; memory stays at one read buffer whatever the size. */
export async function hashFile(file: string, signal?: AbortSignal): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  await pipeline(
    createReadStream(file, { highWaterMark: 1024 * 1024 }),
    async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) {
        size += chunk.length;
        hash.update(chunk);
      }
    },
    signal ? { signal } : {},
  );
  return { sha256: hash.digest('hex'), size };
}
