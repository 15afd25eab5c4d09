/** The aws provider's `spotctl run` options: declared for commander, parsed and checked into a typed launch plan. */
import { UserError } from '@spotctl/shared';
import type { Command } from 'commander';
import { addPlacementOptions, workersFor, type PlacementCliOptions } from '../aws/cli-options.ts';
import { parseGpuRequest, type GpuRequest } from '../aws/gpus.ts';
import type { Market } from '../aws/errors.ts';
import { parseSshCidr } from '../aws/infra.ts';
import { resolveRegions } from '../aws/pricing.ts';
import { parseFamilies, parseInstanceTypes, type Architecture } from '../aws/sizing.ts';

/** The run command's aws options, as commander hands them over. */
export interface AwsCliOptions extends PlacementCliOptions {
  onDemand?: boolean;
  spotFallback?: string;
  sshCidr?: string;
}

/** Adds the aws provider's options to `spotctl run`. */
export function configureAwsRunOptions(cmd: Command): Command {
  return addPlacementOptions(cmd, 'aws: ')
    .option('--on-demand', 'aws: launch on-demand instead of spot')
    .option('--spot-fallback <market>', "aws: 'on-demand' launches on-demand when no spot capacity is found", 'none')
    .option('--ssh-cidr <cidr>', "aws: allow SSH from this CIDR (default: this machine's public address /32)");
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
  /** GPUs the instance type must carry (`--gpus`, `--gpu-memory`). */
  gpus?: GpuRequest;
}

/** `given` says whether the user typed an option (by attribute name) rather than getting its default. */
export function parseAwsOptions(
  options: AwsCliOptions & { sshConfig?: string },
  given: (attributeName: string) => boolean = () => false,
): AwsLaunchOptions {
  const gpus = parseGpuRequest(options);
  const families = parseFamilies(options.families);
  const instanceTypes = parseInstanceTypes(options.instanceType);
  if (families && instanceTypes) {
    throw new UserError('SPOTCTL_USAGE', '--families and --instance-type both given', {
      remediation: 'use one: --families c7a or --instance-type c7a.2xlarge',
      exitCode: 2,
    });
  }
  const fallback = options.spotFallback ?? 'none';
  if (fallback !== 'none' && fallback !== 'on-demand') {
    throw new UserError('SPOTCTL_USAGE', `--spot-fallback: unknown market '${fallback}'`, {
      remediation: 'use --spot-fallback on-demand (or leave it out)',
      exitCode: 2,
    });
  }
  const selection = resolveRegions({
    ...(options.regions === undefined ? {} : { regions: options.regions }),
    ...(options.region === undefined ? {} : { region: options.region }),
  });
  return {
    regions: selection.regions,
    ...(selection.pinnedBy ? { pinnedBy: selection.pinnedBy } : {}),
    workers: workersFor(options, 'spotctl run --provider aws {} train.py', given('workers')),
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
    ...(gpus ? { gpus } : {}),
  };
}
