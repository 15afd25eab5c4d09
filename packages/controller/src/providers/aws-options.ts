/** The aws provider's `spotctl run` options: declared for commander, parsed and checked into a typed launch plan. */
import { UserError } from '@spotctl/shared';
import type { Command } from 'commander';
import type { PlacementCliOptions } from '../aws/cli-options.ts';
import type { Market } from '../aws/errors.ts';
import { parseSshCidr } from '../aws/infra.ts';
import { resolveRegions } from '../aws/pricing.ts';
import { DEFAULT_WORKERS, parseFamilies, parseInstanceTypes, validateWorkers, type Architecture } from '../aws/sizing.ts';

/** The run command's aws options, as commander hands them over. */
export interface AwsCliOptions extends PlacementCliOptions {
  onDemand?: boolean;
  spotFallback?: string;
  sshCidr?: string;
}

/** Adds the aws provider's options to `spotctl run`. */
export function configureAwsRunOptions(cmd: Command): Command {
  return cmd
    .option('--workers <n>', `aws: parallel workers the job runs; sizes the machine (x86: 2n+2 vCPUs, ARM or --no-ht: n+2)`, String(DEFAULT_WORKERS))
    .option('--arm', 'aws: Graviton (ARM) families instead of x86')
    .option('--region <region>', 'aws: launch only in this region (AWS_REGION does the same)')
    .option('--regions <list>', 'aws: comma-separated regions to search (default: 8 common regions)')
    .option('--families <list>', 'aws: instance families (default: c6a,c7a, or c6g,c7g with --arm)')
    .option('--instance-type <types>', 'aws: exact instance type(s), comma-separated, instead of families')
    .option('--no-ht', 'aws: one thread per core (SMT off) where the type allows it')
    .option('--on-demand', 'aws: launch on-demand instead of spot')
    .option('--spot-fallback <market>', "aws: 'on-demand' launches on-demand when no spot capacity is found", 'none')
    .option('--ssh-cidr <cidr>', "aws: allow SSH from this CIDR (default: this machine's public address /32)")
    .option('--placement-scores', 'aws: also ask AWS how likely each AZ is to have capacity; breaks price ties');
}

export interface AwsLaunchOptions {
  regions: string[];
  pinnedBy?: string;
  workers: number;
  architecture: Architecture;
  families?: string[];
  instanceTypes?: string[];
  noHt: boolean;
  market: Market;
  spotFallback: 'none' | 'on-demand';
  sshCidr?: string;
  placementScores: boolean;
  /** ssh client config for the connection (`--ssh-config`). */
  sshConfig?: string;
}

function parseCount(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new UserError('SPOTCTL_USAGE', `${flag} must be a whole number ≥ 1, got '${value}'`, { remediation: `for example: spotctl run --provider aws ${flag} 8 train.py`, exitCode: 2 });
  }
  return n;
}

export function parseAwsOptions(options: AwsCliOptions & { sshConfig?: string }): AwsLaunchOptions {
  const families = parseFamilies(options.families);
  const instanceTypes = parseInstanceTypes(options.instanceType);
  if (families && instanceTypes) {
    throw new UserError('SPOTCTL_USAGE', '--families and --instance-type both given', { remediation: 'use one: --families c7a or --instance-type c7a.2xlarge', exitCode: 2 });
  }
  const fallback = options.spotFallback ?? 'none';
  if (fallback !== 'none' && fallback !== 'on-demand') {
    throw new UserError('SPOTCTL_USAGE', `--spot-fallback: unknown market '${fallback}'`, { remediation: 'use --spot-fallback on-demand (or leave it out)', exitCode: 2 });
  }
  const selection = resolveRegions({
    ...(options.regions === undefined ? {} : { regions: options.regions }),
    ...(options.region === undefined ? {} : { region: options.region }),
  });
  return {
    regions: selection.regions,
    ...(selection.pinnedBy ? { pinnedBy: selection.pinnedBy } : {}),
    workers: validateWorkers(parseCount(options.workers, '--workers', DEFAULT_WORKERS)),
    architecture: options.arm ? 'arm64' : 'x86_64',
    ...(families ? { families } : {}),
    ...(instanceTypes ? { instanceTypes } : {}),
    noHt: options.ht === false,
    market: options.onDemand ? 'on-demand' : 'spot',
    spotFallback: fallback,
    // Checked here, before the run exists, not when the launch gets to it.
    ...(options.sshCidr !== undefined ? { sshCidr: parseSshCidr(options.sshCidr) } : {}),
    placementScores: options.placementScores === true,
    ...(options.sshConfig ? { sshConfig: options.sshConfig } : {}),
  };
}
