/**
 * The aws provider: an SSH run whose host spotctl launches. place → infra → launch → wait for
 * "running" and SSH → (the SSH provider: agent, sync, deps, start) → tail → teardown.
 *
 * The one rule: once RunInstances may have created an instance, every way out of `launchAws`
 * other than success terminates it first — errors, Ctrl-C and SIGTERM (an AbortSignal), and
 * errors in the SSH part. `teardownAwsRun` does the same after the run (run.ts calls it on
 * success, failure and Ctrl-C). A controller killed outright leaves the job to the agent's idle
 * watchdog (its shutdown action powers the instance off, which terminates it), and an instance
 * whose agent never started to `spotctl gc` once its `spotctl:expires-at` has passed.
 *
 * Test-only settings (README, "Testing"): SPOTCTL_TEST_INSTANCE_HOST=user@addr[:port] makes the
 * provider SSH to that host instead of the instance's address (moto invents addresses nobody
 * answers on); SPOTCTL_TEST_INSTANCE_IDENTITY and SPOTCTL_TEST_INSTANCE_KNOWN_HOSTS replace the
 * key and the pinned known_hosts; SPOTCTL_TEST_SHUTDOWN_ARGV (a JSON array; `{instanceId}` and
 * `{region}` are filled in) replaces the agent's `sudo shutdown -h now`. With the host override
 * and no shutdown override the agent only exits: a test host is never shut down.
 */
import type { PlacementCliOptions } from '../aws/cli-options.ts';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SpotctlError, UserError, deadline, parseS3Url, type ShutdownAction } from '@spotctl/shared';
import type { Command } from 'commander';
import createDebug from 'debug';
import { cloudConfig, cloudInitWaitScript, generateHostKey, writeKnownHosts } from '../aws/ami-user-data.ts';
import { Ec2Clients, loadEc2Sdk, type Ec2ClientFor } from '../aws/clients.ts';
import { describeAwsError, type Market } from '../aws/errors.ts';
import { createRunRole, deleteRunRole, iamClient, partitionOf, runRoleName, runRolePolicy, type RunRole } from '../aws/iam.ts';
import { UBUNTU_USER, callerArn, ensureLocalKey, ensureRegionInfra, resolveSshCidr, type LocalKey, type RegionInfra } from '../aws/infra.ts';
import { launchInstance, terminateRun, waitForRunning, type LaunchedInstance, type RunTags } from '../aws/launch.ts';
import { findPlacements, type AttemptEvent, type PlacementCandidate } from '../aws/placement.ts';
import { resolveRegions } from '../aws/pricing.ts';
import { DEFAULT_WORKERS, parseFamilies, parseInstanceTypes, validateWorkers, type Architecture } from '../aws/sizing.ts';
import { NEVER, TAG, toTags } from '../aws/tags.ts';
import { Output, formatDuration } from '../output/output.ts';
import { spotctlHome, type AwsRunInfo, type RunRecord, type RunStore } from '../runs/run-store.ts';
import type { AgentConnection } from '../transport/agent-client.ts';
import { SshConnection, parseHostSpec, type SshTarget } from '../transport/ssh.ts';
import { step, type LaunchContext, type ProviderSession } from './provider.ts';
import { SshSession, launchSsh } from './ssh.ts';

const debug = createDebug('spotctl:aws');

/** The placement search (every region, with retries) must end. */
const PLACEMENT_TIMEOUT_MS = 120_000;
/** From "running" to an SSH login that works: boot, cloud-init writing keys. @default 600_000 */
export const SSH_READY_TIMEOUT_MS = 600_000;
/** cloud-init installing Node.js and python3-venv on stock Ubuntu. @default 900 */
export const CLOUD_INIT_TIMEOUT_S = 900;
/** Between SSH attempts while the instance boots. */
const SSH_RETRY_INTERVAL_MS = 3_000;
/** Until the agent is up, `gc` may terminate the instance after this long. @default 1 h */
export const SETUP_ALLOWANCE_MS = 3_600_000;
/** Added to --max-runtime (+ grace + idle timeout) for the instance's final expires-at. */
const EXPIRY_MARGIN_MS = 1_800_000;

export const TEST_ENV = {
  host: 'SPOTCTL_TEST_INSTANCE_HOST',
  identity: 'SPOTCTL_TEST_INSTANCE_IDENTITY',
  knownHosts: 'SPOTCTL_TEST_INSTANCE_KNOWN_HOSTS',
  shutdownArgv: 'SPOTCTL_TEST_SHUTDOWN_ARGV',
} as const;

