/**
 * RunInstances for one run: the request (a one-time spot request that terminates on
 * interruption and on an OS shutdown, IMDSv2 only, root volume deleted with the instance, tagged
 * from the start), the walk over placements (`launchWithFailover`), the wait for "running with an
 * address", and the cleanup that no error path may skip.
 *
 * Cleanup finds instances by the run's tag, not by the id RunInstances returned: tags are applied
 * atomically at creation (TagSpecifications), so an instance whose RunInstances answer we never
 * saw (Ctrl-C or a network error mid-request) is found and terminated too. Every attempt also
 * carries a ClientToken, so the SDK's own retry of a request that did reach EC2 cannot launch a
 * second instance.
 */
import { SpotctlError, UserError } from '@spotctl/shared';
import type { EC2Client, Instance, RunInstancesCommandInput, RunInstancesCommandOutput } from '@aws-sdk/client-ec2';
import { setTimeout as sleep } from 'node:timers/promises';
import createDebug from 'debug';
import { isProfilePropagationError } from './iam.ts';
import { loadEc2Sdk, sendOptions, type Ec2ClientFor } from './clients.ts';
import { awsUserError, type Market } from './errors.ts';
import { defaultSubnetId, type RegionInfra } from './infra.ts';
import { isAbort } from './errors.ts';
import {
  RegionSetupError,
  launchPlacement,
  launchWithFailover,
  type AttemptEvent,
  type FailoverResult,
  type PlacementCandidate,
} from './placement.ts';
import { NEVER, TAG, commandTag, tagSpecifications } from './tags.ts';

const debug = createDebug('spotctl:launch');

/** Root volume size unless the image needs more. @default 30 */
export const DEFAULT_ROOT_VOLUME_GIB = 30;
/** How long an instance may take to be running with an address. @default 300_000 */
export const DEFAULT_RUNNING_TIMEOUT_MS = 300_000;
/** @default 2_000 */
export const DEFAULT_POLL_INTERVAL_MS = 2_000;
/** States in which an instance still costs money (or will again). */
export const LIVE_STATES = ['pending', 'running', 'stopping', 'stopped'] as const;

export interface RunTags {
  runId: string;
  owner: string;
  command: readonly string[];
  /** `spotctl:created`. */
  createdAt: Date;
  /** `spotctl:expires-at`: when `gc` may treat the instance as abandoned. */
  expiresAt: Date | typeof NEVER;
  sshUser: string;
  launchedFrom: string;
  detached: boolean;
  /** `ssh-ed25519 AAAA…` (public, so a tag may carry it). */
  hostPublicKey?: string;
  /** The run's --remote-dir. */
  remoteDir?: string;
}

/** The instance's tags for a placement (the price and market are the candidate's). */
export function instanceTags(tags: RunTags, candidate: PlacementCandidate, market: Market): Record<string, string> {
  return {
    Name: `spotctl ${tags.runId}`,
    [TAG.managed]: 'true',
    [TAG.role]: 'run',
    [TAG.runId]: tags.runId,
    [TAG.owner]: tags.owner,
    [TAG.created]: tags.createdAt.toISOString(),
    [TAG.expiresAt]: tags.expiresAt === NEVER ? NEVER : tags.expiresAt.toISOString(),
    [TAG.command]: commandTag(tags.command),
    [TAG.market]: market,
    // On-demand has no spot quote; the spot price then is a floor, not what is paid.
    ...(market === 'spot' ? { [TAG.price]: String(candidate.pricePerHour) } : {}),
    [TAG.sshUser]: tags.sshUser,
    [TAG.launchedFrom]: tags.launchedFrom,
    ...(tags.detached ? { [TAG.detached]: 'true' } : {}),
    ...(tags.hostPublicKey ? { [TAG.hostKey]: tags.hostPublicKey.trim().split(/\s+/).slice(0, 2).join(' ') } : {}),
    ...(tags.remoteDir ? { [TAG.remoteDir]: tags.remoteDir } : {}),
  };
}

export interface RunInstancesParts {
  candidate: PlacementCandidate;
  market: Market;
  infra: RegionInfra;
  subnetId: string;
  /** Plain cloud-config text; encoded here. */
  userData: string;
  tags: RunTags;
  /** Idempotency token (≤ 64 ASCII characters). */
  clientToken: string;
  /** @default DEFAULT_ROOT_VOLUME_GIB */
  rootVolumeGiB?: number;
  /** The run's instance profile (S3 checkpoints), when it has one. */
  instanceProfileArn?: string;
}

