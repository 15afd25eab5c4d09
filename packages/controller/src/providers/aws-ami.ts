/**
 * `spotctl ami build`: bakes a spotctl image from stock Ubuntu 24.04 in one region, so runs skip
 * the boot-time install.
 *
 * builder (on-demand, small, tagged `spotctl:role=ami-builder`, pinned host key) → SSH → the bake
 * script (ami/install.sh; the agent bundle at /opt/spotctl/agent.mjs and in the login user's
 * ~/.spotctl/agent/<build>/ where runs look for it; the systemd unit; optionally a pip cache warmed
 * with `--requirements`; then cloud-init clean and the builder's host keys and authorized key
 * removed, so every instance of the image gets its own) → CreateImage (tagged `spotctl:ami=true`
 * and the agent build) → wait until available → terminate the builder. The builder is terminated
 * on every way out — success, failure, Ctrl-C — and an image that did not become available is
 * deregistered. `run` then finds the image by its tag (infra.ts, `resolveImage`); a run whose
 * agent build differs from the baked one installs its own over SSH as usual.
 *
 * Test-only: SPOTCTL_TEST_BAKE_ROOT=DIR makes the bake script put its files under DIR and skip
 * the steps that change the machine itself (apt, systemctl, cloud-init, host keys): the test host
 * is the machine the tests run on.
 */
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SpotctlError, UserError } from '@spotctl/shared';
import createDebug from 'debug';
import { cloudConfig } from '../aws/ami-user-data.ts';
import { AGENT_UNIT, INSTALL_SH } from '../aws/ami-scripts.ts';
import { Ec2Clients, loadEc2Sdk, sendOptions } from '../aws/clients.ts';
import { awsErrorName, awsUserError, describeAwsError, isAbort } from '../aws/errors.ts';
import { UBUNTU_USER, callerArn, defaultSubnetId, ensureRegionInfra } from '../aws/infra.ts';
import { runInstancesInput, terminateRun, waitForRunning } from '../aws/launch.ts';
import type { Architecture } from '../aws/sizing.ts';
import { TAG, tagSpecifications, toTags } from '../aws/tags.ts';
import type { Output } from '../output/output.ts';
import { spotctlHome } from '../runs/run-store.ts';
import { SshConnection } from '../transport/ssh.ts';
import { shellQuote } from '../transport/shell.ts';
import { agentBundle } from './agent-bundle.ts';
import { pinnedTarget, sshIdentity, waitForSsh } from './aws-access.ts';
import { shielded } from './aws-teardown.ts';
import type { TestOverrides } from './test-overrides.ts';
import { step } from './provider.ts';

const debug = createDebug('spotctl:ami');

/** The builder's type when none is given: small, current, on-demand. */
export const DEFAULT_BUILDER_TYPE: Record<Architecture, string> = { x86_64: 'c7a.large', arm64: 'c7g.large' };
/** apt, Node.js and a warmed pip cache. @default 45 min */
const BAKE_SCRIPT_TIMEOUT_MS = 45 * 60_000;
/** CreateImage of a 30 GiB root volume usually takes 5–15 min. @default 60 min */
export const IMAGE_AVAILABLE_TIMEOUT_MS = 60 * 60_000;
const IMAGE_POLL_MS = 5_000;
/** gc may end a builder after this long (a bake that was cut short). */
const BUILDER_ALLOWANCE_MS = 3 * 3_600_000;

export interface AmiBuildOptions {
  region: string;
  architecture: Architecture;
  instanceType?: string;
  /**
   * Bake from the Deep Learning Base image (NVIDIA driver) instead of stock Ubuntu; the image is
   * tagged `spotctl:gpu=true` and GPU runs use it (CPU runs do not). @default false
   */
  gpu?: boolean;
  /** A requirements.txt whose packages warm the image's pip cache. */
  requirements?: { name: string; contents: Buffer };
  sshCidr?: string;
  sshConfig?: string;
  out: Output;
  signal?: AbortSignal;
  /** Injected in tests. */
  imagePollMs?: number;
  /** Test-only settings (the host override, the bake root). */
  testOverrides: TestOverrides;
}