/** On EC2: power off, which terminates (InstanceInitiatedShutdownBehavior=terminate). Never `halt`. */
export const EC2_SHUTDOWN_ACTION: ShutdownAction = { kind: 'command', argv: ['sudo', 'shutdown', '-h', 'now'] };

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
    ...(options.sshCidr !== undefined ? { sshCidr: options.sshCidr } : {}),
    placementScores: options.placementScores === true,
    ...(options.sshConfig ? { sshConfig: options.sshConfig } : {}),
  };
}

/** What the test-only environment asks for (undefined when none of it is set). */
export interface TestHostOverride {
  target: SshTarget;
  shutdownArgv?: string[];
}

export function testHostOverride(env: NodeJS.ProcessEnv = process.env): TestHostOverride | undefined {
  const host = env[TEST_ENV.host];
  if (!host) {
    if (env[TEST_ENV.shutdownArgv] || env[TEST_ENV.identity] || env[TEST_ENV.knownHosts]) {
      throw new UserError('SPOTCTL_CONFIG', `${TEST_ENV.identity}, ${TEST_ENV.knownHosts} and ${TEST_ENV.shutdownArgv} only apply with ${TEST_ENV.host}`, {
        remediation: `these are test-only settings: unset them, or set ${TEST_ENV.host} as well`,
      });
    }
    return undefined;
  }
  const target: SshTarget = { ...parseHostSpec(host) };
  const identity = env[TEST_ENV.identity];
  const knownHosts = env[TEST_ENV.knownHosts];
  if (identity) target.identityFile = path.resolve(identity);
  if (knownHosts) target.knownHostsFile = path.resolve(knownHosts);
  let shutdownArgv: string[] | undefined;
  const raw = env[TEST_ENV.shutdownArgv];
  if (raw) {
    const parsed: unknown = JSON.parse(raw);
    if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((a) => typeof a === 'string')) {
      throw new UserError('SPOTCTL_CONFIG', `${TEST_ENV.shutdownArgv} must be a JSON array of strings`, { remediation: `e.g. ${TEST_ENV.shutdownArgv}='["curl","-X","POST","…"]'` });
    }
    shutdownArgv = parsed as string[];
  }
  return { target, ...(shutdownArgv ? { shutdownArgv } : {}) };
}

/** The agent's shutdown action for an instance (the test override fills in its placeholders). */
export function shutdownActionFor(instance: Pick<LaunchedInstance, 'instanceId' | 'region'>, override: TestHostOverride | undefined): ShutdownAction {
  if (!override) return EC2_SHUTDOWN_ACTION;
  if (!override.shutdownArgv) return { kind: 'exit' };
  return { kind: 'command', argv: override.shutdownArgv.map((a) => a.replaceAll('{instanceId}', instance.instanceId).replaceAll('{region}', instance.region)) };
}

