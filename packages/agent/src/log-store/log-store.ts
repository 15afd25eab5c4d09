/**
 * The job's log: an append-only JSON-lines file (one {@link LogLine} per line) plus a sparse
 * in-memory index, read back through cursors.
 *
 * The file is the buffer. Readers never get a queue of their own: each cursor remembers a seq and a
 * byte offset and reads the committed part of the file in chunks, so a slow or paused client costs
 * one chunk of memory, however far behind it is, and a multi-GB log costs one index entry per
 * `indexEvery` lines.
 */
import fs from 'node:fs';
import { SpotctlError, type LogLine, type LogStream } from '@spotctl/shared';

const NEWLINE = 0x0a;

/** A line to append; the store assigns its seq. */
export interface NewLogLine {
  stream: LogStream;
  text: string;
}

export interface LogStoreOptions {
  /** The JSON-lines file; created if missing, continued if it has lines. */
  path: string;
  /** One index entry per this many lines. @default 1024 */
  indexEvery?: number;
  /** Bytes a cursor reads from the file at once. @default 262144 (256 KiB) */
  readChunkBytes?: number;
  /** Clock for `ts`. @default Date.now */
  now?: () => number;
}

/** Lines a cursor read: complete, newline-terminated JSON lines exactly as they are on disk. */
export interface LogChunk {
  /** `{"seq":..}\n{"seq":..}\n`: `count` lines, each ending in 0x0A. A view into the read buffer. */
  raw: Buffer;
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

export class LogStore implements AsyncDisposable {
  readonly path: string;
  readonly indexEvery: number;
  readonly readChunkBytes: number;
  readonly #now: () => number;
  // Opened 'a+': writes always append (O_APPEND), positional reads serve the cursors.
  readonly #fd: number;
  #lastSeq: number;
  /** Byte length of the committed (fully written) lines. */
  #endOffset: number;
  /** #index[k] = byte offset of the line with seq k * indexEvery + 1. */
  readonly #index: number[];
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
    this.#lastSeq = scan.lineCount;
    this.#endOffset = scan.endOffset;
    this.#index = scan.index;
  }

  /**
   * Opens (or creates) the log. An existing log is scanned once to rebuild the index and find the
   * last seq, so an agent restarted for the same run continues the numbering.
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
      const scan = scanExisting(fd, full.indexEvery);
      return new LogStore(full, fd, scan);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** Bytes of committed lines. */
  get endOffset(): number {
    return this.#endOffset;
  }

  /** Number of index entries held in memory (for tests and health). */
  get indexSize(): number {
    return this.#index.length;
  }

