/**
 * The aws provider: an SSH run whose host spotctl launches. place → infra → launch → wait for
 * "running" and SSH → (the SSH provider: agent, sync, deps, start). Its parts: options
 * (aws-options.ts), reaching the instance (aws-access.ts), ending what a run holds
 * (aws-teardown.ts), test-only settings (test-overrides.ts); the launch is here.
 *
 * The one rule: once RunInstances may have created an instance, every way out of `launchAws`
 * other than success terminates it first — errors, Ctrl-C and SIGTERM (the run's AbortSignal),
 * and errors in the SSH part. After the run, `release()` does the same (the run loop calls it on
 * success, failure and Ctrl-C; attach and stop once they let the agent go). A controller killed
 * outright leaves the job to the agent's idle watchdog (its shutdown action powers the instance
 * off, which terminates it), and an instance whose agent never started to `spotctl gc` once its
 * `spotctl:expires-at` has passed.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SpotctlError, UserError, deadline, parseS3Url, type ShutdownAction } from '@spotctl/shared';
import createDebug from 'debug';
import { cloudConfig } from '../aws/ami-user-data.ts';
import { Ec2Clients, loadEc2Sdk, type Ec2ClientFor } from '../aws/clients.ts';
import { describeAwsError, type Market } from '../aws/errors.ts';
import { createRunRole, iamClient, partitionOf, runRoleName, runRolePolicy, type RunRole } from '../aws/iam.ts';
import { UBUNTU_USER, callerArn, ensureRegionInfra, type LocalKey, type RegionInfra } from '../aws/infra.ts';
import { launchInstance, terminateRun, waitForRunning, type LaunchedInstance, type RunTags } from '../aws/launch.ts';
import { findPlacements, type AttemptEvent, type PlacementCandidate } from '../aws/placement.ts';
import { NEVER, TAG, toTags } from '../aws/tags.ts';
import type { Output } from '../output/output.ts';
import type { AwsRunInfo, RunRecord, RunStore } from '../runs/run-store.ts';
import { pinnedTarget, sshIdentity, waitForSsh } from './aws-access.ts';
import type { AwsLaunchOptions } from './aws-options.ts';
import { cleanupFailureError, releaseRunRole, shielded, terminateRunInstance } from './aws-teardown.ts';
import { step, type Attempt, type LaunchContext, type Provider } from './provider.ts';
import { SshSession, launchSsh } from './ssh.ts';
import type { TestHostOverride } from './test-overrides.ts';

const debug = createDebug('spotctl:aws');

/** The placement search (every region, with retries) must end. */
const PLACEMENT_TIMEOUT_MS = 120_000;
/** Until the agent is up, `gc` may terminate the instance after this long. @default 1 h */
export const SETUP_ALLOWANCE_MS = 3_600_000;
/** Added to --max-runtime (+ grace + idle timeout) for the instance's final expires-at. */
const EXPIRY_MARGIN_MS = 1_800_000;

/** On EC2: power off, which terminates (InstanceInitiatedShutdownBehavior=terminate). Never `halt`. */
export const EC2_SHUTDOWN_ACTION: ShutdownAction = { kind: 'command', argv: ['sudo', 'shutdown', '-h', 'now'] };

/** The agent's shutdown action for an instance (the test override fills in its placeholders). */
export function shutdownActionFor(
  instance: Pick<LaunchedInstance, 'instanceId' | 'region'>,
  override: TestHostOverride | undefined,
): ShutdownAction {
  if (!override) return EC2_SHUTDOWN_ACTION;
  if (!override.shutdownArgv) return { kind: 'exit' };
  return {
    kind: 'command',
    argv: override.shutdownArgv.map((a) => a.replaceAll('{instanceId}', instance.instanceId).replaceAll('{region}', instance.region)),
  };
}

function describeCandidate(c: Pick<PlacementCandidate, 'instanceType' | 'az' | 'vcpus' | 'pricePerHour'>, market: Market): string {
  return `${c.instanceType} (${c.vcpus} vCPUs) ${market} in ${c.az} at $${c.pricePerHour.toFixed(4)}/h`;
}