export interface AmiBuildResult {
  imageId: string;
  name: string;
  region: string;
  architecture: Architecture;
  agentBuild: string;
  builderId: string;
  durationMs: number;
}

/** The script the builder runs as the login user (sudo for the system parts). */
export function bakeScript(options: { agentBuild: string; requirements: boolean }): string {
  return [
    'set -eu',
    'cd "$(dirname "$0")"',
    // Test hosts only: files under this root, nothing that changes the machine itself.
    // eslint-disable-next-line no-template-curly-in-string -- shell parameter expansion, not a template
    'ROOT="${SPOTCTL_BAKE_ROOT:-}"',
    'SUDO=sudo; [ "$(id -u)" = 0 ] && SUDO=',
    'if [ -z "$ROOT" ]; then $SUDO sh ./install.sh; fi',
    '$SUDO install -D -m 0755 ./agent.mjs "$ROOT/opt/spotctl/agent.mjs"',
    '$SUDO install -D -m 0644 ./spotctl-agent@.service "$ROOT/etc/systemd/system/spotctl-agent@.service"',
    // Where runs look for the agent of their build (the ssh provider's layout): no upload needed.
    `install -D -m 0755 ./agent.mjs "$ROOT$HOME/.spotctl/agent/${options.agentBuild}/agent.mjs"`,
    ...(options.requirements
      ? [
          // Fills the login user's pip cache: a run's venv then installs these from the disk.
          'python3 -m venv ./warm',
          './warm/bin/pip install --disable-pip-version-check -q -r ./requirements.txt',
          'rm -rf ./warm',
        ]
      : []),
    `$SUDO sh -c 'mkdir -p "$1/var/lib/spotctl" && echo "${options.agentBuild}" > "$1/var/lib/spotctl/baked"' sh "$ROOT"`,
    'if [ -z "$ROOT" ]; then',
    '  $SUDO systemctl daemon-reload',
    // Every instance of the image boots as a new one: cloud-init runs again (user-data, keys),
    // and none keeps the builder's host keys or its authorized key.
    '  $SUDO cloud-init clean --logs',
    '  $SUDO rm -f /etc/ssh/ssh_host_*',
    '  rm -f "$HOME/.ssh/authorized_keys"',
    'fi',
    'echo spotctl-bake=ok',
  ].join('\n');
}

/** `spotctl-ubuntu-24.04-x86_64-20261125-2359-<build>`: unique per bake, sortable by date. */
export function imageName(architecture: Architecture, agentBuild: string, at: Date, gpu = false): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 13);
  return `spotctl-${gpu ? 'dlami-gpu' : 'ubuntu-24.04'}-${architecture}-${stamp}-${agentBuild.slice(0, 8)}`;
}

async function waitForImage(options: {
  region: string;
  imageId: string;
  clients: Ec2Clients;
  signal?: AbortSignal;
  pollMs: number;
}): Promise<void> {
  const { DescribeImagesCommand } = await loadEc2Sdk();
  const ec2 = await options.clients.forRegion(options.region);
  const deadline = Date.now() + IMAGE_AVAILABLE_TIMEOUT_MS;
  while (Date.now() < deadline) {
    options.signal?.throwIfAborted();
    const image = (await ec2.send(new DescribeImagesCommand({ ImageIds: [options.imageId] }), sendOptions(options.signal))).Images?.[0];
    const state = image?.State;
    debug('image %s: %s', options.imageId, state);
    if (state === 'available') return;
    if (state === 'failed' || state === 'invalid' || state === 'deregistered' || state === 'error') {
      throw new UserError(
        'SPOTCTL_AWS_REQUEST',
        `CreateImage of ${options.imageId} ended in state ${state}: ${image?.StateReason?.Message ?? 'no reason given'}`,
        {
          remediation: 'try again; spotctl terminated the builder and deregistered the image',
        },
      );
    }
    await sleep(options.pollMs, undefined, options.signal ? { signal: options.signal } : {});
  }
  throw new UserError('SPOTCTL_AWS_REQUEST', `${options.imageId} was not available after ${IMAGE_AVAILABLE_TIMEOUT_MS / 60_000} min`, {
    remediation: 'try again later; spotctl terminated the builder and deregistered the image',
  });
}