/** The whole RunInstances request for one attempt (pure, so tests can check every field). */
export function runInstancesInput(parts: RunInstancesParts): RunInstancesCommandInput {
  const { candidate, market, infra } = parts;
  const tags = instanceTags(parts.tags, candidate, market);
  const size = Math.max(parts.rootVolumeGiB ?? DEFAULT_ROOT_VOLUME_GIB, infra.image.rootSnapshotGiB ?? 0);
  return {
    ...launchPlacement(candidate, market),
    ImageId: infra.image.imageId,
    MinCount: 1,
    MaxCount: 1,
    KeyName: infra.keyName,
    // One interface with a public address, whatever the subnet's auto-assign setting is.
    NetworkInterfaces: [
      {
        DeviceIndex: 0,
        SubnetId: parts.subnetId,
        Groups: [infra.securityGroupId],
        AssociatePublicIpAddress: true,
        DeleteOnTermination: true,
      },
    ],
    // IMDSv2 only; hop limit 2 so a container on the instance can still get a token.
    MetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 2, HttpEndpoint: 'enabled' },
    BlockDeviceMappings: [
      { DeviceName: infra.image.rootDeviceName, Ebs: { DeleteOnTermination: true, VolumeType: 'gp3', VolumeSize: size } },
    ],
    UserData: Buffer.from(parts.userData).toString('base64'),
    ...(parts.instanceProfileArn ? { IamInstanceProfile: { Arn: parts.instanceProfileArn } } : {}),
    TagSpecifications: tagSpecifications(
      market === 'spot' ? ['instance', 'volume', 'spot-instances-request'] : ['instance', 'volume'],
      tags,
    ),
    ClientToken: parts.clientToken,
  };
}

export interface LaunchedInstance {
  instanceId: string;
  region: string;
  az: string;
  instanceType: string;
  vcpus: number;
  market: Market;
  pricePerHour: number;
  imageId: string;
  keyName: string;
  securityGroupId: string;
  subnetId: string;
  launchedAt: number;
}

export interface LaunchOptions {
  candidates: readonly PlacementCandidate[];
  clientFor: Ec2ClientFor;
  /** Per-region infrastructure, created on the first attempt in that region (memoize it). */
  infraFor: (region: string) => Promise<RegionInfra>;
  /** The user-data for an image: stock Ubuntu gets the install script, a baked one does not. */
  userDataFor: (infra: RegionInfra) => string;
  tags: RunTags;
  /** @default 'spot' */
  market?: Market;
  spotFallback?: 'none' | 'on-demand';
  onAttempt?: (event: AttemptEvent) => void;
  /** Called with each region before RunInstances is sent there: cleanup must look in it. */
  onRegionTouched?: (region: string) => void;
  rootVolumeGiB?: number;
  /** The run's instance profile; RunInstances waits (bounded) for IAM to make it known to EC2. */
  instanceProfileArn?: string;
  /** @default PROFILE_PROPAGATION_TIMEOUT_MS */
  profilePropagationTimeoutMs?: number;
  /** Between RunInstances tries while the profile propagates. @default 2_000 */
  profileRetryIntervalMs?: number;
  signal?: AbortSignal;
  now?: () => number;
}

/** How long RunInstances may refuse a new instance profile as unknown (IAM propagates in seconds). @default 60_000 */
export const PROFILE_PROPAGATION_TIMEOUT_MS = 60_000;
const PROFILE_RETRY_INTERVAL_MS = 2_000;

