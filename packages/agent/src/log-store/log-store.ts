/**
 * The job's log: an append-only file of records plus a sparse in-memory index, read back through
 * cursors.
 *
 * A record is one chunk of the job's output as it came from the pipe: a one-line JSON header
 * (`{"seq":..,"count":..,"ts":..,"stream":..,"bytes":..}`, see `@spotctl/shared` log-frames) and
 * then the lines' bytes untouched, each ending in '\n'. Per-line JSON cost the agent a
 * JSON.stringify and a string per line; a record costs one header and one write(2) per chunk.
 *
 * The file is the buffer. Readers never get a queue of their own: each cursor remembers a seq and
 * a byte offset and reads the committed part of the file in chunks into one reused buffer, so a
 * slow or paused client costs one chunk of memory, however far behind it is, and a multi-GB log
 * costs one index entry per `indexEvery` lines at most.
 */
import fs from 'node:fs';
import {
  MAX_RECORD_HEADER_BYTES,
  afterLine,
  SpotctlError,
  encodeRecordHeader,
  linesData,
  parseRecordHeader,
  type LogLine,
  type LogSegment,
  type LogStream,
} from '@spotctl/shared';

const NEWLINE = 0x0a;

/** A line to append; the store assigns its seq. */
export interface NewLogLine {
  stream: LogStream;
  text: string;
}

export interface LogStoreOptions {
  /** The log file; created if missing, continued if it has records. */
  path: string;
  /** At most one index entry per this many lines (entries point at record starts). @default 1024 */
  indexEvery?: number;
  /** Bytes a cursor reads from the file at once (its reused buffer). @default 262144 (256 KiB) */
  readChunkBytes?: number;
  /** Clock for `ts`. @default Date.now */
  now?: () => number;
}

/** Lines a cursor read, in segments whose `data` are views into the cursor's buffer. */
export interface LogChunk {
  /** Valid until the cursor's next read(): copy (e.g. into a frame) before reading again. */
  segments: LogSegment[];
  count: number;
  firstSeq: number;
  lastSeq: number;
}

export interface ReadOptions {
  /** @default Infinity */
  maxLines?: number;
  /** Do not return lines after this seq. @default the store's last seq */
  untilSeq?: number;
}

type AppendListener = (lastSeq: number) => void;

/**
 * A record just appended. `data` are the caller's buffers: valid only as long as the caller
 * keeps them (the supervisor's pipe buffer is reused after the call returns).
 */
export interface AppendedRecord {
  firstSeq: number;
  lastSeq: number;
  count: number;
  ts: number;
  stream: LogStream;
  data: readonly Buffer[];
  /** Byte offsets of the record in the file. */
  startOffset: number;
  endOffset: number;
}

export class LogStore implements AsyncDisposable {
  readonly path: string;
  readonly indexEvery: number;
  readonly readChunkBytes: number;
  readonly #now: () => number;
  // Opened 'a+': writes always append (O_APPEND), positional reads serve the cursors.
  readonly #fd: number;
  #lastSeq: number;
  /** Byte length of the committed (fully written) records. */
  #endOffset: number;
  /** Parallel arrays: record k of the index starts at byte #indexOffset[k] with seq #indexSeq[k]. */
  readonly #indexSeq: number[];
  readonly #indexOffset: number[];
  readonly #listeners = new Set<AppendListener>();
  #closed = false;
  #readsInFlight = 0;
  #readsDrained: (() => void) | undefined;

  private constructor(options: Required<LogStoreOptions>, fd: number, scan: ScanResult) {
    this.path = options.path;
    this.indexEvery = options.indexEvery;
    this.readChunkBytes = options.readChunkBytes;
    this.#now = options.now;
    this.#fd = fd;
    this.#lastSeq = scan.lastSeq;
    this.#endOffset = scan.endOffset;
    this.#indexSeq = scan.indexSeq;
    this.#indexOffset = scan.indexOffset;
  }