  /**
   * Appends lines with one synchronous write, so when this returns they are in the file and every
   * cursor can read them. Returns the records as written.
   */
  append(lines: readonly NewLogLine[]): LogLine[] {
    if (this.#closed) throw new SpotctlError('SPOTCTL_INTERNAL', 'log store is closed');
    if (lines.length === 0) return [];
    const ts = this.#now();
    const records: LogLine[] = [];
    const parts: string[] = [];
    let offset = this.#endOffset;
    let seq = this.#lastSeq;
    const newIndex: number[] = [];
    for (const line of lines) {
      seq += 1;
      const record: LogLine = { seq, ts, stream: line.stream, text: line.text };
      // Key order matters: `seq` first lets a scan read it without parsing the whole line. Built
      // by hand (only the text needs escaping): stringifying a whole object per line was a
      // quarter of the agent's time under a log flood.
      const json = `{"seq":${seq},"ts":${ts},"stream":"${line.stream}","text":${JSON.stringify(line.text)}}\n`;
      if ((seq - 1) % this.indexEvery === 0) newIndex.push(offset);
      offset += Buffer.byteLength(json);
      parts.push(json);
      records.push(record);
    }
    try {
      writeAll(this.#fd, parts.join(''), offset - this.#endOffset);
    } catch (err) {
      // A short write (disk full) would leave half a line that every later line is glued to.
      try {
        fs.ftruncateSync(this.#fd, this.#endOffset);
      } catch {
        // Nothing more to do; the scan on the next open cuts a torn line too.
      }
      throw err;
    }
    // Only after the write succeeded do readers get to see the lines.
    this.#index.push(...newIndex);
    this.#lastSeq = seq;
    this.#endOffset = offset;
    for (const listener of this.#listeners) listener(seq);
    return records;
  }

  /** Calls `listener` after every append. Returns the unsubscribe function. */
  onAppend(listener: AppendListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A reader positioned at `fromSeq` (0 and 1 both mean the first line). */
  cursor(fromSeq: number): LogCursor {
    const target = Math.max(1, Math.floor(fromSeq));
    const k = Math.min(Math.floor((target - 1) / this.indexEvery), this.#index.length - 1);
    if (k < 0) return new LogCursor(this, target, 1, 0);
    return new LogCursor(this, target, k * this.indexEvery + 1, this.#index[k] ?? 0);
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
 * A position in the log. Reads only committed lines, so it never sees half a line; a line longer
 * than the read chunk is read with a larger buffer.
 */
export class LogCursor {
  readonly #store: LogStore;
  /** Seq of the first line the caller still wants. */
  #wantSeq: number;
  /** Seq of the line that starts at #offset (≤ #wantSeq: the index is sparse). */
  #seqAtOffset: number;
  #offset: number;

  /** @internal use {@link LogStore.cursor} */
  constructor(store: LogStore, wantSeq: number, seqAtOffset: number, offset: number) {
    this.#store = store;
    this.#wantSeq = wantSeq;
    this.#seqAtOffset = seqAtOffset;
    this.#offset = offset;
  }

  /** Seq of the next line {@link read} will return. */
  get nextSeq(): number {
    return this.#wantSeq;
  }

  /**
   * Reads the next lines, at most one chunk's worth. Resolves null when there is nothing (yet) up
   * to `untilSeq`.
   */
  async read(options: ReadOptions = {}): Promise<LogChunk | null> {
    const maxLines = options.maxLines ?? Number.POSITIVE_INFINITY;
    if (maxLines < 1) return null;
    for (;;) {
      // Snapshot: lines and bytes are committed together, synchronously, in append().
      const limitSeq = Math.min(options.untilSeq ?? Number.POSITIVE_INFINITY, this.#store.lastSeq);
      const endOffset = this.#store.endOffset;
      if (this.#wantSeq > limitSeq || this.#offset >= endOffset) return null;
      const chunk = await this.#readLines(endOffset);
      // Walk the lines; skip those before #wantSeq (the index points up to indexEvery-1 lines early).
      let pos = 0;
      let firstStart = -1;
      let lastEnd = -1;
      let count = 0;
      let firstSeq = 0;
      while (pos < chunk.length) {
        const nl = chunk.indexOf(NEWLINE, pos);
        if (nl === -1) break;
        const seq = this.#seqAtOffset;
        if (seq > limitSeq || count >= maxLines) break;
        if (seq >= this.#wantSeq) {
          if (firstStart === -1) {
            firstStart = pos;
            firstSeq = seq;
          }
          lastEnd = nl + 1;
          count += 1;
          this.#wantSeq = seq + 1;
        }
        this.#seqAtOffset += 1;
        this.#offset += nl + 1 - pos;
        pos = nl + 1;
      }
      if (count > 0) {
        // A view, not a copy: the server copies it into a frame at once, so one chunk-sized
        // buffer per read is all the garbage a subscriber makes.
        return { raw: chunk.subarray(firstStart, lastEnd), count, firstSeq, lastSeq: this.#wantSeq - 1 };
      }
      // Only skipped lines in this chunk: read on.
    }
  }

  /** Reads from #offset to at most endOffset, growing the buffer until it holds a whole line. */
  async #readLines(endOffset: number): Promise<Buffer> {
    let size = Math.min(this.#store.readChunkBytes, endOffset - this.#offset);
    for (;;) {
      const buffer = Buffer.allocUnsafe(size);
      const n = await this.#store.readAt(buffer, size, this.#offset);
      const data = buffer.subarray(0, n);
      const lastNl = data.lastIndexOf(NEWLINE);
      if (lastNl !== -1) return data.subarray(0, lastNl + 1);
      if (this.#offset + n >= endOffset) {
        // Cannot happen while the committed region ends in a newline; fail loudly instead of looping.
        throw new SpotctlError('SPOTCTL_INTERNAL', `log ${this.#store.path}: no line end after offset ${this.#offset}`);
      }
      size = Math.min(size * 2, endOffset - this.#offset);
    }
  }
}

interface ScanResult {
  lineCount: number;
  endOffset: number;
  index: number[];
}

/**
 * Counts the lines of an existing log and rebuilds the index. A torn last line (the agent died in
 * the middle of a write) is cut off, so appending continues on a clean line boundary.
 */
function scanExisting(fd: number, indexEvery: number): ScanResult {
  const size = fs.fstatSync(fd).size;
  const index: number[] = [];
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let lineCount = 0;
  let lineStart = 0;
  let position = 0;
  let lastLineStart = -1;
  while (position < size) {
    const n = fs.readSync(fd, buffer, 0, Math.min(buffer.length, size - position), position);
    if (n === 0) break;
    let pos = 0;
    for (;;) {
      const nl = buffer.indexOf(NEWLINE, pos);
      if (nl === -1 || nl >= n) break;
      if (lineCount % indexEvery === 0) index.push(lineStart);
      lastLineStart = lineStart;
      lineCount += 1;
      lineStart = position + nl + 1;
      pos = nl + 1;
    }
    position += n;
  }
  if (lineStart < size) fs.ftruncateSync(fd, lineStart);
  if (lineCount > 0) {
    // seq must equal the line number; anything else means the file is not ours or was edited.
    const first = readSeqAt(fd, 0);
    const last = readSeqAt(fd, lastLineStart);
    if (first !== 1 || last !== lineCount) {
      throw new SpotctlError(
        'SPOTCTL_INTERNAL',
        `log file has ${lineCount} lines but its seqs run ${first ?? '?'}..${last ?? '?'}; move it away to start a fresh log`,
      );
    }
  }
  return { lineCount, endOffset: lineStart, index };
}

function readSeqAt(fd: number, offset: number): number | undefined {
  const buffer = Buffer.alloc(32);
  const n = fs.readSync(fd, buffer, 0, buffer.length, offset);
  const m = /^\{"seq":(\d+),/.exec(buffer.subarray(0, n).toString('latin1'));
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** One write(2) in the normal case; the rare short write finishes with the remaining bytes. */
function writeAll(fd: number, text: string, byteLength: number): void {
  const written = fs.writeSync(fd, text);
  if (written === byteLength) return;
  const data = Buffer.from(text, 'utf8');
  let done = written;
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done);
}
