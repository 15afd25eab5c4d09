/**
 * What the server needs from the other parts, as structural interfaces: the server does not import
 * the log store or the supervisor; the composition root hands it objects that fit.
 */
import type { JobStatus, LogSegment, LogSegmentPieces } from '@spotctl/shared';

export interface LogLinesChunk {
  /** Consecutive lines in segments; views valid until the reader's next read(). */
  segments: LogSegment[];
  count: number;
  lastSeq: number;
}

/** Lines just appended to the log, still in memory, and where they are in the file. */
export interface AppendedLines extends LogSegmentPieces {
  lastSeq: number;
  startOffset: number;
  endOffset: number;
}

export interface LogReader {
  /** Seq of the next line read() returns. */
  readonly nextSeq: number;
  read(options: { untilSeq?: number }): Promise<LogLinesChunk | null>;
  /** Moves past `lines` if the reader is exactly at their start; false (and no move) otherwise. */
  skip(lines: AppendedLines): boolean;
}

export interface LogSource {
  readonly lastSeq: number;
  cursor(fromSeq: number): LogReader;
}

export interface JobControl {
  status(): JobStatus;
  /** Sends the signal and returns at once; the end arrives as a status change. */
  stop(options: { force?: boolean; graceMs?: number }): JobStatus;
  /**
   * False while the ended job is still being wrapped up (final checkpoint flush, interruption
   * report): subscribers get their `end` only once nothing more will happen. @default always true
   */
  settled?(): boolean;
}

export function isJobEnded(status: JobStatus): boolean {
  return status.state === 'exited' || status.state === 'failed-to-start';
}