/** The image's snapshots carry its tags too, so `gc` and the console can tell whose they are. */
async function tagSnapshots(options: {
  region: string;
  imageId: string;
  clients: Ec2Clients;
  tags: Record<string, string>;
  out: Output;
}): Promise<void> {
  try {
    const { DescribeImagesCommand, CreateTagsCommand } = await loadEc2Sdk();
    const ec2 = await options.clients.forRegion(options.region);
    const signal = AbortSignal.timeout(30_000);
    const image = (await ec2.send(new DescribeImagesCommand({ ImageIds: [options.imageId] }), { abortSignal: signal })).Images?.[0];
    const snapshots = (image?.BlockDeviceMappings ?? []).map((m) => m.Ebs?.SnapshotId).filter((id): id is string => Boolean(id));
    if (snapshots.length > 0)
      await ec2.send(new CreateTagsCommand({ Resources: snapshots, Tags: toTags(options.tags) }), { abortSignal: signal });
  } catch (error) {
    options.out.warn(`could not tag the snapshots of ${options.imageId}: ${describeAwsError(error)} (the image itself is tagged)`);
  }
}

/** Bakes an image (see the file comment). Never leaves the builder running. */
export async function buildAmi(options: AmiBuildOptions): Promise<AmiBuildResult> {
  const { out, region, architecture } = options;
  const started = Date.now();
  const bundle = agentBundle();
  const bakeId = `ami-${new Date(started).toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}-${bundle.buildId.slice(0, 4)}`;
  const instanceType = options.instanceType ?? DEFAULT_BUILDER_TYPE[architecture];
  const override = options.testOverrides.host;
  const bakeRoot = options.testOverrides.bakeRoot;
  const workDir = path.join(spotctlHome(), 'bakes', bakeId);
  mkdirSync(workDir, { recursive: true, mode: 0o700 });

  const abort = new AbortController();
  const onSigterm = (): void => abort.abort(new UserError('SPOTCTL_USAGE', 'terminated during the bake (SIGTERM)', { exitCode: 143 }));
  process.once('SIGTERM', onSigterm);
  const signal = options.signal ? AbortSignal.any([options.signal, abort.signal]) : abort.signal;

  using clients = new Ec2Clients();
  let launched = false;
  let builderId: string | undefined;
  let imageId: string | undefined;
  let available = false;
  try {
    const { owner, cidr, key, hostKey } = await step(out, 'infra', 'checked credentials, SSH key and address', async () => {
      const [ownerArn, identity] = await Promise.all([
        callerArn({ region, signal }),
        sshIdentity({
          ...(options.sshCidr !== undefined ? { sshCidr: options.sshCidr } : {}),
          hostKeyComment: `spotctl-host-${bakeId}`,
          signal,
        }),
      ]);
      return { owner: ownerArn, ...identity };
    });
    const ec2 = await clients.forRegion(region);
    const gpu = options.gpu === true;
    const base = gpu ? 'the Deep Learning Base image (NVIDIA driver)' : 'stock Ubuntu 24.04';
    const infra = await step(
      out,
      'infra',
      `${region}: key pair, security group, ${base} (${architecture})`,
      async () => await ensureRegionInfra({ ec2, region, owner, key, sshCidr: cidr.cidr, architecture, stockImage: true, gpu, signal }),
    );
    out.info(`base image ${infra.image.name} (${infra.image.imageId}); builder ${instanceType} on-demand`);

    const { RunInstancesCommand, DescribeAvailabilityZonesCommand, CreateImageCommand } = await loadEc2Sdk();
    const zones = (
      (await ec2.send(new DescribeAvailabilityZonesCommand({ Filters: [{ Name: 'state', Values: ['available'] }] }), sendOptions(signal)))
        .AvailabilityZones ?? []
    )
      .map((z) => z.ZoneName)
      .filter((z): z is string => Boolean(z))
      .sort();
    const now = new Date();
    const tags = {
      Name: `spotctl ami builder ${bakeId}`,
      [TAG.managed]: 'true',
      [TAG.role]: 'ami-builder',
      [TAG.runId]: bakeId,
      [TAG.owner]: owner,
      [TAG.created]: now.toISOString(),
      [TAG.expiresAt]: new Date(now.getTime() + BUILDER_ALLOWANCE_MS).toISOString(),
      [TAG.sshUser]: UBUNTU_USER,
      [TAG.launchedFrom]: os.hostname(),
    };
    const builder = await step(out, 'launch', `launched builder ${instanceType}`, async () => {
      let lastError: unknown;
      for (const [i, az] of zones.entries()) {
        const subnetId = await defaultSubnetId({ ec2, region, signal }, infra.vpcId, az);
        const input = runInstancesInput({
          candidate: { region, az, instanceType, vcpus: 0, pricePerHour: 0, architecture, priceSince: now.toISOString() },
          market: 'on-demand',
          infra,
          subnetId,
          userData: cloudConfig({ hostKey, install: false, runId: bakeId, gpu }),
          tags: {
            runId: bakeId,
            owner,
            command: ['ami', 'build'],
            createdAt: now,
            expiresAt: now,
            sshUser: UBUNTU_USER,
            launchedFrom: os.hostname(),
            detached: false,
          },
          clientToken: `${bakeId}-${i + 1}`,
        });
        input.TagSpecifications = tagSpecifications(['instance', 'volume'], tags);
        launched = true;
        try {
          const r = await ec2.send(new RunInstancesCommand(input), sendOptions(signal));
          const id = r.Instances?.[0]?.InstanceId;
          if (!id) throw new SpotctlError('SPOTCTL_INTERNAL', 'RunInstances answered without an instance id');
          return { instanceId: id, az };
        } catch (error) {
          if (signal.aborted || isAbort(error) || error instanceof SpotctlError) throw error;
          const name = awsErrorName(error);
          // No capacity for the builder's type in this AZ: the next AZ may have it.
          if (name !== 'InsufficientInstanceCapacity' && name !== 'Unsupported')
            throw awsUserError(error, { region, az, instanceType, action: 'RunInstances' });
          out.warn(`builder ${instanceType} in ${az}: ${describeAwsError(error)}; trying the next zone`);
          lastError = error;
        }
      }
      throw lastError instanceof Error
        ? awsUserError(lastError, { region, instanceType, action: 'RunInstances' })
        : new UserError('SPOTCTL_CONFIG', `${region} lists no available zone`, { remediation: 'pick another region with --region' });
    });
    builderId = builder.instanceId;
    out.info(`builder ${builderId} in ${builder.az}`, { event: 'builder', instanceId: builderId, region, az: builder.az });

    const running = await step(out, 'boot', `${builderId} is running`, async () => await waitForRunning(ec2, builderId!, { signal }));
    const target = await pinnedTarget({
      address: running.address,
      instanceId: builderId,
      signal,
      key,
      hostPublicKey: hostKey.publicKey,
      knownHostsFile: path.join(workDir, 'known_hosts'),
      override,
      sshConfig: options.sshConfig,
      out,
    });
    await step(out, 'ssh', `SSH to ${target.host} works`, async () => await waitForSsh(target, { controlDir: workDir, signal, out }));

    await step(
      out,
      'bake',
      `installed Node.js, python3, the agent (build ${bundle.buildId})${options.requirements ? ` and warmed pip with ${options.requirements.name}` : ''}`,
      async () => {
        const conn = await SshConnection.open(target, { controlDir: workDir, connectTimeoutS: 20, signal });
        try {
          const dir = `/tmp/spotctl-bake-${bakeId}`;
          const files: [string, string | Buffer][] = [
            ['install.sh', INSTALL_SH],
            ['spotctl-agent@.service', AGENT_UNIT],
            ['agent.mjs', bundle.contents],
            ['bake.sh', bakeScript({ agentBuild: bundle.buildId, requirements: options.requirements !== undefined })],
            ...(options.requirements ? ([['requirements.txt', options.requirements.contents]] as [string, Buffer][]) : []),
          ];
          for (const [name, contents] of files) {
            const r = await conn.exec(`mkdir -p ${shellQuote(dir)} && cat > ${shellQuote(`${dir}/${name}`)}`, {
              input: Buffer.from(contents),
              signal,
              timeoutMs: 120_000,
            });
            if (r.code !== 0)
              throw new SpotctlError(
                'SPOTCTL_SSH_FAILED',
                `could not copy ${name} to the builder: ${r.stderr.trim().split('\n').at(-1) ?? ''}`,
              );
          }
          const env = bakeRoot ? `SPOTCTL_BAKE_ROOT=${shellQuote(bakeRoot)} ` : '';
          const r = await conn.exec(`${env}sh ${shellQuote(`${dir}/bake.sh`)}; code=$?; rm -rf ${shellQuote(dir)}; exit $code`, {
            signal,
            timeoutMs: BAKE_SCRIPT_TIMEOUT_MS,
          });
          debug('bake script: code %d\n%s\n%s', r.code, r.stdout, r.stderr);
          if (r.code !== 0 || !r.stdout.includes('spotctl-bake=ok')) {
            const tail = r.stderr.trim().split('\n').slice(-3).join(' | ') || r.stdout.trim().split('\n').at(-1) || 'no output';
            throw new UserError('SPOTCTL_HOST_REQUIREMENT', `the bake script failed on the builder (exit ${r.code}): ${tail}`, {
              remediation: options.requirements
                ? `check ${options.requirements.name} (pip must install it on Ubuntu 24.04); DEBUG=spotctl:ami shows the whole output`
                : 'DEBUG=spotctl:ami shows the whole output; try again',
            });
          }
        } finally {
          await conn.close();
        }
      },
    );

    const name = imageName(architecture, bundle.buildId, now, gpu);
    const imageTags = {
      Name: name,
      [TAG.managed]: 'true',
      [TAG.ami]: 'true',
      [TAG.agentBuild]: bundle.buildId,
      ...(gpu ? { [TAG.gpu]: 'true' } : {}),
      [TAG.owner]: owner,
      [TAG.created]: new Date().toISOString(),
      ...(options.requirements ? { 'spotctl:requirements': options.requirements.name } : {}),
    };
    imageId = await step(out, 'image', `CreateImage ${name}`, async () => {
      const r = await ec2.send(
        new CreateImageCommand({
          InstanceId: builderId!,
          Name: name,
          Description: `spotctl: Ubuntu 24.04 with Node.js, python3 and the agent ${bundle.buildId}`,
          // Snapshots are tagged once the image is available (below): their ids are known then.
          TagSpecifications: tagSpecifications(['image'], imageTags),
        }),
        sendOptions(signal),
      );
      if (!r.ImageId) throw new SpotctlError('SPOTCTL_INTERNAL', 'CreateImage answered without an image id');
      return r.ImageId;
    });
    await step(
      out,
      'image',
      `${imageId} is available`,
      async () => await waitForImage({ region, imageId: imageId!, clients, signal, pollMs: options.imagePollMs ?? IMAGE_POLL_MS }),
    );
    available = true;
    await tagSnapshots({ region, imageId, clients, tags: imageTags, out });
    return { imageId, name, region, architecture, agentBuild: bundle.buildId, builderId, durationMs: Date.now() - started };
  } finally {
    process.off('SIGTERM', onSigterm);
    if (launched) {
      await shielded(out, 'terminating the builder first (bounded)', async () => {
        const { terminated, failed } = await terminateRun(
          clients.forRegion,
          [region],
          bakeId,
          builderId ? { knownIds: new Map([[builderId, region]]) } : {},
        );
        for (const t of terminated)
          out.info(`terminated builder ${t.instanceId}`, { event: 'terminated', instanceId: t.instanceId, region });
        for (const f of failed)
          out.warn(`could not terminate the builder in ${f.region}: ${describeAwsError(f.error)} — run: spotctl teardown ${bakeId}`);
        if (imageId && !available) {
          try {
            const { DeregisterImageCommand } = await loadEc2Sdk();
            await (
              await clients.forRegion(region)
            ).send(new DeregisterImageCommand({ ImageId: imageId }), { abortSignal: AbortSignal.timeout(30_000) });
            out.info(`deregistered ${imageId}, which never became available`);
          } catch (error) {
            out.warn(`could not deregister ${imageId}: ${describeAwsError(error)} — deregister it in the EC2 console`);
          }
        }
      });
    }
  }
}
