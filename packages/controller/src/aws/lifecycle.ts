/**
 * What spotctl has running in the cloud, and cleaning it up: `ls`, `teardown`, `gc`.
 *
 * The cloud's tags are the source of truth: every query here filters on `spotctl:managed=true`
 * AND re-checks the tag on each resource before touching it, so a resource without our tags is
 * never terminated or deleted, whatever a filter (or an emulator) returns. (runctl's zombie
 * cleanup targeted resources *without* its tags; this is the opposite, on purpose.)
 *
 * `gc` terminates run instances past their `spotctl:expires-at` (an instance whose agent never
 * started, or one past --max-runtime + grace + idle timeout + margin) and deletes spotctl's key
 * pairs and security groups that no instance or network interface uses. `never` is never expired:
 * those instances belong to their agent's idle watchdog (and to `spotctl teardown`).
 */
import type { EC2Client, Instance } from '@aws-sdk/client-ec2';
import type { IAMClient } from '@aws-sdk/client-iam';
import createDebug from 'debug';
import { loadEc2Sdk, sendOptions, type Ec2ClientFor } from './clients.ts';
import { awsErrorName, describeAwsError } from './errors.ts';
import { deleteRunRole, listRunRoles } from './iam.ts';
import { LIVE_STATES, terminateInstances } from './launch.ts';
import { mapLimit } from '../util/map-limit.ts';
import { withTimeout } from './pricing.ts';
import { MANAGED_FILTER, NEVER, TAG, isManaged, parseExpiresAt, tagMap } from './tags.ts';

const debug = createDebug('spotctl:lifecycle');

/** Pages per Describe call (every loop is bounded). */
const MAX_PAGES = 50;
/** @default 4 */
const REGION_CONCURRENCY = 4;
/** @default 30_000 */
export const LIFECYCLE_REGION_TIMEOUT_MS = 30_000;
/**
 * gc leaves key pairs and security groups younger than this alone: a run that is about to use
 * them (between ensuring them and RunInstances) must not lose them. @default 15 min
 */
export const GC_MIN_AGE_MS = 15 * 60_000;

export interface ManagedInstance {
  instanceId: string;
  region: string;
  az: string;
  instanceType: string;
  state: string;
  /** ms since the epoch. */
  launchedAt: number | undefined;
  /** From `spotctl:price` (spot launches only). */
  pricePerHour: number | undefined;
  market: string | undefined;
  runId: string | undefined;
  owner: string | undefined;
  command: string | undefined;
  /** ISO time, `never`, or undefined when missing. */
  expiresAt: string | undefined;
  launchedFrom: string | undefined;
  role: string | undefined;
  publicIp: string | undefined;
  sshUser: string | undefined;
  keyName: string | undefined;
  imageId: string | undefined;
  securityGroupIds: string[];
  tags: Record<string, string>;
}

export interface RegionError {
  region: string;
  message: string;
}

export function toManagedInstance(instance: Instance, region: string): ManagedInstance {
  const tags = tagMap(instance.Tags);
  const price = Number(tags[TAG.price]);
  return {
    instanceId: instance.InstanceId ?? '?',
    region,
    az: instance.Placement?.AvailabilityZone ?? '?',
    instanceType: instance.InstanceType ?? '?',
    state: instance.State?.Name ?? 'unknown',
    launchedAt: instance.LaunchTime ? new Date(instance.LaunchTime).getTime() : undefined,
    pricePerHour: Number.isFinite(price) && tags[TAG.price] !== undefined ? price : undefined,
    market: tags[TAG.market] ?? (instance.InstanceLifecycle === 'spot' ? 'spot' : undefined),
    runId: tags[TAG.runId],
    owner: tags[TAG.owner],
    command: tags[TAG.command],
    expiresAt: tags[TAG.expiresAt],
    launchedFrom: tags[TAG.launchedFrom],
    role: tags[TAG.role],
    publicIp: instance.PublicIpAddress,
    sshUser: tags[TAG.sshUser],
    keyName: instance.KeyName,
    imageId: instance.ImageId,
    // AWS lists the groups on the instance and on its interfaces; moto only on the interface.
    securityGroupIds: [
      ...new Set(
        [...(instance.SecurityGroups ?? []), ...(instance.NetworkInterfaces ?? []).flatMap((n) => n.Groups ?? [])]
          .map((g) => g.GroupId)
          .filter((id): id is string => id !== undefined),
      ),
    ],
    tags,
  };
}

