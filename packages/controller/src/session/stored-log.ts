import { StringDecoder } from 'node:string_decoder';
import type { LogLine } from '@spotctl/shared';
import type { Output } from '../output/output.ts';
import type { ProviderSession } from '../providers/provider.ts';

/**
 * Prints a run's log.jsonl as stored on the host, for when the agent has exited. Streamed: a log
 * can be far larger than memory (or than the longest string V8 allows).
 */
export async function printStoredLog(session: ProviderSession, out: Output, fromSeq: number): Promise<number> {
  let batch: LogLine[] = [];
  let last = 0;
  let rest = '';
  // Chunks split anywhere, even inside a multibyte character.
  const decoder = new StringDecoder('utf8');
  const take = (raw: string) => {
    if (!raw) return;
    let line: LogLine;
    try {
      line = JSON.parse(raw) as LogLine;
    } catch {
      return; // a torn last line from a crash
    }
    if (line.seq < fromSeq) return;
    batch.push(line);
    last = line.seq;
  };
  await session.streamLog((chunk) => {
    const text = rest + decoder.write(chunk);
    const lines = text.split('\n');
    rest = lines.pop() ?? '';
    for (const raw of lines) take(raw);
    if (batch.length >= 2000) {
      out.lines(batch);
      batch = [];
    }
  });
  take(rest + decoder.end());
  if (batch.length) out.lines(batch);
  return last;
}
