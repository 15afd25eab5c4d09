/**
 * Log lines in bulk: the agent's on-disk records and the binary `logs` frame on the wire.
 *
 * Per-line JSON (one `{seq, ts, stream, text}` object per line, stringified by the agent, parsed
 * and validated one by one by the controller) cost far more CPU than moving the bytes. Both
 * formats here carry a run of lines as their raw bytes (each line ending in 0x0A) plus one small
 * JSON header per run, validated once: `seq` is implied by the position of a line in the run.
 *
 * A line never contains 0x0A: the agent splits the job's output on it. So in a run of `count`
 * lines there are exactly `count` newlines, the last byte being one of them.
 */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { LogStream, type LogLine, type Parsed } from './protocol.ts';

const NEWLINE = 0x0a;

const Count = Type.Integer({ minimum: 1 });
const EpochMs = Type.Integer({ minimum: 0 });

// ---------------------------------------------------------------------------------------------
// Storage: the agent's log file

/**
 * The header of one record in the log file, on a line of its own, followed by `bytes` bytes
 * holding `count` lines. Key order is fixed (`seq` first) so a scan can read it cheaply.
 * `{"seq":1,"count":2,"ts":1700000000000,"stream":"stdout","bytes":6}\nabc\nde\n`
 */
export const LogRecordHeader = Type.Object(
  { seq: Count, count: Count, ts: EpochMs, stream: LogStream, bytes: Count },
  { additionalProperties: false },
);
export type LogRecordHeader = Static<typeof LogRecordHeader>;

const recordHeaderCheck = TypeCompiler.Compile(LogRecordHeader);

/** A header line longer than this is not one of ours (the real ones are < 100 bytes). */
export const MAX_RECORD_HEADER_BYTES = 256;

export function encodeRecordHeader(h: LogRecordHeader): Buffer {
  return Buffer.from(`{"seq":${h.seq},"count":${h.count},"ts":${h.ts},"stream":"${h.stream}","bytes":${h.bytes}}\n`, 'latin1');
}

/** Parses a record header line (without its newline); undefined when it is not a valid one. */
export function parseRecordHeader(line: Buffer | string): LogRecordHeader | undefined {
  let value: unknown;
  try {
    value = JSON.parse(typeof line === 'string' ? line : line.toString('latin1'));
  } catch {
    return undefined;
  }
  if (!recordHeaderCheck.Check(value)) return undefined;
  return value.bytes >= value.count ? value : undefined;
}

/**
 * Reads a stream of records (a log file, in chunks split anywhere) and hands out the lines from
 * `fromSeq` on as batches. A torn record at the end (the agent died mid-write) is left out;
 * anything that is not a record is an error, since the lines after it could not be numbered.
 */
export class LogRecordReader {
  readonly #fromSeq: number;
  readonly #onBatch: (batch: LogBatch) => void;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #header: LogRecordHeader | undefined;
  #nextSeq = 1;

  constructor(fromSeq: number, onBatch: (batch: LogBatch) => void) {
    this.#fromSeq = Math.max(1, fromSeq);
    this.#onBatch = onBatch;
  }

  /** Seq the next record must start with. */
  get nextSeq(): number {
    return this.#nextSeq;
  }