/** USD spent so far at the tagged price (a spot price moves; this is the launch-time estimate). */
export function spendOf(instance: Pick<ManagedInstance, 'pricePerHour' | 'launchedAt' | 'state'>, now: number): number | undefined {
  if (instance.pricePerHour === undefined || instance.launchedAt === undefined) return undefined;
  if (instance.state === 'terminated') return undefined;
  return (instance.pricePerHour * Math.max(0, now - instance.launchedAt)) / 3_600_000;
}

async function describeManagedInstances(
  ec2: EC2Client,
  region: string,
  filters: { Name: string; Values: string[] }[],
  signal?: AbortSignal,
): Promise<ManagedInstance[]> {
  const { DescribeInstancesCommand } = await loadEc2Sdk();
  const out: ManagedInstance[] = [];
  let token: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const r = await ec2.send(
      new DescribeInstancesCommand({ Filters: [MANAGED_FILTER, ...filters], ...(token ? { NextToken: token } : {}) }),
      sendOptions(signal),
    );
    for (const res of r.Reservations ?? []) {
      // The filter already asked for our tag; this check makes sure, whoever answered.
      for (const i of res.Instances ?? []) if (isManaged(i.Tags)) out.push(toManagedInstance(i, region));
    }
    token = r.NextToken;
    if (!token) break;
  }
  return out;
}

export interface ListOptions {
  clientFor: Ec2ClientFor;
  regions: readonly string[];
  /** Also terminated and shutting-down instances. @default false */
  includeEnded?: boolean;
  /** Only this run. */
  runId?: string;
  signal?: AbortSignal;
}

/** Every spotctl-tagged instance in the regions (regions that fail are reported, not fatal). */
export async function listManagedInstances(options: ListOptions): Promise<{ instances: ManagedInstance[]; errors: RegionError[] }> {
  const errors: RegionError[] = [];
  const filters = [
    ...(options.includeEnded ? [] : [{ Name: 'instance-state-name', Values: [...LIVE_STATES] }]),
    ...(options.runId ? [{ Name: `tag:${TAG.runId}`, Values: [options.runId] }] : []),
  ];
  const perRegion = await mapLimit(options.regions, REGION_CONCURRENCY, async (region) => {
    try {
      return await withTimeout(
        options.signal,
        LIFECYCLE_REGION_TIMEOUT_MS,
        async (signal) => await describeManagedInstances(await options.clientFor(region), region, filters, signal),
      );
    } catch (error) {
      if (options.signal?.aborted) throw error;
      errors.push({ region, message: describeAwsError(error, { region, action: 'DescribeInstances' }) });
      return [];
    }
  });
  const instances = perRegion.flat().sort((a, b) => (b.launchedAt ?? 0) - (a.launchedAt ?? 0) || a.instanceId.localeCompare(b.instanceId));
  return { instances, errors };
}

export interface TerminateResult {
  terminated: ManagedInstance[];
  failed: { instance: ManagedInstance; message: string }[];
}

/** Terminates the given managed instances (re-checking the tag), grouped by region. */
export async function terminateManaged(
  clientFor: Ec2ClientFor,
  instances: readonly ManagedInstance[],
  signal?: AbortSignal,
): Promise<TerminateResult> {
  const result: TerminateResult = { terminated: [], failed: [] };
  const byRegion = new Map<string, ManagedInstance[]>();
  for (const i of instances) {
    if (i.tags[TAG.managed] !== 'true') continue;
    byRegion.set(i.region, [...(byRegion.get(i.region) ?? []), i]);
  }
  for (const [region, list] of byRegion) {
    try {
      const done = new Set(
        await terminateInstances(
          await clientFor(region),
          list.map((i) => i.instanceId),
          signal,
        ),
      );
      for (const i of list) {
        if (done.has(i.instanceId)) result.terminated.push(i);
        else result.failed.push({ instance: i, message: 'EC2 did not acknowledge the termination' });
      }
    } catch (error) {
      if (signal?.aborted) throw error;
      for (const i of list) result.failed.push({ instance: i, message: describeAwsError(error, { region, action: 'TerminateInstances' }) });
    }
  }
  return result;
}

