import { UserError } from '@spotctl/shared';
import type { Command } from 'commander';
import { DEFAULT_WORKERS, MAX_WORKERS } from './sizing.ts';

/** The placement flags `spotctl prices` and `spotctl run --provider aws` share, as commander hands them over. */
export interface PlacementCliOptions {
  workers?: string;
  arm?: boolean;
  regions?: string;
  region?: string;
  families?: string;
  instanceType?: string;
  /** commander's `--no-ht` sets `ht: false`. */
  ht?: boolean;
  placementScores?: boolean;
  gpus?: string;
  gpuMemory?: string;
}

/**
 * `--gpus` and `--gpu-memory`, shared by `prices` and `run` (on `run` they also apply to local and
 * ssh hosts: the agent checks the host has the GPUs before the job starts).
 */
export function addGpuOptions(cmd: Command, prefix = ''): Command {
  return cmd
    .option(
      '--gpus <spec>',
      `${prefix}NVIDIA GPUs the machine must have: 1 (any model), A10G, L4:1, A100:8, "T4|L4" (count is exact; see spotctl gpus)`,
    )
    .option('--gpu-memory <size>', `${prefix}memory each GPU must have, e.g. 20G (alone: one GPU of any model with that much)`);
}

/**
 * Workers the machine is sized for. With GPUs and no --workers, 1: the GPU does the work, and the
 * default 4 workers would rule out the cheapest GPU types (4 vCPUs: g4dn.xlarge, g5.xlarge, g6.xlarge).
 */
export function workersFor(options: PlacementCliOptions, example: string, workersGiven: boolean): number {
  if (!workersGiven && (options.gpus !== undefined || options.gpuMemory !== undefined)) return GPU_DEFAULT_WORKERS;
  return parseWorkersOption(options.workers, example);
}

/** @default 1 */
export const GPU_DEFAULT_WORKERS = 1;

/**
 * Adds the placement flags, one definition for both commands so they cannot drift apart
 * (`prices -w 8` and `run -w 8` mean the same). `prefix` starts each description (`aws: ` on `run`).
 */
export function addPlacementOptions(cmd: Command, prefix = ''): Command {
  return cmd
    .option(
      '-w, --workers <n>',
      `${prefix}parallel workers the job runs; sizes the machine (x86 with SMT: 2n+2 vCPUs, ARM or --no-ht: n+2)`,
      String(DEFAULT_WORKERS),
    )
    .option('--arm', `${prefix}Graviton (ARM) families instead of x86`)
    .option('--region <region>', `${prefix}only this region (AWS_REGION does the same)`)
    .option('--regions <list>', `${prefix}comma-separated regions to search (default: 8 common regions)`)
    .option('--families <list>', `${prefix}comma-separated instance families (default: c6a,c7a, or c6g,c7g with --arm)`)
    .option('--instance-type <types>', `${prefix}exact instance type(s), comma-separated, instead of families`)
    .option('--no-ht', `${prefix}one thread per core (SMT off) where the type allows it`)
    .option('--placement-scores', `${prefix}also ask AWS how likely each AZ is to have capacity; breaks price ties`);
}

/** `--workers`: a whole number from 1 to MAX_WORKERS, the same on every command. */
export function parseWorkersOption(value: string | undefined, example: string): number {
  if (value === undefined) return DEFAULT_WORKERS;
  const text = value.trim();
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) {
    throw new UserError('SPOTCTL_USAGE', `--workers must be a whole number from 1 to ${MAX_WORKERS}, got '${value}'`, {
      remediation: `for example: ${example.replace('{}', '--workers 8')}`,
      exitCode: 2,
    });
  }
  return n;
}

/** `spotctl run` flags that only the aws provider reads, by commander attribute name. */
export const AWS_ONLY_RUN_FLAGS: Readonly<Record<string, string>> = {
  workers: '--workers',
  arm: '--arm',
  region: '--region',
  regions: '--regions',
  families: '--families',
  instanceType: '--instance-type',
  ht: '--no-ht',
  placementScores: '--placement-scores',
  onDemand: '--on-demand',
  spotFallback: '--spot-fallback',
  sshCidr: '--ssh-cidr',
  recover: '--no-recover',
  maxAttempts: '--max-attempts',
  recoveryCooldown: '--recovery-cooldown',
};
