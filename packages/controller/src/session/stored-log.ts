import { LogRecordReader, SpotctlError, type LogBatch } from '@spotctl/shared';
import type { Output } from '../output/output.ts';
import type { ProviderSession } from '../providers/provider.ts';

/**
 * Prints a run's log as stored on the host, for when the agent has exited. Streamed: a log can be
 * far larger than memory (or than the longest string V8 allows). Returns the last seq printed
 * (0 if none). A torn record at the end (the agent died mid-write) is left out.
 */
export async function printStoredLog(
  session: ProviderSession,
  out: Output,
  fromSeq: number,
  copy?: { write(batch: LogBatch): void },
  progress?: { lastSeq: number },
): Promise<number> {
  let last = 0;
  let broken: Error | undefined;
  const reader = new LogRecordReader(fromSeq, (batch) => {
    copy?.write(batch);
    out.batch(batch);
    if (progress) progress.lastSeq = batch.lastSeq;
    last = batch.lastSeq;
  });
  await session.streamLog((chunk) => {
    if (broken) return;
    try {
      reader.push(chunk);
    } catch (error) {
      broken = error as Error;
    }
  });
  if (broken)
    throw new SpotctlError('SPOTCTL_PROTOCOL', `the run's stored log cannot be read after line ${reader.nextSeq - 1}: ${broken.message}`, {
      cause: broken,
    });
  return last;
}
