/**
 * Splits a byte stream into lines. Works on bytes, not strings: a chunk boundary can fall inside a
 * multibyte UTF-8 character, and decoding each chunk separately would turn it into two U+FFFD.
 */
const NEWLINE = 0x0a;

export class LineSplitter {
  readonly maxLineBytes: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;

  /** @param maxLineBytes a longer line is cut into records of at most this many bytes. */
  constructor(maxLineBytes: number) {
    if (maxLineBytes < 4) throw new RangeError('maxLineBytes must fit one UTF-8 character');
    this.maxLineBytes = maxLineBytes;
  }

  /** Feeds a chunk; returns the lines it completed, without their '\n' (a '\r' is kept). */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start);
      if (nl === -1) break;
      this.#add(chunk.subarray(start, nl), lines);
      lines.push(this.#take());
      start = nl + 1;
    }
    if (start < chunk.length) this.#add(chunk.subarray(start), lines);
    return lines;
  }

  /** The trailing partial line, if any (call when the stream ends). */
  flush(): string[] {
    return this.#pendingBytes > 0 ? [this.#take()] : [];
  }

  #add(piece: Buffer, lines: string[]): void {
    if (piece.length === 0) return;
    this.#pending.push(piece);
    this.#pendingBytes += piece.length;
    if (this.#pendingBytes <= this.maxLineBytes) return;
    // The line is certainly too long: emit full records now so memory stays bounded per line.
    let buffered = Buffer.concat(this.#pending, this.#pendingBytes);
    while (buffered.length > this.maxLineBytes) {
      const cut = utf8Boundary(buffered, this.maxLineBytes);
      lines.push(buffered.subarray(0, cut).toString('utf8'));
      buffered = buffered.subarray(cut);
    }
    // Copy the rest so the big concatenated buffer can be freed.
    this.#pending = buffered.length > 0 ? [Buffer.from(buffered)] : [];
    this.#pendingBytes = buffered.length;
  }

  #take(): string {
    const line = this.#pending.length === 1 ? this.#pending[0]!.toString('utf8') : Buffer.concat(this.#pending, this.#pendingBytes).toString('utf8');
    this.#pending = [];
    this.#pendingBytes = 0;
    return line;
  }
}

/** Largest cut ≤ `at` that does not split a UTF-8 sequence (continuation bytes are 10xxxxxx). */
function utf8Boundary(buffer: Buffer, at: number): number {
  let cut = at;
  // A sequence is at most 4 bytes, so look back at most 3; invalid input just gets cut at `at`.
  while (cut > at - 3 && cut > 0 && ((buffer[cut] ?? 0) & 0xc0) === 0x80) cut -= 1;
  return ((buffer[cut] ?? 0) & 0xc0) === 0x80 ? at : cut;
}