  push(chunk: Buffer): void {
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    let data = this.#pending.length === 1 ? (this.#pending[0] as Buffer) : Buffer.concat(this.#pending, this.#pendingBytes);
    let pos = 0;
    for (;;) {
      if (!this.#header) {
        const nl = data.indexOf(NEWLINE, pos);
        if (nl === -1) {
          if (data.length - pos > MAX_RECORD_HEADER_BYTES)
            throw new Error(`log record header at byte ${pos} of a chunk is too long: not a spotctl log`);
          break;
        }
        const header = parseRecordHeader(data.subarray(pos, nl));
        if (!header)
          throw new Error(`not a log record header: ${JSON.stringify(data.subarray(pos, Math.min(nl, pos + 120)).toString('latin1'))}`);
        if (header.seq !== this.#nextSeq) throw new Error(`log record starts at seq ${header.seq}, expected ${this.#nextSeq}`);
        this.#header = header;
        pos = nl + 1;
      }
      const header = this.#header;
      if (data.length - pos < header.bytes) break;
      const payload = data.subarray(pos, pos + header.bytes);
      pos += header.bytes;
      this.#header = undefined;
      this.#nextSeq = header.seq + header.count;
      const segment: LogSegment = { firstSeq: header.seq, count: header.count, ts: header.ts, stream: header.stream, data: payload };
      if (countLines(payload) !== header.count || payload[payload.length - 1] !== NEWLINE) {
        throw new Error(`log record at seq ${header.seq} does not hold ${header.count} complete lines`);
      }
      const batch = sliceBatch(batchOf([segment]), this.#fromSeq);
      if (batch) this.#onBatch(batch);
    }
    data = data.subarray(pos);
    // Copy the rest: it may be a view into a large buffer the caller wants to reuse or free.
    this.#pending = data.length > 0 ? [Buffer.from(data)] : [];
    this.#pendingBytes = data.length;
  }
}

// ---------------------------------------------------------------------------------------------
// Batches: what the controller works with

/** Consecutive lines of one stream, written at one time: `count` lines, `data` ends in 0x0A. */
export interface LogSegment {
  firstSeq: number;
  count: number;
  ts: number;
  stream: LogStream;
  data: Buffer;
}

/** A parsed binary `logs` frame, as the controller's client hands it on next to the JSON events. */
export interface LogsEvent {
  type: 'event';
  event: 'logs';
  batch: LogBatch;
}

/** A segment whose bytes may still be in pieces (as the agent's line splitter hands them on). */
export interface LogSegmentPieces extends Omit<LogSegment, 'data'> {
  data: Buffer | readonly Buffer[];
}

/** Consecutive lines, `firstSeq..lastSeq`, in segments. */
export interface LogBatch {
  firstSeq: number;
  lastSeq: number;
  segments: LogSegment[];
}

export function batchOf(segments: LogSegment[]): LogBatch {
  const first = segments[0];
  const last = segments[segments.length - 1];
  if (!first || !last) throw new RangeError('a batch needs at least one segment');
  return { firstSeq: first.firstSeq, lastSeq: last.firstSeq + last.count - 1, segments };
}

/** Number of 0x0A bytes: one indexOf (memchr) per line, the cheapest count in JS. */
export function countLines(data: Buffer): number {
  let n = 0;
  let pos = 0;
  for (;;) {
    const nl = data.indexOf(NEWLINE, pos);
    if (nl === -1) return n;
    n += 1;
    pos = nl + 1;
  }
}

/** Byte offset just past the `n`-th newline of `data` (n ≥ 1), or -1 when there are fewer. */
export function afterLine(data: Buffer, n: number): number {
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const nl = data.indexOf(NEWLINE, pos);
    if (nl === -1) return -1;
    pos = nl + 1;
  }
  return pos;
}

/** The part of a batch from `fromSeq` on (views, no copy); undefined when nothing is left. */
export function sliceBatch(batch: LogBatch, fromSeq: number): LogBatch | undefined {
  if (fromSeq <= batch.firstSeq) return batch;
  if (fromSeq > batch.lastSeq) return undefined;
  const segments: LogSegment[] = [];
  for (const s of batch.segments) {
    const end = s.firstSeq + s.count;
    if (end <= fromSeq) continue;
    if (s.firstSeq >= fromSeq) {
      segments.push(s);
      continue;
    }
    const skip = fromSeq - s.firstSeq;
    segments.push({ ...s, firstSeq: fromSeq, count: s.count - skip, data: s.data.subarray(afterLine(s.data, skip)) });
  }
  return batchOf(segments);
}

/** The lines of a batch as {@link LogLine}s (text decoded as UTF-8), for JSON output and tests. */
export function batchLines(batch: LogBatch): LogLine[] {
  const lines: LogLine[] = [];
  for (const s of batch.segments) {
    let pos = 0;
    for (let i = 0; i < s.count; i++) {
      const nl = s.data.indexOf(NEWLINE, pos);
      lines.push({ seq: s.firstSeq + i, ts: s.ts, stream: s.stream, text: s.data.toString('utf8', pos, nl) });
      pos = nl + 1;
    }
  }
  return lines;
}

/** Text lines (which must not contain a newline) as one segment's bytes. */
export function linesData(texts: readonly string[]): Buffer {
  return Buffer.from(`${texts.join('\n')}\n`, 'utf8');
}

// ---------------------------------------------------------------------------------------------
// The wire: one binary websocket message per batch

/**
 * Header of a binary `logs` frame. The frame is `[u32 big-endian header length][header JSON]
 * [payload]`, the payload being the segments' bytes back to back; `seq` follows from `firstSeq`
 * and the counts. Text frames stay JSON messages ({@link ServerMessage}); only logs are binary.
 */
export const LogFrameHeader = Type.Object(
  {
    event: Type.Literal('logs'),
    firstSeq: Count,
    /** Per segment: its stream, when it was written (ms), how many lines and bytes it holds. */
    segments: Type.Array(Type.Object({ stream: LogStream, ts: EpochMs, count: Count, bytes: Count }, { additionalProperties: false }), {
      minItems: 1,
    }),
  },
  { additionalProperties: false },
);
export type LogFrameHeader = Static<typeof LogFrameHeader>;

const frameHeaderCheck = TypeCompiler.Compile(LogFrameHeader);
/** A header this large cannot be ours: ~60 bytes per segment, and frames carry a few hundred KiB. */
export const MAX_LOG_FRAME_HEADER_BYTES = 1024 * 1024;

/**
 * Builds a binary `logs` frame from consecutive segments; copies their bytes once, into a buffer
 * from `alloc` (a pool, say). Returns exactly the frame's bytes (a view when `alloc` gave more).
 */
export function encodeLogFrame(segments: readonly LogSegmentPieces[], alloc: (size: number) => Buffer = Buffer.allocUnsafe): Buffer {
  const first = segments[0];
  if (!first) throw new RangeError('a logs frame needs at least one segment');
  let header = `{"event":"logs","firstSeq":${first.firstSeq},"segments":[`;
  let payloadBytes = 0;
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i] as LogSegmentPieces;
    let bytes = 0;
    if (Buffer.isBuffer(s.data)) bytes = s.data.length;
    else for (const piece of s.data) bytes += piece.length;
    header += `${i ? ',' : ''}{"stream":"${s.stream}","ts":${s.ts},"count":${s.count},"bytes":${bytes}}`;
    payloadBytes += bytes;
  }
  header += ']}';
  const headerBytes = Buffer.byteLength(header, 'latin1');
  const size = 4 + headerBytes + payloadBytes;
  const buffer = alloc(size);
  if (buffer.length < size) throw new RangeError(`frame buffer of ${buffer.length} bytes for a ${size}-byte frame`);
  const frame = buffer.length === size ? buffer : buffer.subarray(0, size);
  frame.writeUInt32BE(headerBytes, 0);
  frame.write(header, 4, 'latin1');
  let pos = 4 + headerBytes;
  for (const s of segments) {
    if (Buffer.isBuffer(s.data)) pos += s.data.copy(frame, pos);
    else for (const piece of s.data) pos += piece.copy(frame, pos);
  }
  return frame;
}