/** RunInstances through the failover walk; returns the first instance EC2 accepted. */
export async function launchInstance(options: LaunchOptions): Promise<FailoverResult<LaunchedInstance>> {
  const { RunInstancesCommand } = await loadEc2Sdk();
  return await launchWithFailover<LaunchedInstance>(
    options.candidates,
    async (candidate, attempt) => {
      let infra: RegionInfra;
      try {
        infra = await options.infraFor(candidate.region);
      } catch (error) {
        // A region whose key pair, security group or image cannot be set up is skipped, not fatal.
        if (attempt.signal?.aborted || isAbort(error)) throw error;
        throw new RegionSetupError(candidate.region, error);
      }
      const ec2 = await options.clientFor(candidate.region);
      const subnetId = await defaultSubnetId(
        { ec2, region: candidate.region, ...(attempt.signal ? { signal: attempt.signal } : {}) },
        infra.vpcId,
        candidate.az,
      );
      const input = runInstancesInput({
        candidate,
        market: attempt.market,
        infra,
        subnetId,
        userData: options.userDataFor(infra),
        tags: options.tags,
        clientToken: `${options.tags.runId}-${attempt.attempt}`,
        ...(options.rootVolumeGiB ? { rootVolumeGiB: options.rootVolumeGiB } : {}),
        ...(options.instanceProfileArn ? { instanceProfileArn: options.instanceProfileArn } : {}),
      });
      options.onRegionTouched?.(candidate.region);
      debug('RunInstances %s %s %s', candidate.az, candidate.instanceType, attempt.market);
      const propagationDeadline = Date.now() + (options.profilePropagationTimeoutMs ?? PROFILE_PROPAGATION_TIMEOUT_MS);
      const retryMs = options.profileRetryIntervalMs ?? PROFILE_RETRY_INTERVAL_MS;
      let r: RunInstancesCommandOutput;
      for (let wait = 1; ; wait++) {
        try {
          // A refused request launched nothing; a fresh token keeps EC2 from answering with the refusal again.
          const token = wait === 1 ? input.ClientToken : `${input.ClientToken}-p${wait}`;
          r = await ec2.send(new RunInstancesCommand({ ...input, ClientToken: token }), sendOptions(attempt.signal));
          break;
        } catch (error) {
          if (!options.instanceProfileArn || !isProfilePropagationError(error) || Date.now() + retryMs > propagationDeadline) throw error;
          debug('instance profile not known to EC2 yet (attempt %d); waiting', wait);
          await sleep(retryMs, undefined, attempt.signal ? { signal: attempt.signal } : {});
        }
      }
      const instance = r.Instances?.[0];
      if (!instance?.InstanceId) throw new SpotctlError('SPOTCTL_INTERNAL', 'RunInstances answered without an instance id');
      return {
        instanceId: instance.InstanceId,
        region: candidate.region,
        az: instance.Placement?.AvailabilityZone ?? candidate.az,
        instanceType: candidate.instanceType,
        vcpus: candidate.vcpus,
        market: attempt.market,
        pricePerHour: candidate.pricePerHour,
        imageId: infra.image.imageId,
        keyName: infra.keyName,
        securityGroupId: infra.securityGroupId,
        subnetId,
        launchedAt: (options.now ?? Date.now)(),
      };
    },
    {
      ...(options.market ? { market: options.market } : {}),
      ...(options.spotFallback ? { spotFallback: options.spotFallback } : {}),
      ...(options.onAttempt ? { onAttempt: options.onAttempt } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
}

export interface RunningInstance {
  instance: Instance;
  /** The address to SSH to: the public IPv4 address. */
  address: string;
}

/**
 * Polls DescribeInstances until the instance runs and has a public address (bounded). Our own
 * loop rather than the SDK's waiter: we need the address too, which can trail "running", and an
 * injectable sleep keeps tests fast.
 */
export async function waitForRunning(
  ec2: EC2Client,
  instanceId: string,
  options: {
    timeoutMs?: number;
    intervalMs?: number;
    signal?: AbortSignal;
    sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  } = {},
): Promise<RunningInstance> {
  const { DescribeInstancesCommand } = await loadEc2Sdk();
  const timeoutMs = options.timeoutMs ?? DEFAULT_RUNNING_TIMEOUT_MS;
  const intervalMs = options.intervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  const sleep = options.sleep ?? defaultSleep;
  const deadline = Date.now() + timeoutMs;
  let last = 'unknown';
  for (let i = 0; i < Math.ceil(timeoutMs / Math.max(1, intervalMs)) + 1; i++) {
    options.signal?.throwIfAborted();
    let instance: Instance | undefined;
    try {
      const r = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }), sendOptions(options.signal));
      instance = r.Reservations?.[0]?.Instances?.[0];
    } catch (error) {
      // Eventual consistency: a new id can be unknown to DescribeInstances for a moment.
      if (options.signal?.aborted) throw error;
      if ((error as { name?: string }).name !== 'InvalidInstanceID.NotFound') throw awsUserError(error, { action: 'DescribeInstances' });
    }
    const state = instance?.State?.Name ?? 'unknown';
    last = state;
    if (state === 'running' && instance?.PublicIpAddress) return { instance, address: instance.PublicIpAddress };
    if (state === 'shutting-down' || state === 'terminated' || state === 'stopped' || state === 'stopping') {
      const reason = instance?.StateReason?.Message ?? instance?.StateTransitionReason ?? 'no reason given';
      throw new UserError('SPOTCTL_NO_CAPACITY', `instance ${instanceId} went ${state} before it ran: ${reason}`, {
        remediation: 'spot capacity can vanish right after a launch; re-run to try the next placement',
      });
    }
    if (Date.now() >= deadline) break;
    await sleep(intervalMs, options.signal);
  }
  throw new UserError(
    'SPOTCTL_SSH_UNREACHABLE',
    `instance ${instanceId} was not running with a public address after ${Math.round(timeoutMs / 1000)} s (last state: ${last})`,
    {
      remediation: 'check the instance in the EC2 console; spotctl terminated it',
    },
  );
}

