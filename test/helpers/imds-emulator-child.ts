/**
 * Entry of the metadata emulator as its own process, for `startImdsInNetns`: it runs inside a
 * network namespace on 169.254.169.254:80 and is steered over stdin/stdout, one JSON object a line.
 *
 *   argv: --host H --port P [--lifetime-ms MS]
 *   out:  {"type":"listening","url":"http://169.254.169.254"}
 *   in:   {"id":1,"op":"scheduleInterruption","args":{...}}   out: {"id":1,"result":...}
 *
 * The process exits when stdin closes (its test went away) or after --lifetime-ms, whichever
 * comes first, so it can never outlive a crashed test run for long.
 */
import readline from 'node:readline';
import { TestImdsEmulator, type EmulatedInstanceProfile, type ScheduleInterruptionOptions } from './imds-emulator.ts';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

function write(message: unknown): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const emulator = new TestImdsEmulator();
const lifetime = setTimeout(() => void shutdown(4), Number(arg('lifetime-ms', '600000')));

async function shutdown(code: number): Promise<void> {
  clearTimeout(lifetime);
  await emulator.close();
  process.exit(code);
}

type Handler = (args: Record<string, unknown>) => unknown;
const ops: Record<string, Handler> = {
  scheduleInterruption: (args) => emulator.scheduleInterruption(args as ScheduleInterruptionOptions),
  clearInterruption: () => emulator.clearInterruption(),
  recommendRebalance: (args) => emulator.recommendRebalance(args as { inMs?: number }),
  clearRebalance: () => emulator.clearRebalance(),
  revokeTokens: () => emulator.revokeTokens(),
  setInstanceProfile: (args) => emulator.setInstanceProfile((args as { profile?: EmulatedInstanceProfile }).profile),
  stats: () => ({
    requests: emulator.requests,
    noticeServedAt: emulator.noticeServedAt ?? null,
    interruption: emulator.interruption ?? null,
    now: Date.now(),
  }),
};

try {
  const url = await emulator.listen({ host: arg('host', '127.0.0.1'), port: Number(arg('port', '0')) });
  write({ type: 'listening', url });
} catch (e) {
  write({ type: 'error', error: e instanceof Error ? e.message : String(e) });
  await shutdown(2);
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  let msg: { id?: unknown; op?: unknown; args?: unknown };
  try {
    msg = JSON.parse(line) as typeof msg;
  } catch {
    write({ type: 'error', error: `not JSON: ${line}` });
    return;
  }
  const id = msg.id;
  if (msg.op === 'close') {
    write({ id, result: null });
    void shutdown(0);
    return;
  }
  const handler = typeof msg.op === 'string' ? ops[msg.op] : undefined;
  if (!handler) {
    write({ id, error: `unknown op ${String(msg.op)}` });
    return;
  }
  try {
    write({ id, result: handler((msg.args ?? {}) as Record<string, unknown>) ?? null });
  } catch (e) {
    write({ id, error: e instanceof Error ? e.message : String(e) });
  }
});
lines.on('close', () => void shutdown(0));
