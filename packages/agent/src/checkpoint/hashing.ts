/** SHA-256 while bytes flow: the digest always describes exactly the bytes that were read. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';

// One definition for the agent and the controller: the shared verified-download module.
export { ContentMismatchError } from '@spotctl/shared';

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