function printAttempt(out: Output, event: AttemptEvent): void {
  switch (event.type) {
    case 'trying':
      debug('attempt %d: %s', event.attempt, describeCandidate(event.candidate, event.market));
      return;
    case 'launched':
      return;
    case 'failed':
      out.warn(
        `attempt ${event.attempt} failed: ${describeCandidate(event.candidate, event.market)} — ${event.message}${event.ruledOut > 0 ? ` (skipping ${event.ruledOut} more like it)` : ''}`,
        {
          event: 'launch-attempt-failed',
          attempt: event.attempt,
          errorName: event.errorName,
          region: event.candidate.region,
          az: event.candidate.az,
          instanceType: event.candidate.instanceType,
        },
      );
      return;
    case 'fallback':
      out.warn(`no spot capacity after ${event.tried} attempts: trying on-demand`, { event: 'launch-fallback' });
      return;
    default: {
      const never: never = event;
      throw new Error(`unknown attempt event ${String(never)}`);
    }
  }
}

function expiryAfterStart(spec: LaunchContext['spec'], now: number): Date | typeof NEVER {
  // Without a runtime limit the agent's idle watchdog ends the instance; gc must not guess a deadline.
  if (spec.maxRuntimeMs <= 0) return NEVER;
  return new Date(now + spec.maxRuntimeMs + spec.graceMs + spec.idleTimeoutMs + EXPIRY_MARGIN_MS);
}

async function setExpiresAt(clientFor: Ec2ClientFor, instance: LaunchedInstance, expiresAt: Date | typeof NEVER): Promise<void> {
  const { CreateTagsCommand } = await loadEc2Sdk();
  const ec2 = await clientFor(instance.region);
  await ec2.send(
    new CreateTagsCommand({
      Resources: [instance.instanceId],
      Tags: toTags({ [TAG.expiresAt]: expiresAt === NEVER ? NEVER : expiresAt.toISOString() }),
    }),
    { abortSignal: AbortSignal.timeout(30_000) },
  );
}

/**
 * The S3 access a run needs: its own checkpoint prefix (and the prefix it restores from), as the
 * instance role's policy. Undefined when it keeps no checkpoints in S3.
 */
export function s3AccessOf(
  spec: LaunchContext['spec'],
  runId: string,
  owner: string,
): { policy: Record<string, unknown>; label: string } | undefined {
  const wanted = s3CheckpointAccess(spec);
  if (!wanted) return undefined;
  const { own, theirs } = wanted;
  const url = (bucket: string, p: string, id: string): string => `s3://${bucket}/${p === '' ? '' : `${p}/`}${id}/`;
  return {
    policy: runRolePolicy({ partition: partitionOf(owner), runId, checkpoints: own, ...(theirs ? { restoreFrom: theirs } : {}) }),
    label: `${url(own.bucket, own.prefix, runId)}${theirs ? ` (and reading ${url(theirs.bucket, theirs.prefix, theirs.runId)})` : ''}`,
  };
}

/**
 * The S3 prefixes an aws run's checkpoints need (its own, and the one it restores from), checked
 * before anything is created: a restore from S3 needs an S3 destination of its own.
 */
export function s3CheckpointAccess(spec: LaunchContext['spec']) {
  const to = spec.spot.checkpoint?.to;
  const restore = spec.spot.checkpoint?.restoreFrom;
  const own = to?.startsWith('s3://') ? parseS3Url(to) : undefined;
  const theirs =
    restore?.target.kind === 's3'
      ? { bucket: restore.target.bucket, prefix: restore.target.prefix ?? '', runId: restore.runId }
      : undefined;
  if (!own && !theirs) return undefined;
  if (!own) {
    throw new UserError(
      'SPOTCTL_USAGE',
      `--restore-from ${theirs!.runId} reads s3://${theirs!.bucket}, but this run keeps its checkpoints on the instance`,
      {
        remediation: `give this run an S3 destination too: --checkpoint-to s3://${theirs!.bucket}/${theirs!.prefix}`,
        exitCode: 2,
      },
    );
  }
  return { own, ...(theirs ? { theirs } : {}) };
}