async function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  const { setTimeout: sleep } = await import('node:timers/promises');
  await sleep(ms, undefined, signal ? { signal } : {});
}

/** Live instances (not terminated) carrying `spotctl:run-id=<runId>` in one region. */
export async function findRunInstances(ec2: EC2Client, runId: string, signal?: AbortSignal): Promise<Instance[]> {
  const { DescribeInstancesCommand } = await loadEc2Sdk();
  const found: Instance[] = [];
  let token: string | undefined;
  for (let page = 0; page < 20; page++) {
    const r = await ec2.send(
      new DescribeInstancesCommand({
        Filters: [
          { Name: `tag:${TAG.runId}`, Values: [runId] },
          { Name: `tag:${TAG.managed}`, Values: ['true'] },
          { Name: 'instance-state-name', Values: [...LIVE_STATES] },
        ],
        ...(token ? { NextToken: token } : {}),
      }),
      sendOptions(signal),
    );
    for (const res of r.Reservations ?? []) found.push(...(res.Instances ?? []));
    token = r.NextToken;
    if (!token) break;
  }
  return found;
}

/** TerminateInstances for the given ids (no-op for none); returns the ids EC2 acknowledged. */
export async function terminateInstances(ec2: EC2Client, instanceIds: readonly string[], signal?: AbortSignal): Promise<string[]> {
  if (instanceIds.length === 0) return [];
  const { TerminateInstancesCommand } = await loadEc2Sdk();
  const r = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [...instanceIds] }), sendOptions(signal));
  return (r.TerminatingInstances ?? []).map((t) => t.InstanceId).filter((id): id is string => id !== undefined);
}

/** @default 60_000: cleanup gets its own time, never the (maybe aborted) signal of what failed. */
export const CLEANUP_TIMEOUT_MS = 60_000;

/**
 * Terminates every live instance of the run in the given regions. Never throws: returns what it
 * terminated and what it could not, so the caller can say exactly what to do by hand.
 */
export async function terminateRun(
  clientFor: Ec2ClientFor,
  regions: Iterable<string>,
  runId: string,
  options: { knownIds?: ReadonlyMap<string, string>; timeoutMs?: number } = {},
): Promise<{ terminated: { region: string; instanceId: string }[]; failed: { region: string; error: unknown; instanceIds: string[] }[] }> {
  const signal = AbortSignal.timeout(options.timeoutMs ?? CLEANUP_TIMEOUT_MS);
  const terminated: { region: string; instanceId: string }[] = [];
  const failed: { region: string; error: unknown; instanceIds: string[] }[] = [];
  for (const region of new Set(regions)) {
    const known = [...(options.knownIds ?? new Map<string, string>())].filter(([, r]) => r === region).map(([id]) => id);
    try {
      const ec2 = await clientFor(region);
      const ids = new Set(known);
      try {
        for (const i of await findRunInstances(ec2, runId, signal)) if (i.InstanceId) ids.add(i.InstanceId);
      } catch (error) {
        // Without the search we still terminate what we know by id.
        if (ids.size === 0) throw error;
        debug('finding instances of %s in %s failed: %O', runId, region, error);
      }
      for (const id of await terminateInstances(ec2, [...ids], signal)) terminated.push({ region, instanceId: id });
    } catch (error) {
      debug('terminating instances of %s in %s failed: %O', runId, region, error);
      failed.push({ region, error, instanceIds: known });
    }
  }
  return { terminated, failed };
}