/**
 * Parses and validates a binary `logs` frame: the header against its schema, once, then the
 * payload against the header (sizes, and exactly `count` newlines per segment, the last byte of
 * each being one). The batch's segments are views into `frame`.
 */
export function parseLogFrame(frame: Buffer): Parsed<LogBatch> {
  if (frame.length < 4) return { ok: false, error: `binary frame of ${frame.length} bytes is too short for a logs frame` };
  const headerBytes = frame.readUInt32BE(0);
  if (headerBytes > MAX_LOG_FRAME_HEADER_BYTES || 4 + headerBytes > frame.length) {
    return { ok: false, error: `logs frame header length ${headerBytes} does not fit the ${frame.length}-byte frame` };
  }
  let value: unknown;
  try {
    value = JSON.parse(frame.toString('utf8', 4, 4 + headerBytes));
  } catch {
    return { ok: false, error: 'logs frame header is not valid JSON' };
  }
  if (!frameHeaderCheck.Check(value)) {
    const e = frameHeaderCheck.Errors(value).First();
    return { ok: false, error: `logs frame header ${e ? `${e.path || '/'}: ${e.message}` : 'invalid'}` };
  }
  const segments: LogSegment[] = [];
  let pos = 4 + headerBytes;
  let seq = value.firstSeq;
  for (const s of value.segments) {
    if (pos + s.bytes > frame.length)
      return { ok: false, error: `logs frame payload is shorter than its header says (segment at seq ${seq})` };
    const data = frame.subarray(pos, pos + s.bytes);
    if (data[data.length - 1] !== NEWLINE || countLines(data) !== s.count) {
      return { ok: false, error: `logs frame segment at seq ${seq} does not hold ${s.count} complete lines` };
    }
    segments.push({ firstSeq: seq, count: s.count, ts: s.ts, stream: s.stream, data });
    pos += s.bytes;
    seq += s.count;
  }
  if (pos !== frame.length) return { ok: false, error: `logs frame has ${frame.length - pos} bytes after its last segment` };
  return { ok: true, value: batchOf(segments) };
}