/** Launches the instance and hands over to the SSH provider. */
export async function launchAws(ctx: LaunchContext, options: AwsLaunchOptions, override: TestHostOverride | undefined): Promise<Attempt> {
  const { out, store } = ctx;
  let record = ctx.record;
  const runId = record.runId;
  // Ctrl-C and SIGTERM abort the run's signal (session/run-signals.ts): the cleanup below must run.
  const signal = ctx.signal ?? new AbortController().signal;

  using clients = new Ec2Clients();
  const touched = new Set<string>();
  const known = new Map<string, string>();
  let instance: LaunchedInstance | undefined;
  let runRole: RunRole | undefined;
  try {
    if (options.pinnedBy) out.info(`searching only ${options.regions.join(', ')} (from ${options.pinnedBy})`);
    // The credentials first: without them every region would fail on its own, less clearly.
    const owner = await step(
      out,
      'credentials',
      'AWS credentials work',
      async () => await callerArn({ region: options.regions[0] ?? 'us-east-1', signal }),
    );
    const plan = await step(out, 'place', 'priced the fitting instance types', async () => {
      using placementDeadline = deadline(PLACEMENT_TIMEOUT_MS, signal);
      const placementSignal = placementDeadline.signal;
      return await findPlacements({
        clientFor: clients.forRegion,
        regions: options.regions,
        workers: options.workers,
        arm: options.architecture === 'arm64',
        noHt: options.noHt,
        placementScores: options.placementScores,
        signal: placementSignal,
        ...(options.families ? { families: options.families } : {}),
        ...(options.instanceTypes ? { instanceTypes: options.instanceTypes } : {}),
        ...(options.gpus ? { gpus: options.gpus } : {}),
      });
    });
    for (const note of plan.notes) out.info(note);
    for (const f of plan.failures) out.warn(`${f.region} skipped: ${f.message}${f.remediation ? ` → ${f.remediation}` : ''}`);
    // A recovery leaves out the pools earlier attempts were interrupted in (their cool-down).
    const exclude = ctx.exclude ?? [];
    const candidates = plan.candidates.filter((c) => !exclude.some((x) => x.instanceType === c.instanceType && x.az === c.az));
    if (candidates.length === 0) {
      throw new UserError(
        'SPOTCTL_NO_CAPACITY',
        `no placement is left once the interrupted pools (${exclude.map((x) => `${x.instanceType} ${x.az}`).join(', ')}) are excluded`,
        {
          remediation: 'allow more placements (--regions, --families or --instance-type), or a shorter --recovery-cooldown',
        },
      );
    }
    const cheapest = candidates[0]!;
    out.info(
      `${plan.need}: cheapest is ${describeCandidate(cheapest, 'spot')} (${candidates.length} placements ranked${exclude.length ? `, ${plan.candidates.length - candidates.length} excluded after an interruption` : ''})`,
    );

    const now = new Date();
    const { cidr, key, hostKey } = await step(
      out,
      'infra',
      'checked SSH key and address',
      async () =>
        await sshIdentity({
          ...(options.sshCidr !== undefined ? { sshCidr: options.sshCidr } : {}),
          hostKeyComment: `spotctl-host-${runId}`,
          signal,
        }),
    );
    const access = s3AccessOf(ctx.spec, runId, owner);
    const kept = record.runRole;
    if (kept && !kept.deletedAt && kept.arn) {
      // A later attempt: the run's role outlives its attempts (releaseRun ends it at the run's end).
      runRole = { roleName: kept.name, instanceProfileName: kept.name, instanceProfileArn: kept.arn };
    } else if (access) {
      runRole = await step(out, 'iam', `IAM role ${runRoleName(runId)}: S3 access to ${access.label} only`, async () => {
        using iam = await iamClient();
        return await createRunRole({ iam, runId, owner, policy: access.policy, createdAt: now, signal });
      });
      // The role is the run's, not this attempt's: releaseRun() deletes it once the run is over.
      record = store.update(runId, { runRole: { name: runRole.instanceProfileName, arn: runRole.instanceProfileArn } });
    }
    if (cidr.cidr === '0.0.0.0/0')
      out.warn('SSH is open to the whole internet (--ssh-cidr 0.0.0.0/0); the instance accepts only your key, but anyone can knock');
    debug('ssh cidr %s from %s; key %s', cidr.cidr, cidr.source, key.name);

    const infraByRegion = new Map<string, Promise<RegionInfra>>();
    const infraFor = (region: string): Promise<RegionInfra> => {
      let p = infraByRegion.get(region);
      if (!p) {
        p = (async () => {
          const started = performance.now();
          const infra = await ensureRegionInfra({
            ec2: await clients.forRegion(region),
            region,
            owner,
            key: key satisfies LocalKey,
            sshCidr: cidr.cidr,
            architecture: options.architecture,
            gpu: options.gpus !== undefined,
            signal,
          });
          out.step(
            'infra',
            `${region}: key pair ${infra.keyName}, security group ${infra.securityGroupId} (22/tcp from ${cidr.cidr}), image ${infra.image.name}`,
            performance.now() - started,
          );
          if (!infra.image.baked) {
            const base = infra.image.gpu ? 'the Deep Learning Base image (NVIDIA driver)' : 'stock Ubuntu 24.04';
            out.info(
              `using ${base} and installing Node.js and python3 at boot; \`spotctl ami build --region ${region}${infra.image.gpu ? ' --gpu' : ''}\` bakes an image that makes launches faster`,
            );
          }
          return infra;
        })();
        infraByRegion.set(region, p);
        // A failed region must be asked again on the next attempt there, not fail forever.
        p.catch(() => infraByRegion.delete(region));
      }
      return p;
    };
    const tags: RunTags = {
      runId,
      owner,
      command: ctx.spec.command,
      createdAt: now,
      expiresAt: new Date(now.getTime() + SETUP_ALLOWANCE_MS),
      sshUser: UBUNTU_USER,
      launchedFrom: os.hostname(),
      detached: ctx.spec.detached,
      hostPublicKey: hostKey.publicKey,
      remoteDir: ctx.spec.remoteDir ?? '~/.spotctl',
    };

    const launched = await step(
      out,
      'launch',
      'launched the instance',
      async () =>
        await launchInstance({
          candidates,
          clientFor: clients.forRegion,
          infraFor,
          userDataFor: (infra) => cloudConfig({ hostKey, install: !infra.image.baked, runId, gpu: infra.image.gpu === true }),
          tags,
          market: options.market,
          spotFallback: options.spotFallback,
          onAttempt: (event) => printAttempt(out, event),
          onRegionTouched: (region) => touched.add(region),
          ...(runRole ? { instanceProfileArn: runRole.instanceProfileArn } : {}),
          signal,
        }),
    );
    instance = launched.value;
    known.set(instance.instanceId, instance.region);
    out.info(`instance ${instance.instanceId}: ${describeCandidate({ ...instance }, instance.market)}`, {
      event: 'instance',
      instanceId: instance.instanceId,
      region: instance.region,
      az: instance.az,
      instanceType: instance.instanceType,
      market: instance.market,
      pricePerHour: instance.pricePerHour,
    });
    const aws: AwsRunInfo = {
      region: instance.region,
      az: instance.az,
      instanceId: instance.instanceId,
      instanceType: instance.instanceType,
      vcpus: instance.vcpus,
      market: instance.market,
      pricePerHour: instance.pricePerHour,
      imageId: instance.imageId,
      keyName: instance.keyName,
      securityGroupId: instance.securityGroupId,
      launchedAt: instance.launchedAt,
      ...(runRole ? { instanceProfile: runRole.instanceProfileName } : {}),
    };
    record = store.update(runId, { aws });

    const running = await step(
      out,
      'boot',
      `${instance.instanceId} is running`,
      async () => await waitForRunning(await clients.forRegion(instance!.region), instance!.instanceId, { signal }),
    );

    // The run's own known_hosts: exactly the key we generated, for exactly this address.
    const target = await pinnedTarget({
      address: running.address,
      instanceId: instance.instanceId,
      signal,
      key,
      hostPublicKey: hostKey.publicKey,
      knownHostsFile: path.join(store.runDir(runId), 'known_hosts'),
      override,
      sshConfig: options.sshConfig,
      out,
    });
    if (target.identityFile && !existsSync(target.identityFile))
      throw new SpotctlError('SPOTCTL_INTERNAL', `the SSH key ${target.identityFile} vanished`);
    record = store.update(runId, { target });

    await step(
      out,
      'ssh',
      `SSH to ${target.host} works${running.address === target.host ? '' : ` (instance ${running.address})`}`,
      async () => await waitForSsh(target, { controlDir: store.runDir(runId), signal, out }),
    );

    const imageName = ctx.spec.gpus ? (await infraFor(instance.region)).image.name : undefined;
    const sshCtx: LaunchContext = {
      ...ctx,
      record,
      signal,
      // On EC2 the agent polls the real metadata service for interruption notices.
      spec: {
        ...ctx.spec,
        spot: { ...ctx.spec.spot, imdsEndpoint: ctx.spec.spot.imdsEndpoint ?? 'default' },
        // The agent's GPU error names the type and image, so the user knows which launch lacked them.
        ...(ctx.spec.gpus
          ? {
              gpus: {
                ...ctx.spec.gpus,
                where: `${instance.instanceType} with image ${instance.imageId} (${imageName ?? '?'}) in ${instance.az}`,
              },
            }
          : {}),
      },
    };
    const launchedSsh = await launchSsh(sshCtx, { shutdownAction: shutdownActionFor(instance, override) });
    try {
      await setExpiresAt(clients.forRegion, instance, expiryAfterStart(ctx.spec, Date.now()));
    } catch (error) {
      // Not fatal: the setup deadline stays, so gc would end it early rather than never.
      out.warn(`could not update ${TAG.expiresAt} on ${instance.instanceId}: ${describeAwsError(error)}`);
    }
    return launchedSsh;
  } catch (error) {
    // This attempt's instance goes first; the run's IAM role is the run loop's to release.
    if (touched.size > 0 || known.size > 0) {
      const { terminated, failed } = await shielded(
        out,
        'terminating the instance first (bounded; spotctl gc cleans up if this is cut short)',
        () => terminateRun(clients.forRegion, [...touched, ...known.values()], runId, { knownIds: known }),
      );
      for (const t of terminated)
        out.info(`terminated ${t.instanceId} (${t.region}) because the launch did not complete`, {
          event: 'terminated',
          instanceId: t.instanceId,
          region: t.region,
        });
      if (instance && terminated.some((t) => t.instanceId === instance!.instanceId)) {
        store.update(runId, { aws: { ...store.load(runId).aws!, terminatedAt: Date.now() } });
      }
      throw cleanupFailureError(error, failed, runId);
    }
    throw error;
  }
}

