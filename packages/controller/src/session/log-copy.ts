/**
 * The copy of a run's log this machine keeps: every line the controller receives while it follows
 * the run (`run`, `attach`) is appended to `<run folder>/streamed.records`, in the agent's own
 * record format (log-frames.ts), so a foreground run's log is never only on the instance.
 */
import fs from 'node:fs';
import path from 'node:path';
import createDebug from 'debug';
import {
  LogRecordReader,
  MAX_RECORD_HEADER_BYTES,
  encodeRecordHeader,
  parseRecordHeader,
  sliceBatch,
  type LogBatch,
} from '@spotctl/shared';
import type { Output } from '../output/output.ts';

const debug = createDebug('spotctl:log-copy');

export const LOG_COPY_FILE = 'streamed.records';

export function logCopyPath(runDir: string): string {
  return path.join(runDir, LOG_COPY_FILE);
}

/** Walks the records from the start; returns the seq the next one must have and where the whole ones end. */
function scan(fd: number): { nextSeq: number; endOffset: number } {
  const size = fs.fstatSync(fd).size;
  const head = Buffer.allocUnsafe(MAX_RECORD_HEADER_BYTES + 1);
  let pos = 0;
  let nextSeq = 1;
  // Bounded: every pass moves past one whole record or ends the loop.
  while (pos < size) {
    const n = fs.readSync(fd, head, 0, head.length, pos);
    const nl = head.subarray(0, n).indexOf(0x0a);
    if (nl === -1) break;
    const header = parseRecordHeader(head.subarray(0, nl));
    if (!header || header.seq !== nextSeq) break;
    const end = pos + nl + 1 + header.bytes;
    if (end > size) break;
    pos = end;
    nextSeq = header.seq + header.count;
  }
  return { nextSeq, endOffset: pos };
}

/** Appends what a follower receives, contiguously from seq 1; stops quietly at a gap or a write error. */
export class LogCopyWriter implements Disposable {
  #fd: number | undefined;
  #nextSeq: number;

  private constructor(fd: number, nextSeq: number) {
    this.#fd = fd;
    this.#nextSeq = nextSeq;
  }

  /** Opens (or continues) the copy; undefined when the file cannot be written (the run goes on without it). */
  static open(file: string): LogCopyWriter | undefined {
    try {
      const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_APPEND, 0o600);
      const { nextSeq, endOffset } = scan(fd);
      // A record torn by a crash of this machine is dropped; the next write continues after the last whole one.
      fs.ftruncateSync(fd, endOffset);
      return new LogCopyWriter(fd, nextSeq);
    } catch (error) {
      debug('no local copy of the log: %O', error);
      return undefined;
    }
  }

  get nextSeq(): number {
    return this.#nextSeq;
  }

  write(batch: LogBatch): void {
    const fd = this.#fd;
    if (fd === undefined) return;
    const fresh = sliceBatch(batch, this.#nextSeq);
    if (!fresh) return;
    if (fresh.firstSeq !== this.#nextSeq) {
      // `attach --from N` past what the copy holds: lines after a gap could not be numbered on reading.
      debug('gap at seq %d (copy ends before it); not copying further', this.#nextSeq);
      this.close();
      return;
    }
    try {
      for (const s of fresh.segments) {
        fs.writevSync(fd, [
          encodeRecordHeader({ seq: s.firstSeq, count: s.count, ts: s.ts, stream: s.stream, bytes: s.data.length }),
          s.data,
        ]);
        this.#nextSeq = s.firstSeq + s.count;
      }
    } catch (error) {
      debug('writing the local copy failed; not copying further: %O', error);
      this.close();
    }
  }

  close(): void {
    if (this.#fd === undefined) return;
    fs.closeSync(this.#fd);
    this.#fd = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Prints the local copy from `fromSeq` on; returns the last seq it holds (printed or not), or
 * undefined when there is no copy.
 */
export async function printLogCopy(file: string, out: Output, fromSeq: number): Promise<number | undefined> {
  let stream: fs.ReadStream;
  try {
    const handle = await fs.promises.open(file, 'r');
    stream = handle.createReadStream();
  } catch {
    return undefined;
  }
  const reader = new LogRecordReader(fromSeq, (batch) => out.batch(batch));
  for await (const chunk of stream) reader.push(chunk as Buffer);
  return reader.nextSeq - 1;
}