function keysDir(): string {
  return path.join(spotctlHome(), 'keys');
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
      out.warn(`attempt ${event.attempt} failed: ${describeCandidate(event.candidate, event.market)} — ${event.message}${event.ruledOut > 0 ? ` (skipping ${event.ruledOut} more like it)` : ''}`, {
        event: 'launch-attempt-failed',
        attempt: event.attempt,
        errorName: event.errorName,
        region: event.candidate.region,
        az: event.candidate.az,
        instanceType: event.candidate.instanceType,
      });
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

function isRetryableSshError(error: unknown): boolean {
  if (!(error instanceof UserError) || error.code !== 'SPOTCTL_SSH_UNREACHABLE') return false;
  // A wrong host key is never a boot-time hiccup: the pinned key is the only one we accept.
  return !/host key/i.test(error.message);
}

/**
 * Waits (bounded) until an SSH login works, then until cloud-init is done. sshd comes up while
 * the instance boots, and the login may be refused until cloud-init installed the key.
 */
export async function waitForSsh(target: SshTarget, options: { controlDir: string; signal?: AbortSignal; timeoutMs?: number; out: Output }): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? SSH_READY_TIMEOUT_MS);
  let attempts = 0;
  let lastError: unknown;
  for (; attempts < 10_000 && Date.now() < deadline; attempts++) {
    options.signal?.throwIfAborted();
    let conn: SshConnection | undefined;
    try {
      conn = await SshConnection.open(target, { controlDir: options.controlDir, connectTimeoutS: 10, ...(options.signal ? { signal: options.signal } : {}) });
    } catch (error) {
      if (!isRetryableSshError(error)) throw error;
      lastError = error;
      debug('ssh not ready (attempt %d): %s', attempts + 1, (error as Error).message);
      await sleep(SSH_RETRY_INTERVAL_MS, undefined, options.signal ? { signal: options.signal } : {});
      continue;
    }
    try {
      const r = await conn.exec(cloudInitWaitScript(CLOUD_INIT_TIMEOUT_S), { timeoutMs: (CLOUD_INIT_TIMEOUT_S + 30) * 1000, ...(options.signal ? { signal: options.signal } : {}) });
      const status = /cloud-init=(\S+)/.exec(r.stdout)?.[1];
      if (status !== '0' && status !== '2' && status !== 'absent') options.out.warn(`cloud-init did not finish cleanly (status ${status ?? 'unknown'}); checking the host anyway`);
      return;
    } finally {
      await conn.close();
    }
  }
  throw new UserError('SPOTCTL_SSH_UNREACHABLE', `the instance did not accept SSH within ${Math.round((options.timeoutMs ?? SSH_READY_TIMEOUT_MS) / 1000)} s: ${lastError instanceof Error ? lastError.message : 'no answer'}`, {
    remediation: 'check that nothing between this machine and AWS blocks port 22 and that --ssh-cidr (if given) covers your address; spotctl terminated the instance',
    cause: lastError,
  });
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
    new CreateTagsCommand({ Resources: [instance.instanceId], Tags: toTags({ [TAG.expiresAt]: expiresAt === NEVER ? NEVER : expiresAt.toISOString() }) }),
    { abortSignal: AbortSignal.timeout(30_000) },
  );
}

function cleanupFailureError(error: unknown, failed: { region: string; instanceIds: string[] }[], runId: string): unknown {
  if (failed.length === 0) return error;
  const where = failed.map((f) => `${f.region}${f.instanceIds.length ? ` (${f.instanceIds.join(', ')})` : ''}`).join(', ');
  return new UserError(
    error instanceof SpotctlError ? error.code : 'SPOTCTL_INTERNAL',
    `${error instanceof Error ? error.message : String(error)} — and spotctl could not confirm that the run's instances in ${where} were terminated`,
    { remediation: `terminate them now: spotctl teardown ${runId} (or in the EC2 console: instances tagged spotctl:run-id=${runId})`, cause: error },
  );
}

/**
 * The S3 access a run needs: its own checkpoint prefix (and the prefix it restores from), as the
 * instance role's policy. Undefined when it keeps no checkpoints in S3.
 */
export function s3AccessOf(spec: LaunchContext['spec'], runId: string, owner: string): { policy: Record<string, unknown>; label: string } | undefined {
  const to = spec.spot.checkpoint?.to;
  const restore = spec.spot.checkpoint?.restoreFrom;
  const own = to?.startsWith('s3://') ? parseS3Url(to) : undefined;
  const theirs = restore?.target.kind === 's3' ? { bucket: restore.target.bucket, prefix: restore.target.prefix ?? '', runId: restore.runId } : undefined;
  if (!own && !theirs) return undefined;
  if (!own) {
    throw new UserError('SPOTCTL_USAGE', `--restore-from ${theirs!.runId} reads s3://${theirs!.bucket}, but this run keeps its checkpoints on the instance`, {
      remediation: `give this run an S3 destination too: --checkpoint-to s3://${theirs!.bucket}/${theirs!.prefix}`,
      exitCode: 2,
    });
  }
  const url = (bucket: string, p: string, id: string): string => `s3://${bucket}/${p === '' ? '' : `${p}/`}${id}/`;
  return {
    policy: runRolePolicy({ partition: partitionOf(owner), runId, checkpoints: own, ...(theirs ? { restoreFrom: theirs } : {}) }),
    label: `${url(own.bucket, own.prefix, runId)}${theirs ? ` (and reading ${url(theirs.bucket, theirs.prefix, theirs.runId)})` : ''}`,
  };
}

