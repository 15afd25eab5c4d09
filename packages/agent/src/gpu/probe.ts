/**
 * What GPUs this machine has, from `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader`.
 * No nvidia-smi (a CPU host), a driver that is not loaded, or a probe that hangs all mean "no GPU
 * seen", with the reason: the probe is bounded, because a wedged driver can make nvidia-smi hang,
 * and the agent must start regardless.
 */
import { execFile } from 'node:child_process';
import type { GpuSeen } from '@spotctl/shared';

/** @default 10_000 */
export const GPU_PROBE_TIMEOUT_MS = 10_000;
const NVIDIA_SMI_ARGS = ['--query-gpu=name,memory.total', '--format=csv,noheader'];

export interface GpuProbe {
  gpus: GpuSeen[];
  /** Why none were seen, when the probe failed (not when it ran and listed none). */
  error?: string;
}

export interface GpuProbeOptions {
  /** @default 'nvidia-smi' (found on PATH) */
  command?: string;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** @default GPU_PROBE_TIMEOUT_MS */
  timeoutMs?: number;
}

/** `NVIDIA A10G, 23028 MiB` per line → GPUs; lines that don't parse are skipped. */
export function parseNvidiaSmi(stdout: string): GpuSeen[] {
  const gpus: GpuSeen[] = [];
  for (const line of stdout.split('\n')) {
    const match = /^(.+),\s*(\d+)\s*(MiB)?\s*$/.exec(line.trim());
    if (!match?.[1]) continue;
    gpus.push({ name: match[1].trim(), memoryMiB: Number(match[2]) });
  }
  return gpus;
}

export async function probeGpus(options: GpuProbeOptions = {}): Promise<GpuProbe> {
  const command = options.command ?? 'nvidia-smi';
  const timeoutMs = options.timeoutMs ?? GPU_PROBE_TIMEOUT_MS;
  let hardStop: NodeJS.Timeout | undefined;
  return await new Promise<GpuProbe>((resolve) => {
    // execFile's callback waits for stdout to close; a grandchild that inherited it could hold it
    // open past the kill. This settles regardless, shortly after the timeout.
    hardStop = setTimeout(
      () => resolve({ gpus: [], error: `${command} did not answer within ${Math.round(timeoutMs / 1000)} s` }),
      timeoutMs + 1000,
    );
    execFile(
      command,
      NVIDIA_SMI_ARGS,
      { env: options.env ?? process.env, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          const code = (error as NodeJS.ErrnoException).code;
          const reason =
            code === 'ENOENT'
              ? `${command} not found: no NVIDIA driver on this machine`
              : error.killed
                ? `${command} did not answer within ${Math.round(timeoutMs / 1000)} s`
                : `${command} failed: ${(String(stderr).trim().split('\n').pop() ?? '') || error.message}`;
          resolve({ gpus: [], error: reason });
          return;
        }
        resolve({ gpus: parseNvidiaSmi(String(stdout)) });
      },
    );
  }).finally(() => clearTimeout(hardStop));
}