export interface GcOptions {
  clientFor: Ec2ClientFor;
  regions: readonly string[];
  /** @default Date.now */
  now?: () => number;
  /** Report only. @default false */
  dryRun?: boolean;
  /** @default GC_MIN_AGE_MS */
  minAgeMs?: number;
  /** With it, run roles (S3 access) whose run has no instance left in any region are deleted too. */
  iam?: IAMClient;
  signal?: AbortSignal;
}

export interface GcAction {
  /** `global` for IAM. */
  region: string;
  kind: 'instance' | 'key-pair' | 'security-group' | 'iam-role';
  id: string;
  /** Why it goes, or why it could not. */
  reason: string;
  done: boolean;
  error?: string;
}

export interface GcReport {
  actions: GcAction[];
  errors: RegionError[];
}

/** Is the instance past its `spotctl:expires-at`? `never` and unreadable values are not. */
export function isExpired(instance: Pick<ManagedInstance, 'expiresAt'>, now: number): boolean {
  if (instance.expiresAt === NEVER) return false;
  const at = parseExpiresAt(instance.expiresAt);
  return at !== undefined && at.getTime() < now;
}

function createdAt(tags: Record<string, string>, fallback: Date | undefined): number | undefined {
  const t = Date.parse(tags[TAG.created] ?? '');
  if (!Number.isNaN(t)) return t;
  return fallback ? new Date(fallback).getTime() : undefined;
}

async function gcRegion(
  region: string,
  ec2: EC2Client,
  options: GcOptions,
  signal: AbortSignal,
  liveRuns: Set<string>,
): Promise<GcAction[]> {
  const sdk = await loadEc2Sdk();
  const now = (options.now ?? Date.now)();
  const minAge = options.minAgeMs ?? GC_MIN_AGE_MS;
  const actions: GcAction[] = [];

  // 1. Expired run instances.
  const live = await describeManagedInstances(ec2, region, [{ Name: 'instance-state-name', Values: [...LIVE_STATES] }], signal);
  const expired = live.filter((i) => isExpired(i, now));
  if (expired.length > 0) {
    const ids = expired.map((i) => i.instanceId);
    let error: string | undefined;
    let done = new Set<string>();
    if (!options.dryRun) {
      try {
        done = new Set(await terminateInstances(ec2, ids, signal));
      } catch (e) {
        if (signal.aborted) throw e;
        error = describeAwsError(e, { region, action: 'TerminateInstances' });
      }
    }
    for (const i of expired) {
      actions.push({
        region,
        kind: 'instance',
        id: i.instanceId,
        reason: `past ${TAG.expiresAt} ${i.expiresAt} (run ${i.runId ?? '?'})`,
        done: done.has(i.instanceId),
        ...(error ? { error } : {}),
      });
    }
  }
  // Instances this gc ends (or, in a dry run, would end) no longer count as users.
  const going = new Set(expired.map((i) => i.instanceId));
  for (const i of live) if (i.runId && !going.has(i.instanceId)) liveRuns.add(i.runId);
  // One still shutting down holds its role's credentials a moment longer.
  const shutting = await describeManagedInstances(ec2, region, [{ Name: 'instance-state-name', Values: ['shutting-down'] }], signal);
  for (const i of shutting) if (i.runId) liveRuns.add(i.runId);

  // 2. Key pairs no live instance uses. (Instances of every owner count, tagged or not.)
  const pairs = (await ec2.send(new sdk.DescribeKeyPairsCommand({ Filters: [MANAGED_FILTER] }), sendOptions(signal))).KeyPairs ?? [];
  for (const pair of pairs) {
    if (!pair.KeyName || !isManaged(pair.Tags)) continue;
    const born = createdAt(tagMap(pair.Tags), pair.CreateTime);
    if (born === undefined || now - born < minAge) continue;
    const users = await ec2.send(
      new sdk.DescribeInstancesCommand({
        Filters: [
          { Name: 'key-name', Values: [pair.KeyName] },
          { Name: 'instance-state-name', Values: [...LIVE_STATES, 'shutting-down'] },
        ],
      }),
      sendOptions(signal),
    );
    const inUse = (users.Reservations ?? []).some((r) => (r.Instances ?? []).some((i) => !going.has(i.InstanceId ?? '')));
    if (inUse) continue;
    const action: GcAction = { region, kind: 'key-pair', id: pair.KeyName, reason: 'no instance uses it', done: false };
    if (!options.dryRun) {
      try {
        await ec2.send(new sdk.DeleteKeyPairCommand({ KeyName: pair.KeyName }), sendOptions(signal));
        action.done = true;
      } catch (e) {
        if (signal.aborted) throw e;
        action.error = describeAwsError(e, { region, action: 'DeleteKeyPair' });
      }
    }
    actions.push(action);
  }

  // 3. Security groups no network interface uses.
  const groups =
    (await ec2.send(new sdk.DescribeSecurityGroupsCommand({ Filters: [MANAGED_FILTER] }), sendOptions(signal))).SecurityGroups ?? [];
  for (const group of groups) {
    if (!group.GroupId || !isManaged(group.Tags)) continue;
    const born = createdAt(tagMap(group.Tags), undefined);
    if (born === undefined || now - born < minAge) continue;
    const enis = await ec2.send(
      new sdk.DescribeNetworkInterfacesCommand({ Filters: [{ Name: 'group-id', Values: [group.GroupId] }] }),
      sendOptions(signal),
    );
    // An interface of an instance gc is terminating right now still holds the group; next gc gets it.
    if ((enis.NetworkInterfaces ?? []).length > 0) continue;
    const action: GcAction = {
      region,
      kind: 'security-group',
      id: group.GroupId,
      reason: `no network interface uses it (${group.GroupName ?? ''})`,
      done: false,
    };
    if (!options.dryRun) {
      try {
        await ec2.send(new sdk.DeleteSecurityGroupCommand({ GroupId: group.GroupId }), sendOptions(signal));
        action.done = true;
      } catch (e) {
        if (signal.aborted) throw e;
        // AWS refuses while a terminating instance still holds the group: try again later.
        action.error =
          awsErrorName(e) === 'DependencyViolation'
            ? 'still in use (an instance is shutting down); run gc again in a few minutes'
            : describeAwsError(e, { region, action: 'DeleteSecurityGroup' });
      }
    }
    actions.push(action);
  }
  debug('gc %s: %d actions', region, actions.length);
  return actions;
}