/** Deletes the run's role and instance profile after its instance is gone; never throws. */
async function removeRunRole(out: Output, runId: string): Promise<boolean> {
  try {
    using iam = await iamClient();
    await deleteRunRole(iam, runId, AbortSignal.timeout(60_000));
    return true;
  } catch (error) {
    out.warn(`could not delete the run's IAM role ${runRoleName(runId)}: ${describeAwsError(error)} — spotctl gc deletes it later`, { event: 'iam-cleanup-failed', runId });
    return false;
  }
}

/** What every launch needs before its first RunInstances: the SSH address range, this machine's key, a host key. */
export async function sshIdentity(options: { sshCidr?: string; hostKeyComment: string; signal: AbortSignal }) {
  const [cidr, key, hostKey] = await Promise.all([
    resolveSshCidr({ ...(options.sshCidr !== undefined ? { sshCidr: options.sshCidr } : {}), signal: options.signal }),
    ensureLocalKey(keysDir()),
    generateHostKey(options.hostKeyComment),
  ]);
  return { cidr, key, hostKey };
}

/**
 * How to reach a launched instance: its address with this machine's key, and a known_hosts that
 * pins exactly the host key we generated (written here); the test-only host override wins.
 */
export async function pinnedTarget(options: {
  address: string;
  key: LocalKey;
  hostPublicKey: string;
  knownHostsFile: string;
  override: TestHostOverride | undefined;
  sshConfig: string | undefined;
  out: Output;
}): Promise<SshTarget> {
  const { address, override, knownHostsFile } = options;
  let target: SshTarget = { user: UBUNTU_USER, host: address, identityFile: options.key.privateKeyPath, knownHostsFile };
  if (override) {
    target = { ...target, ...override.target };
    options.out.warn(`test-only setting ${TEST_ENV.host} in effect: connecting to ${override.target.host}${override.target.port ? `:${override.target.port}` : ''} instead of ${address}`);
  }
  if (options.sshConfig) target.configFile = options.sshConfig;
  if (target.knownHostsFile === knownHostsFile) await writeKnownHosts(knownHostsFile, target.host, target.port, options.hostPublicKey);
  return target;
}

