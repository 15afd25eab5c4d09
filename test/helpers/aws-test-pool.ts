/**
 * Test hosts for aws end-to-end tests where each launched instance is a machine of its own, as on
 * EC2: when spotctl launches an instance in moto, the pool creates a fresh host for it — its own
 * network namespace and address, its own sshd (with the host key from the instance's user-data and
 * its key pair's public key, as cloud-init would install them), its own disk (a directory
 * bind-mounted over the run's remote dir, visible only to that host's processes) and its own IMDSv2
 * emulator on 169.254.169.254 (serving the instance's profile credentials; a test schedules that
 * instance's interruption through it). Two attempts of a run never share a disk or an emulator, so
 * a restore test cannot pass on attempt 1's leftover files.
 *
 * spotctl finds each instance's host through the test-only SPOTCTL_TEST_INSTANCE_HOSTS file the
 * pool writes (instance id → user@address). When an instance is terminated in moto, its host's
 * sshd stops and every process in it (the agent, the job) is killed: the machine is gone.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { hostKeyFromCloudConfig, loadIamSdk } from '@spotctl/controller';
import { TEST_CREDENTIALS, loadEc2Sdk, type EC2Client, type MotoEc2 } from './aws-moto.ts';
import { terminateViaMotoArgv } from './aws-test-host.ts';
import { startImdsInNetns, type NetnsImds } from './imds.ts';
import { createNetns, type Netns } from './netns.ts';
import { startSshd, type Sshd } from './sshd.ts';

const execFileAsync = promisify(execFile);
const POLL_MS = 150;
/** The pool stops watching by itself after this long even if nobody closes it (bounded loop). */
const MAX_LIFETIME_MS = 30 * 60_000;

export interface PoolHost {
  readonly instanceId: string;
  readonly netns: Netns;
  readonly sshd: Sshd;
  readonly imds: NetnsImds;
  /** This host's disk as seen from the test: what the instance wrote under the run's remote dir. */
  readonly disk: string;
  /** The instance profile ARN the instance was launched with (moto forgets it at termination). */
  readonly profileArn: string | undefined;
  /** True once the instance was terminated and the host's processes killed. */
  readonly gone: boolean;
}

export interface TestInstancePool extends AsyncDisposable {
  /** Instance ids in the order their hosts booted. */
  readonly booted: string[];
  host(instanceId: string): PoolHost | undefined;
  /** The host of the `index`-th instance booted (0-based), once it has booted; bounded. */
  waitForHost(index: number, timeoutMs?: number): Promise<PoolHost>;
  /** Resolves once every booted host is gone; bounded. */
  waitAllGone(timeoutMs?: number): Promise<void>;
  /** Errors the pool ran into (tests assert there are none). */
  readonly errors: string[];
  /** The environment spotctl needs to reach the pool's hosts. */
  env(): Record<string, string>;
  close(): Promise<void>;
}