/** Garbage-collects spotctl's resources in the regions (see the file comment). */
export async function gcManaged(options: GcOptions): Promise<GcReport> {
  const errors: RegionError[] = [];
  const liveRuns = new Set<string>();
  const perRegion = await mapLimit(options.regions, REGION_CONCURRENCY, async (region) => {
    try {
      return await withTimeout(
        options.signal,
        LIFECYCLE_REGION_TIMEOUT_MS * 2,
        async (signal) => await gcRegion(region, await options.clientFor(region), options, signal, liveRuns),
      );
    } catch (error) {
      if (options.signal?.aborted) throw error;
      errors.push({ region, message: describeAwsError(error, { region }) });
      return [];
    }
  });
  const actions = perRegion.flat();
  // A region we could not see may hold the run's instance: its role must stay until we can.
  if (options.iam && errors.length === 0) {
    try {
      actions.push(...(await gcRunRoles(options.iam, liveRuns, options)));
    } catch (error) {
      if (options.signal?.aborted) throw error;
      errors.push({ region: 'global', message: `IAM: ${describeAwsError(error)}` });
    }
  }
  return { actions, errors };
}

/**
 * Run roles whose run has no instance left (in the regions looked at) and that are older than
 * the minimum age, so a run being launched right now keeps its role.
 */
async function gcRunRoles(iam: IAMClient, liveRuns: ReadonlySet<string>, options: GcOptions): Promise<GcAction[]> {
  const now = (options.now ?? Date.now)();
  const minAge = options.minAgeMs ?? GC_MIN_AGE_MS;
  const actions: GcAction[] = [];
  for (const role of await listRunRoles(iam, options.signal)) {
    const born = Date.parse(role.created ?? '');
    if (liveRuns.has(role.runId) || Number.isNaN(born) || now - born < minAge) continue;
    const action: GcAction = {
      region: 'global',
      kind: 'iam-role',
      id: role.roleName,
      reason: `run ${role.runId} has no instance left`,
      done: false,
    };
    if (!options.dryRun) {
      try {
        await deleteRunRole(iam, role.runId, options.signal);
        action.done = true;
      } catch (e) {
        if (options.signal?.aborted) throw e;
        action.error = describeAwsError(e);
      }
    }
    actions.push(action);
  }
  return actions;
}