/** Launches the instance and hands over to the SSH provider. */
export async function launchAws(ctx: LaunchContext, options: AwsLaunchOptions): Promise<{ record: RunRecord; session: ProviderSession }> {
  const { out, store } = ctx;
  let record = ctx.record;
  const runId = record.runId;
  const override = testHostOverride();

  // SIGTERM during setup cancels like Ctrl-C (run.ts handles SIGINT): the cleanup below must run.
  const abort = new AbortController();
  const onSigterm = (): void => abort.abort(new UserError('SPOTCTL_USAGE', 'terminated during setup (SIGTERM)', { exitCode: 143 }));
  process.once('SIGTERM', onSigterm);
  const signal = ctx.signal ? AbortSignal.any([ctx.signal, abort.signal]) : abort.signal;

  using clients = new Ec2Clients();
  const touched = new Set<string>();
  const known = new Map<string, string>();
  let instance: LaunchedInstance | undefined;
  let runRole: RunRole | undefined;
  try {
    if (options.pinnedBy) out.info(`searching only ${options.regions.join(', ')} (from ${options.pinnedBy})`);
    // The credentials first: without them every region would fail on its own, less clearly.
    const owner = await step(out, 'credentials', 'AWS credentials work', async () => await callerArn({ region: options.regions[0] ?? 'us-east-1', signal }));
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
      });
    });
    for (const note of plan.notes) out.info(note);
    for (const f of plan.failures) out.warn(`${f.region} skipped: ${f.message}${f.remediation ? ` → ${f.remediation}` : ''}`);
    const cheapest = plan.candidates[0]!;
    out.info(`${plan.need}: cheapest is ${describeCandidate(cheapest, 'spot')} (${plan.candidates.length} placements ranked)`);

    const now = new Date();
    const { cidr, key, hostKey } = await step(out, 'infra', 'checked SSH key and address', async () =>
      await sshIdentity({ ...(options.sshCidr !== undefined ? { sshCidr: options.sshCidr } : {}), hostKeyComment: `spotctl-host-${runId}`, signal }),
    );
    const access = s3AccessOf(ctx.spec, runId, owner);
    if (access) {
      runRole = await step(out, 'iam', `IAM role ${runRoleName(runId)}: S3 access to ${access.label} only`, async () => {
        using iam = await iamClient();
        return await createRunRole({ iam, runId, owner, policy: access.policy, createdAt: now, signal });
      });
    }
    if (cidr.cidr === '0.0.0.0/0') out.warn('SSH is open to the whole internet (--ssh-cidr 0.0.0.0/0); the instance accepts only your key, but anyone can knock');
    debug('ssh cidr %s from %s; key %s', cidr.cidr, cidr.source, key.name);

    const infraByRegion = new Map<string, Promise<RegionInfra>>();
    const infraFor = (region: string): Promise<RegionInfra> => {
      let p = infraByRegion.get(region);
      if (!p) {
        p = (async () => {
          const started = performance.now();
          const infra = await ensureRegionInfra({ ec2: await clients.forRegion(region), region, owner, key: key satisfies LocalKey, sshCidr: cidr.cidr, architecture: options.architecture, signal });
          out.step('infra', `${region}: key pair ${infra.keyName}, security group ${infra.securityGroupId} (22/tcp from ${cidr.cidr}), image ${infra.image.name}`, performance.now() - started);
          if (!infra.image.baked) out.info('using stock Ubuntu 24.04 and installing Node.js and python3 at boot; `spotctl ami build --region ${region}` bakes an image that makes launches faster');
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

    const launched = await step(out, 'launch', 'launched the instance', async () =>
      await launchInstance({
        candidates: plan.candidates,
        clientFor: clients.forRegion,
        infraFor,
        userDataFor: (infra) => cloudConfig({ hostKey, install: !infra.image.baked, runId }),
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

    const running = await step(out, 'boot', `${instance.instanceId} is running`, async () => await waitForRunning(await clients.forRegion(instance!.region), instance!.instanceId, { signal }));

    // The run's own known_hosts: exactly the key we generated, for exactly this address.
    const target = await pinnedTarget({
      address: running.address,
      key,
      hostPublicKey: hostKey.publicKey,
      knownHostsFile: path.join(store.runDir(runId), 'known_hosts'),
      override,
      sshConfig: options.sshConfig,
      out,
    });
    if (target.identityFile && !existsSync(target.identityFile)) throw new SpotctlError('SPOTCTL_INTERNAL', `the SSH key ${target.identityFile} vanished`);
    record = store.update(runId, { target });

    await step(out, 'ssh', `SSH to ${target.host} works${running.address === target.host ? '' : ` (instance ${running.address})`}`, async () =>
      await waitForSsh(target, { controlDir: store.runDir(runId), signal, out }),
    );

    const sshCtx: LaunchContext = {
      ...ctx,
      record,
      signal,
      // On EC2 the agent polls the real metadata service for interruption notices.
      spec: { ...ctx.spec, spot: { ...ctx.spec.spot, imdsEndpoint: ctx.spec.spot.imdsEndpoint ?? 'default' } },
    };
    const launchedSsh = await launchSsh(sshCtx, { shutdownAction: shutdownActionFor(instance, override) });
    const result = { record: launchedSsh.record, session: new AwsSession(launchedSsh.session as SshSession, store, out) };
    try {
      await setExpiresAt(clients.forRegion, instance, expiryAfterStart(ctx.spec, Date.now()));
    } catch (error) {
      // Not fatal: the setup deadline stays, so gc would end it early rather than never.
      out.warn(`could not update ${TAG.expiresAt} on ${instance.instanceId}: ${describeAwsError(error)}`);
    }
    return result;
  } catch (error) {
    if (touched.size > 0 || known.size > 0) {
      const { terminated, failed } = await shielded(out, 'terminating the instance first (bounded; spotctl gc cleans up if this is cut short)', () =>
        terminateRun(clients.forRegion, [...touched, ...known.values()], runId, { knownIds: known }),
      );
      for (const t of terminated) out.info(`terminated ${t.instanceId} (${t.region}) because the launch did not complete`, { event: 'terminated', instanceId: t.instanceId, region: t.region });
      if (instance && terminated.some((t) => t.instanceId === instance!.instanceId)) {
        store.update(runId, { aws: { ...store.load(runId).aws!, terminatedAt: Date.now() } });
      }
      if (runRole) await removeRunRole(out, runId);
      throw cleanupFailureError(error, failed, runId);
    }
    if (runRole) await removeRunRole(out, runId);
    throw error;
  } finally {
    process.off('SIGTERM', onSigterm);
  }
}

/**
 * Runs a (bounded) cleanup with Ctrl-C and SIGTERM held off: an impatient second Ctrl-C must not
 * cut a TerminateInstances call short and strand a billed instance. The cleanup has its own
 * timeout (CLEANUP_TIMEOUT_MS), so this never hangs.
 */
export async function shielded<T>(out: Output, message: string, fn: () => Promise<T>): Promise<T> {
  let told = false;
  const hold = (): void => {
    if (told) return;
    told = true;
    out.info(message);
  };
  process.on('SIGINT', hold);
  process.on('SIGTERM', hold);
  try {
    return await fn();
  } finally {
    process.off('SIGINT', hold);
    process.off('SIGTERM', hold);
  }
}

/**
 * A session to an aws run: the SSH session, plus one rule. The controller "lets the agent go"
 * (the `shutdown` request, sent by run, attach and stop once the job has ended) — on an SSH host
 * that only ends the agent, but here it would leave a running instance with no agent left to
 * power it off. So after the agent acknowledged `shutdown`, the instance is terminated too.
 */
export class AwsSession implements ProviderSession {
  constructor(
    private readonly ssh: SshSession,
    private readonly store: RunStore,
    private readonly out?: Output,
  ) {}

  async connect(signal?: AbortSignal): Promise<AgentConnection> {
    const conn = await this.ssh.connect(signal);
    const teardown = (): Promise<boolean> =>
      teardownAwsRun({ store: this.store, record: this.store.load(this.ssh.record.runId), out: this.out ?? new Output({ json: false }), reason: 'the job ended and the agent was let go' });
    // Methods run against the real connection (it keeps private state); only `request` is wrapped.
    return new Proxy(conn, {
      get(target, prop) {
        if (prop === 'request') {
          return async (...args: Parameters<AgentConnection['request']>) => {
            const result = await target.request(...args);
            if (args[0] === 'shutdown') await teardown();
            return result;
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  readStatus(signal?: AbortSignal): ReturnType<ProviderSession['readStatus']> {
    return this.ssh.readStatus(signal);
  }

  streamLog(onChunk: (chunk: Buffer) => void, signal?: AbortSignal): Promise<void> {
    return this.ssh.streamLog(onChunk, signal);
  }

  close(): Promise<void> {
    return this.ssh.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Hours × price: what the instance has cost so far (spot prices move; an estimate). */
export function spendSoFar(pricePerHour: number, fromMs: number, toMs: number): number {
  return (pricePerHour * Math.max(0, toMs - fromMs)) / 3_600_000;
}

/**
 * After the run (success, failure, Ctrl-C): terminates the instance and says what it cost.
 * Never throws; a failure says exactly what to run by hand.
 */
export async function teardownAwsRun(options: { store: RunStore; record: RunRecord; out: Output; reason?: string }): Promise<boolean> {
  const { store, out } = options;
  // The stored record is the fresher one: the session may have terminated the instance already.
  let current = options.record;
  try {
    current = store.load(options.record.runId);
  } catch {
    // No local record (a run recovered elsewhere): go by what we were given.
  }
  const aws = current.aws;
  if (!aws || aws.terminatedAt) return true;
  const started = performance.now();
  using clients = new Ec2Clients();
  const { terminated, failed } = await shielded(out, `terminating ${aws.instanceId} first (bounded)`, () =>
    terminateRun(clients.forRegion, [aws.region], options.record.runId, { knownIds: new Map([[aws.instanceId, aws.region]]) }),
  );
  if (failed.length > 0 || !terminated.some((t) => t.instanceId === aws.instanceId)) {
    const why = failed[0] ? describeAwsError(failed[0].error) : 'EC2 did not acknowledge it';
    out.warn(`could not terminate ${aws.instanceId} in ${aws.region}: ${why} — run: spotctl teardown ${options.record.runId}`, { event: 'teardown-failed', instanceId: aws.instanceId });
    return false;
  }
  const now = Date.now();
  store.update(options.record.runId, { aws: { ...aws, terminatedAt: now } });
  if (aws.instanceProfile) await removeRunRole(out, options.record.runId);
  const cost = spendSoFar(aws.pricePerHour, aws.launchedAt, now);
  out.step('teardown', `terminated ${aws.instanceId} after ${formatDuration(now - aws.launchedAt)} (about $${cost.toFixed(4)}${aws.market === 'spot' ? ' at the launch spot price' : ''})${options.reason ? ` — ${options.reason}` : ''}`, performance.now() - started);
  return true;
}
