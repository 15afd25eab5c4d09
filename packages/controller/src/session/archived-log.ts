/**
 * Reads a run's log from its archive on the checkpoint target (the agent uploads it as byte-range
 * segments of its log file: see `logArchiveKeys`), with this machine's own credentials.
 */
import { LogRecordReader, SpotctlError, logArchiveKeys, type CheckpointTarget } from '@spotctl/shared';
import { openCheckpointReader } from '../checkpoints/index.ts';
import type { Output } from '../output/output.ts';

export interface ArchivedLogResult {
  /** The last seq the archive holds (0 if none). */
  lastSeq: number;
  /** Bytes of the agent's log file archived, contiguous from its start. */
  bytes: number;
  /** The archive's segments stop at a hole (a segment never arrived): what follows it cannot be read. */
  gapAt?: number;
}

/** Prints the archived log from `fromSeq` on; undefined when the target holds no log for the run. */
export async function printArchivedLog(options: {
  target: CheckpointTarget;
  runId: string;
  out: Output;
  fromSeq: number;
  signal?: AbortSignal;
}): Promise<ArchivedLogResult | undefined> {
  const reader = await openCheckpointReader(options.target);
  try {
    const keys = await reader.list(logArchiveKeys.prefix('', options.runId), options.signal);
    const segments = keys
      .map((key) => ({ key, range: logArchiveKeys.rangeOf(key) }))
      .filter((s): s is { key: string; range: NonNullable<typeof s.range> } => s.range !== undefined)
      .sort((a, b) => a.range.startOffset - b.range.startOffset || b.range.endOffset - a.range.endOffset);
    if (segments.length === 0) return undefined;
    const records = new LogRecordReader(options.fromSeq, (batch) => options.out.batch(batch));
    let offset = 0;
    for (const { key, range } of segments) {
      // An upload that was retried after it had in fact landed leaves overlapping segments.
      if (range.endOffset <= offset) continue;
      if (range.startOffset > offset) return { lastSeq: records.nextSeq - 1, bytes: offset, gapAt: offset };
      let skip = offset - range.startOffset;
      try {
        for await (const chunk of await reader.get(key, options.signal)) {
          let buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
          if (skip > 0) {
            const cut = Math.min(skip, buf.length);
            buf = buf.subarray(cut);
            skip -= cut;
          }
          if (buf.length > 0) records.push(buf);
        }
      } catch (error) {
        throw new SpotctlError(
          'SPOTCTL_PROTOCOL',
          `the archived log of run ${options.runId} cannot be read after line ${records.nextSeq - 1} (${key}): ${(error as Error).message}`,
          { cause: error },
        );
      }
      offset = range.endOffset;
    }
    return { lastSeq: records.nextSeq - 1, bytes: offset };
  } finally {
    reader.close();
  }
}
