/** Test support: runs the `prices` command in-process and captures what it prints. Not shipped. */
import { Writable } from 'node:stream';
import { Output } from '../output/output.ts';
import { RunStore } from '../runs/run-store.ts';
import prices from './prices.ts';

function sink(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return Object.assign(stream, { text: () => chunks.join('') });
}

export async function runPrices(options: Record<string, unknown>): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = sink();
  const stderr = sink();
  const out = new Output({ json: options.json === true, stdout, stderr });
  const code = await prices.run([], { workers: '4', ht: true, ...options }, { out, store: new RunStore('/nonexistent/spotctl-runs'), testOverrides: {} });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}
