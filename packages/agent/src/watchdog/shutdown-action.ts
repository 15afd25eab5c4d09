/** Runs the configured shutdown action's command (on EC2: `sudo shutdown -h now`). */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';

export interface RunCommandOptions {
  argv: readonly string[];
  logger: Logger;
  /** Give up waiting after this long; the command keeps running. @default 60000 */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Runs argv, logs its output, resolves with its exit code (null on error or timeout); never rejects. */
export async function runShutdownCommand(options: RunCommandOptions): Promise<number | null> {
  const { argv, logger } = options;
  const [file, ...args] = argv as [string, ...string[]];
  const timeoutMs = options.timeoutMs ?? 60_000;
  return await new Promise((resolve) => {
    let settled = false;
    const done = (code: number | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(code);
    };
    const timer = setTimeout(() => {
      logger.warn({ argv, timeoutMs }, 'shutdown command still running; not waiting longer');
      done(null);
    }, timeoutMs);
    let child;
    try {
      child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(options.signal ? { signal: options.signal } : {}) });
    } catch (err) {
      logger.error({ err, argv }, 'shutdown command could not start');
      done(null);
      return;
    }
    for (const [name, stream] of [
      ['stdout', child.stdout],
      ['stderr', child.stderr],
    ] as const) {
      stream?.setEncoding('utf8');
      stream?.on('data', (text: string) => logger.info({ stream: name, text: text.trimEnd() }, 'shutdown command output'));
    }
    child.once('error', (err) => {
      logger.error({ err, argv }, 'shutdown command failed');
      done(null);
    });
    child.once('close', (code, signal) => {
      logger.info({ argv, exitCode: code, signal }, 'shutdown command finished');
      done(code);
    });
  });
}