export async function startTestInstancePool(options: {
  moto: MotoEc2;
  region: string;
  /** The run's `--remote-dir` (absolute): each host mounts a disk of its own over it. */
  remoteDir: string;
  /** Where the pool keeps the hosts file and the disks. */
  dir: string;
}): Promise<TestInstancePool> {
  const { moto, region, remoteDir, dir } = options;
  const sdk = await loadEc2Sdk();
  const ec2: EC2Client & Disposable = await moto.ec2(region);
  mkdirSync(remoteDir, { recursive: true });
  const hostsFile = path.join(dir, 'hosts.json');
  writeFileSync(hostsFile, '{}');
  const hosts = new Map<string, PoolHost & { gone: boolean }>();
  const booted: string[] = [];
  const errors: string[] = [];
  let stopped = false;

  const writeHostsFile = (): void => {
    const entries = Object.fromEntries([...hosts.values()].map((h) => [h.instanceId, `${h.sshd.user}@${h.netns.nsAddress}:22`]));
    const tmp = `${hostsFile}.tmp`;
    writeFileSync(tmp, JSON.stringify(entries));
    renameSync(tmp, hostsFile);
  };

  const serveProfile = async (imds: NetnsImds, profileArn: string | undefined): Promise<void> => {
    if (!profileArn) return;
    const { IAMClient, GetInstanceProfileCommand } = await loadIamSdk();
    const iam = new IAMClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials: TEST_CREDENTIALS, maxAttempts: 2 });
    try {
      const name = profileArn.split('/').at(-1)!;
      const roleName = (await iam.send(new GetInstanceProfileCommand({ InstanceProfileName: name }))).InstanceProfile?.Roles?.[0]?.RoleName;
      if (!roleName) throw new Error(`instance profile ${profileArn} has no role`);
      await imds.setInstanceProfile({
        arn: profileArn,
        roleName,
        accessKeyId: 'ASIAMOTOINSTANCE',
        secretAccessKey: 'instance-secret',
        sessionToken: `session-for-${roleName}`,
      });
    } finally {
      iam.destroy();
    }
  };

  const boot = async (instanceId: string, keyName: string | undefined, profileArn: string | undefined): Promise<void> => {
    const attr = await ec2.send(new sdk.DescribeInstanceAttributeCommand({ InstanceId: instanceId, Attribute: 'userData' }));
    const hostKey = hostKeyFromCloudConfig(Buffer.from(attr.UserData?.Value ?? '', 'base64').toString());
    if (!hostKey) throw new Error(`${instanceId}: no host key in its user-data`);
    if (!keyName) throw new Error(`${instanceId}: launched without a key pair`);
    const pair = (await ec2.send(new sdk.DescribeKeyPairsCommand({ KeyNames: [keyName], IncludePublicKey: true }))).KeyPairs?.[0];
    if (!pair?.PublicKey) throw new Error(`${instanceId}: key pair ${keyName} has no public key in moto`);

    const disk = path.join(dir, 'disks', instanceId);
    mkdirSync(disk, { recursive: true });
    const netns = await createNetns();
    let sshd: Sshd | undefined;
    let imds: NetnsImds | undefined;
    try {
      // moto listens on another namespace's veth address: route it through this host's link.
      await execFileAsync('ip', ['-n', netns.name, 'route', 'add', `${moto.host}/32`, 'via', netns.hostAddress], { timeout: 10_000 });
      imds = await startImdsInNetns(netns);
      await serveProfile(imds, profileArn);
      // `ip netns exec` gives sshd a mount namespace of its own: the bind mount is this host's alone.
      sshd = await startSshd({ netns, wrap: ['sh', '-c', 'mount --bind "$1" "$2" && shift 2 && exec "$@"', 'sh', disk, remoteDir] });
      await sshd.stop();
      await writeFile(path.join(sshd.dir, 'host_ed25519_key'), hostKey.privateKey, { mode: 0o600 });
      await writeFile(path.join(sshd.dir, 'host_ed25519_key.pub'), `${hostKey.publicKey}\n`);
      await writeFile(path.join(sshd.dir, 'authorized_keys'), `${pair.PublicKey.trim()}\n`);
      await sshd.start();
    } catch (error) {
      await sshd?.close();
      await imds?.close();
      await netns.close();
      throw error;
    }
    hosts.set(instanceId, { instanceId, netns, sshd, imds, disk, profileArn, gone: false });
    booted.push(instanceId);
    writeHostsFile();
  };

  /** The instance is gone: nothing answers on its address, nothing runs on it any more. */
  const shutDown = async (host: PoolHost & { gone: boolean }): Promise<void> => {
    await host.sshd.stop();
    const { stdout } = await execFileAsync('ip', ['netns', 'pids', host.netns.name], { timeout: 10_000 });
    for (const pid of stdout.split(/\s+/).filter(Boolean).map(Number)) {
      // The metadata emulator plays a part of EC2, not of the instance: the test still reads it.
      if (pid === host.imds.child.pid || pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    host.gone = true;
  };

  const started = Date.now();
  const loop = (async () => {
    while (!stopped && Date.now() - started < MAX_LIFETIME_MS) {
      try {
        const r = await ec2.send(
          new sdk.DescribeInstancesCommand({
            Filters: [
              { Name: 'tag:spotctl:managed', Values: ['true'] },
              { Name: 'tag:spotctl:role', Values: ['run'] },
              { Name: 'instance-state-name', Values: ['pending', 'running'] },
            ],
          }),
        );
        const live = (r.Reservations ?? []).flatMap((res) => res.Instances ?? []);
        for (const host of hosts.values()) {
          if (!host.gone && !live.some((i) => i.InstanceId === host.instanceId)) await shutDown(host);
        }
        for (const instance of live) {
          if (instance.InstanceId && !hosts.has(instance.InstanceId))
            await boot(instance.InstanceId, instance.KeyName, instance.IamInstanceProfile?.Arn);
        }
      } catch (error) {
        errors.push(error instanceof Error ? error.message : String(error));
      }
      await sleep(POLL_MS);
    }
  })();

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      stopped = true;
      await loop;
      for (const host of hosts.values()) {
        if (!host.gone) await shutDown(host).catch(() => undefined);
        await host.sshd.close();
        await host.imds.close();
        await host.netns.close();
      }
      ec2[Symbol.dispose]();
    })());

  return {
    booted,
    errors,
    host: (id) => hosts.get(id),
    async waitForHost(index, timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const id = booted[index];
        if (id !== undefined) return hosts.get(id)!;
        if (Date.now() > deadline)
          throw new Error(
            `no host #${index} booted after ${timeoutMs} ms (booted: ${booted.join(', ') || 'none'}; errors: ${errors.join('; ')})`,
          );
        await sleep(POLL_MS);
      }
    },
    async waitAllGone(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while ([...hosts.values()].some((h) => !h.gone)) {
        if (Date.now() > deadline)
          throw new Error(
            `hosts still up after ${timeoutMs} ms: ${[...hosts.values()]
              .filter((h) => !h.gone)
              .map((h) => h.instanceId)
              .join(', ')}`,
          );
        await sleep(POLL_MS);
      }
    },
    env: () => ({
      SPOTCTL_TEST_INSTANCE_HOSTS: hostsFile,
      SPOTCTL_TEST_SHUTDOWN_ARGV: JSON.stringify(terminateViaMotoArgv(moto)),
    }),
    close,
    [Symbol.asyncDispose]: close,
  };
}