  /**
   * Opens (or creates) the log. An existing log is scanned once (record headers only) to rebuild
   * the index and find the last seq, so an agent restarted for the same run continues the numbering.
   */
  static open(options: LogStoreOptions): LogStore {
    const full: Required<LogStoreOptions> = {
      indexEvery: 1024,
      readChunkBytes: 256 * 1024,
      now: Date.now,
      ...options,
    };
    const fd = fs.openSync(full.path, 'a+');
    try {
      const scan = scanExisting(fd, full.path, full.indexEvery);
      return new LogStore(full, fd, scan);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** Bytes of committed records. */
  get endOffset(): number {
    return this.#endOffset;
  }

  /** Number of index entries held in memory (for tests and health). */
  get indexSize(): number {
    return this.#indexSeq.length;
  }

  /**
   * Appends `count` lines of one stream given as bytes (each line ending in '\n', none containing
   * another; in pieces or not) as one record, with one synchronous writev: when this returns they
   * are in the file and every cursor can read them.
   */
  appendBlock(stream: LogStream, data: Buffer | readonly Buffer[], count: number): AppendedRecord {
    if (this.#closed) throw new SpotctlError('SPOTCTL_INTERNAL', 'log store is closed');
    const seq = this.#lastSeq + 1;
    const pieces = Buffer.isBuffer(data) ? [data] : data;
    let bytes = 0;
    for (const piece of pieces) bytes += piece.length;
    const ts = this.#now();
    const header = encodeRecordHeader({ seq, count, ts, stream, bytes });
    const start = this.#endOffset;
    try {
      writeAll(this.#fd, [header, ...pieces], header.length + bytes);
    } catch (err) {
      // A short write (disk full) would leave half a record that every later one is glued to.
      try {
        fs.ftruncateSync(this.#fd, start);
      } catch {
        // Nothing more to do; the scan on the next open cuts a torn record too.
      }
      throw err;
    }
    // Only after the write succeeded do readers get to see the lines.
    const lastIndexed = this.#indexSeq[this.#indexSeq.length - 1];
    if (lastIndexed === undefined || seq - lastIndexed >= this.indexEvery) {
      this.#indexSeq.push(seq);
      this.#indexOffset.push(start);
    }
    this.#lastSeq = seq + count - 1;
    this.#endOffset = start + header.length + bytes;
    for (const listener of this.#listeners) listener(this.#lastSeq);
    return { firstSeq: seq, lastSeq: this.#lastSeq, count, ts, stream, data: pieces, startOffset: start, endOffset: this.#endOffset };
  }

  /**
   * Appends text lines (spotctl's own `system` lines, tests), one record per run of one stream.
   * A text holding a newline becomes several lines. Returns the lines as stored.
   */
  append(lines: readonly NewLogLine[]): LogLine[] {
    if (this.#closed) throw new SpotctlError('SPOTCTL_INTERNAL', 'log store is closed');
    const written: LogLine[] = [];
    const ts = this.#now();
    let i = 0;
    while (i < lines.length) {
      const stream = (lines[i] as NewLogLine).stream;
      const texts: string[] = [];
      for (; i < lines.length && (lines[i] as NewLogLine).stream === stream; i++) texts.push(...(lines[i] as NewLogLine).text.split('\n'));
      const { firstSeq } = this.appendBlock(stream, linesData(texts), texts.length);
      texts.forEach((text, k) => written.push({ seq: firstSeq + k, ts, stream, text }));
    }
    return written;
  }

  /** Calls `listener` after every append. Returns the unsubscribe function. */
  onAppend(listener: AppendListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A reader positioned at `fromSeq` (0 and 1 both mean the first line). */
  cursor(fromSeq: number): LogCursor {
    const target = Math.max(1, Math.floor(fromSeq));
    // Last index entry at or before target (binary search; the seqs are increasing).
    let lo = 0;
    let hi = this.#indexSeq.length - 1;
    let k = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if ((this.#indexSeq[mid] as number) <= target) {
        k = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (k < 0) return new LogCursor(this, target, 1, 0);
    return new LogCursor(this, target, this.#indexSeq[k] as number, this.#indexOffset[k] as number);
  }

  /** @internal Positional read used by cursors; returns the bytes read. */
  async readAt(buffer: Buffer, length: number, position: number): Promise<number> {
    if (this.#closed) throw new SpotctlError('SPOTCTL_INTERNAL', 'log store is closed');
    this.#readsInFlight += 1;
    try {
      let done = 0;
      while (done < length) {
        const n = await new Promise<number>((resolve, reject) => {
          fs.read(this.#fd, buffer, done, length - done, position + done, (err, bytes) => (err ? reject(err) : resolve(bytes)));
        });
        if (n === 0) break;
        done += n;
      }
      return done;
    } finally {
      this.#readsInFlight -= 1;
      if (this.#readsInFlight === 0) this.#readsDrained?.();
    }
  }

  /** Idempotent. Waits for reads in flight, since a closed fd number can be reused for another file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listeners.clear();
    if (this.#readsInFlight > 0) await new Promise<void>((resolve) => (this.#readsDrained = resolve));
    fs.closeSync(this.#fd);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * A position in the log. Reads only committed records, so it never sees half a line; a record
 * larger than the read chunk is read with a larger (temporary) buffer.
 */
export class LogCursor {
  readonly #store: LogStore;
  /** Seq of the first line the caller still wants. */
  #wantSeq: number;
  /** Seq of the first line of the record that starts at #offset (≤ #wantSeq: the index is sparse). */
  #recordSeq: number;
  #offset: number;
  /** The read buffer, reused from read to read: a follower makes no garbage per chunk. */
  #buffer: Buffer | undefined;

  /** @internal use {@link LogStore.cursor} */
  constructor(store: LogStore, wantSeq: number, recordSeq: number, offset: number) {
    this.#store = store;
    this.#wantSeq = wantSeq;
    this.#recordSeq = recordSeq;
    this.#offset = offset;
  }

  /** Seq of the next line {@link read} will return. */
  get nextSeq(): number {
    return this.#wantSeq;
  }

  /**
   * Reads the next lines, at most one chunk's worth (or the one record that starts it). Resolves
   * null when there is nothing (yet) up to `untilSeq`. The segments are views into this cursor's
   * buffer, valid until the next call.
   */
  async read(options: ReadOptions = {}): Promise<LogChunk | null> {
    const maxLines = options.maxLines ?? Number.POSITIVE_INFINITY;
    if (maxLines < 1) return null;
    let size = this.#store.readChunkBytes;
    for (;;) {
      // Snapshot: lines and bytes are committed together, synchronously, in appendBlock().
      const limitSeq = Math.min(options.untilSeq ?? Number.POSITIVE_INFINITY, this.#store.lastSeq);
      const endOffset = this.#store.endOffset;
      if (this.#wantSeq > limitSeq || this.#offset >= endOffset) return null;
      const length = Math.min(size, endOffset - this.#offset);
      const buffer = this.#bufferFor(length);
      const n = await this.#store.readAt(buffer, length, this.#offset);
      const data = buffer.subarray(0, n);
      const segments: LogSegment[] = [];
      let taken = 0;
      let pos = 0;
      let needBytes = 0;
      while (pos < data.length && taken < maxLines && this.#wantSeq <= limitSeq) {
        const nl = data.indexOf(NEWLINE, pos);
        if (nl === -1 || nl - pos > MAX_RECORD_HEADER_BYTES) {
          if (nl === -1 && data.length - pos <= MAX_RECORD_HEADER_BYTES) {
            // The header is cut by the end of what was read.
            needBytes = data.length - pos + MAX_RECORD_HEADER_BYTES + 1;
            break;
          }
          throw this.#corrupt(`no record header at byte ${this.#offset}`);
        }
        const header = parseRecordHeader(data.subarray(pos, nl));
        if (!header || header.seq !== this.#recordSeq)
          throw this.#corrupt(`no record header for seq ${this.#recordSeq} at byte ${this.#offset}`);
        const recordEnd = nl + 1 + header.bytes;
        if (recordEnd > data.length) {
          needBytes = recordEnd - pos;
          break;
        }
        const recordLast = header.seq + header.count - 1;
        if (recordLast >= this.#wantSeq) {
          const payload = data.subarray(nl + 1, recordEnd);
          const from = this.#wantSeq;
          const to = Math.min(recordLast, limitSeq, from + (maxLines - taken) - 1);
          const startByte = from === header.seq ? 0 : afterLine(payload, from - header.seq);
          const endByte = to === recordLast ? payload.length : afterLine(payload, to - header.seq + 1);
          if (startByte < 0 || endByte < 0) throw this.#corrupt(`record at seq ${header.seq} holds fewer than ${header.count} lines`);
          segments.push({
            firstSeq: from,
            count: to - from + 1,
            ts: header.ts,
            stream: header.stream,
            data: payload.subarray(startByte, endByte),
          });
          taken += to - from + 1;
          this.#wantSeq = to + 1;
          // A record taken in part: stay on it, the next read skips what was taken.
          if (to < recordLast) break;
        }
        this.#offset += recordEnd - pos;
        this.#recordSeq = recordLast + 1;
        pos = recordEnd;
      }
      if (segments.length > 0) {
        const first = segments[0] as LogSegment;
        return { segments, count: taken, firstSeq: first.firstSeq, lastSeq: this.#wantSeq - 1 };
      }
      // Nothing taken: either only skipped records (read on from the new offset), or the record
      // at the offset is bigger than what was read (read it whole).
      if (needBytes > 0 && pos === 0) {
        if (n >= endOffset - this.#offset) throw this.#corrupt(`record at byte ${this.#offset} runs past the committed end`);
        size = Math.max(size * 2, needBytes);
      }
    }
  }

  /**
   * Moves past a record that was just appended, when this cursor is exactly at its start: the
   * caller has its lines in memory and sends them without reading them back. False (and no
   * move) otherwise.
   */
  skip(record: AppendedRecord): boolean {
    if (this.#offset !== record.startOffset || this.#wantSeq !== record.firstSeq || this.#recordSeq !== record.firstSeq) return false;
    this.#offset = record.endOffset;
    this.#recordSeq = record.lastSeq + 1;
    this.#wantSeq = record.lastSeq + 1;
    return true;
  }

  #bufferFor(length: number): Buffer {
    // Only the usual chunk size is kept; a rare larger record gets a buffer of its own.
    if (length > this.#store.readChunkBytes) return Buffer.allocUnsafe(length);
    this.#buffer ??= Buffer.allocUnsafe(this.#store.readChunkBytes);
    return this.#buffer;
  }

  #corrupt(detail: string): SpotctlError {
    return new SpotctlError('SPOTCTL_INTERNAL', `log ${this.#store.path}: ${detail}`);
  }
}

interface ScanResult {
  lastSeq: number;
  endOffset: number;
  indexSeq: number[];
  indexOffset: number[];
}

/**
 * Walks the record headers of an existing log (skipping the lines themselves) and rebuilds the
 * index. A torn last record (the agent died in the middle of a write) is cut off, so appending
 * continues on a record boundary. Anything else that is not a record refuses the file.
 */
function scanExisting(fd: number, file: string, indexEvery: number): ScanResult {
  const size = fs.fstatSync(fd).size;
  const result: ScanResult = { lastSeq: 0, endOffset: 0, indexSeq: [], indexOffset: [] };
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let bufferStart = 0;
  let bufferEnd = 0;
  /** Makes [at, at + want) (or up to the file's end) present in the buffer; returns its index there. */
  const ensure = (at: number, want: number): number => {
    if (at < bufferStart || at + Math.min(want, size - at) > bufferEnd) {
      const n = fs.readSync(fd, buffer, 0, Math.min(buffer.length, size - at), at);
      bufferStart = at;
      bufferEnd = at + n;
    }
    return at - bufferStart;
  };
  const refuse = (detail: string) =>
    new SpotctlError('SPOTCTL_INTERNAL', `log file ${file} is not a spotctl log (${detail}); move it away to start a fresh log`);
  let pos = 0;
  let seq = 1;
  while (pos < size) {
    const i = ensure(pos, MAX_RECORD_HEADER_BYTES + 1);
    const nl = buffer.indexOf(NEWLINE, i);
    const headerEnd = nl === -1 || nl >= bufferEnd - bufferStart ? -1 : nl;
    if (headerEnd === -1 || headerEnd - i > MAX_RECORD_HEADER_BYTES) {
      if (headerEnd === -1 && size - pos <= MAX_RECORD_HEADER_BYTES) break; // torn header
      throw refuse(`no record header at byte ${pos}`);
    }
    const header = parseRecordHeader(buffer.subarray(i, headerEnd));
    if (!header) throw refuse(`no record header at byte ${pos}`);
    if (header.seq !== seq) throw refuse(`record at byte ${pos} starts at seq ${header.seq}, expected ${seq}`);
    const recordEnd = pos + (headerEnd - i) + 1 + header.bytes;
    if (recordEnd > size) break; // torn lines
    if (buffer[ensure(recordEnd - 1, 1)] !== NEWLINE) throw refuse(`record at seq ${seq} does not end with a line end`);
    const lastIndexed = result.indexSeq[result.indexSeq.length - 1];
    if (lastIndexed === undefined || seq - lastIndexed >= indexEvery) {
      result.indexSeq.push(seq);
      result.indexOffset.push(pos);
    }
    seq += header.count;
    pos = recordEnd;
  }
  if (pos < size) fs.ftruncateSync(fd, pos);
  result.lastSeq = seq - 1;
  result.endOffset = pos;
  return result;
}

/** One writev(2) in the normal case; the rare short write finishes with the remaining bytes. */
function writeAll(fd: number, pieces: Buffer[], total: number): void {
  let done = fs.writevSync(fd, pieces);
  while (done < total) {
    // Drop what was written and write the rest.
    let skip = done;
    const rest: Buffer[] = [];
    for (const piece of pieces) {
      if (skip >= piece.length) skip -= piece.length;
      else {
        rest.push(skip > 0 ? piece.subarray(skip) : piece);
        skip = 0;
      }
    }
    done += fs.writevSync(fd, rest);
  }
}