/** EC2 instances, one per attempt, reached over SSH; the run's IAM role lives across attempts. */
export class AwsProvider implements Provider {
  readonly kind = 'aws';

  constructor(
    private readonly deps: { store: RunStore; out: Output; testOverrides: { host?: TestHostOverride } },
    /** Only a launch needs them (attach, stop, ps do not). */
    private readonly launchOptions?: AwsLaunchOptions,
  ) {}

  where(): string {
    return 'on a new EC2 instance';
  }

  async launch(ctx: LaunchContext): Promise<Attempt> {
    if (!this.launchOptions) throw new SpotctlError('SPOTCTL_INTERNAL', 'the aws provider was made without launch options');
    return await launchAws(ctx, this.launchOptions, this.deps.testOverrides.host);
  }

  locate(record: RunRecord): Attempt {
    // An SSH run whose host spotctl launched.
    return { record, session: new SshSession(record, this.deps.store.runDir(record.runId)) };
  }

  /** Terminates the attempt's instance (bounded, Ctrl-C held off) and says what it cost. */
  async release(record: RunRecord, reason?: string): Promise<boolean> {
    return await terminateRunInstance({ store: this.deps.store, record, out: this.deps.out, ...(reason ? { reason } : {}) });
  }

  /** Asks EC2 (DescribeInstances) whether the attempt's instance is shutting down or terminated. */
  async isGone(record: RunRecord, signal?: AbortSignal): Promise<boolean> {
    const aws = record.aws;
    if (!aws) return false;
    const { DescribeInstancesCommand } = await loadEc2Sdk();
    using clients = new Ec2Clients();
    const ec2 = await clients.forRegion(aws.region);
    const r = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [aws.instanceId] }), {
      abortSignal: signal ?? AbortSignal.timeout(15_000),
    });
    const state = r.Reservations?.[0]?.Instances?.[0]?.State?.Name;
    debug('%s is %s', aws.instanceId, state);
    return state === 'shutting-down' || state === 'terminated';
  }

  /** Deletes the run's IAM role and instance profile, once its instance is gone. */
  async releaseRun(record: RunRecord): Promise<void> {
    await releaseRunRole({ store: this.deps.store, record, out: this.deps.out });
  }
}
