/**
 * Splits a byte stream into lines, handing them on as bytes: a block of complete lines, each
 * ending in '\n', and how many there are. No string is made per line: under a log flood the agent's
 * cost is one indexOf (memchr) per line. Bytes, not strings, also because a chunk boundary can fall
 * inside a multibyte UTF-8 character.
 */
const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const NEWLINE_BUFFER = Buffer.from([NEWLINE]);

/** Complete lines: `count` lines, each ending in '\n' (a '\r' before it is kept). */
export interface LineBlock {
  /**
   * The lines' bytes in order, in pieces (write them with one writev): usually a view of the
   * chunk, after the line that started in the previous chunk. Not copied into one buffer, since
   * under a log flood every copy is garbage the agent's memory has to hold until the next GC.
   */
  data: Buffer[];
  count: number;
}

export class LineSplitter {
  readonly maxLineBytes: number;
  /** The partial line after the last '\n' seen, at most maxLineBytes (a copy, never a view). */
  #pending: Buffer | undefined;
  /** The last chunk ended in a '\r' that was given its own '\n': a '\n' right after it is that one. */
  #crEnded = false;

  /** @param maxLineBytes a longer line is cut into records of at most this many bytes. */
  constructor(maxLineBytes: number) {
    if (maxLineBytes < 4) throw new RangeError('maxLineBytes must fit one UTF-8 character');
    this.maxLineBytes = maxLineBytes;
  }

  /**
   * Feeds a chunk; returns the lines it completed, or undefined. The pieces may be views into
   * `chunk`: use them before the chunk's memory is reused.
   */
  push(input: Buffer): LineBlock | undefined {
    let chunk = input;
    if (this.#crEnded) {
      this.#crEnded = false;
      if (chunk[0] === NEWLINE) chunk = chunk.subarray(1);
      if (chunk.length === 0) return undefined;
    }
    // memchr: output without '\r' (nearly all of it) pays nothing more.
    if (chunk.indexOf(CARRIAGE_RETURN) !== -1) chunk = this.#endLinesAtCarriageReturns(chunk);
    const max = this.maxLineBytes;
    const pieces: Buffer[] = [];
    let count = 0;
    let data = chunk;
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending) {
      const nl = chunk.indexOf(NEWLINE);
      if (nl === -1) {
        data = Buffer.concat([pending, chunk]);
      } else {
        // Only the line that straddles the chunks is copied; the rest stays a view.
        const head = Buffer.concat([pending, chunk.subarray(0, nl + 1)]);
        if (head.length - 1 > max) count += cutLongLine(head.subarray(0, head.length - 1), max, pieces, true);
        else {
          pieces.push(head);
          count += 1;
        }
        data = chunk.subarray(nl + 1);
      }
    }
    let runStart = 0;
    let start = 0;
    for (;;) {
      const nl = data.indexOf(NEWLINE, start);
      if (nl === -1) break;
      if (nl - start > max) {
        if (start > runStart) pieces.push(data.subarray(runStart, start));
        count += cutLongLine(data.subarray(start, nl), max, pieces, true);
        runStart = nl + 1;
      } else {
        count += 1;
      }
      start = nl + 1;
    }
    if (start > runStart) pieces.push(data.subarray(runStart, start));
    let rest = data.subarray(start);
    if (rest.length > max) {
      // Certainly too long already: emit full records now so memory stays bounded per line.
      count += cutLongLine(rest, max, pieces, false);
      // The last piece is the remainder (≤ max) that waits for its line end.
      rest = pieces.pop() as Buffer;
    }
    if (rest.length > 0) this.#pending = Buffer.from(rest);
    if (count === 0) return undefined;
    return { data: pieces, count };
  }

  /**
   * A '\r' not followed by '\n' ends a line too, and keeps its place in it ("50%\r" is a line
   * whose text ends in '\r'). Progress bars (tqdm, keras) redraw themselves with '\r' and write
   * no '\n' until they are done: without this, nothing of them would show until the end. Each
   * state of the bar becomes a line; a terminal that prints them goes back to the line start and
   * then to a new line. A '\r' ending the chunk counts as lone (the next chunk is not here yet);
   * a '\n' starting the next chunk is then taken as its partner.
   */
  #endLinesAtCarriageReturns(chunk: Buffer): Buffer {
    const parts: Buffer[] = [];
    let from = 0;
    for (let cr = chunk.indexOf(CARRIAGE_RETURN); cr !== -1; cr = chunk.indexOf(CARRIAGE_RETURN, cr + 1)) {
      if (cr + 1 < chunk.length && chunk[cr + 1] === NEWLINE) continue;
      parts.push(chunk.subarray(from, cr + 1), NEWLINE_BUFFER);
      from = cr + 1;
      if (cr + 1 === chunk.length) this.#crEnded = true;
    }
    if (parts.length === 0) return chunk;
    parts.push(chunk.subarray(from));
    return Buffer.concat(parts);
  }

  /** The trailing partial line, if any (call when the stream ends). */
  flush(): LineBlock | undefined {
    const rest = this.#pending;
    this.#pending = undefined;
    if (!rest) return undefined;
    return { data: [rest, NEWLINE_BUFFER], count: 1 };
  }
}

/**
 * Cuts `line` (no newline in it) into records of at most `max` bytes at UTF-8 boundaries, each
 * pushed with its '\n'. With `terminated` false the last piece is pushed without one (and not
 * counted): it is the start of a line still being written. Returns the records counted.
 */
function cutLongLine(line: Buffer, max: number, pieces: Buffer[], terminated: boolean): number {
  let count = 0;
  let rest = line;
  while (rest.length > max) {
    const cut = utf8Boundary(rest, max);
    pieces.push(rest.subarray(0, cut), NEWLINE_BUFFER);
    count += 1;
    rest = rest.subarray(cut);
  }
  if (terminated) {
    pieces.push(rest, NEWLINE_BUFFER);
    count += 1;
  } else {
    pieces.push(rest);
  }
  return count;
}

/** Largest cut ≤ `at` that does not split a UTF-8 sequence (continuation bytes are 10xxxxxx). */
function utf8Boundary(buffer: Buffer, at: number): number {
  let cut = at;
  // A sequence is at most 4 bytes, so look back at most 3; invalid input just gets cut at `at`.
  while (cut > at - 3 && cut > 0 && ((buffer[cut] ?? 0) & 0xc0) === 0x80) cut -= 1;
  return ((buffer[cut] ?? 0) & 0xc0) === 0x80 ? at : cut;
}
