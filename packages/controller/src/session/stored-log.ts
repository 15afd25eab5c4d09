import type { LogLine } from '@spotctl/shared';
import type { Output } from '../output/output.ts';
import type { ProviderSession } from '../providers/provider.ts';

/** Prints a run's log.jsonl as stored on the host, for when the agent has exited. */
export async function printStoredLog(session: ProviderSession, out: Output, fromSeq: number): Promise<number> {
  const text = await session.readLog();
  let batch: LogLine[] = [];
  let last = 0;
  for (const raw of text.split('\n')) {
    if (!raw) continue;
    let line: LogLine;
    try {
      line = JSON.parse(raw) as LogLine;
    } catch {
      continue; // a torn last line from a crash
    }
    if (line.seq < fromSeq) continue;
    batch.push(line);
    last = line.seq;
    if (batch.length >= 2000) {
      if (!out.lines(batch)) await out.drain();
      batch = [];
    }
  }
  if (batch.length) out.lines(batch);
  return last;
}
