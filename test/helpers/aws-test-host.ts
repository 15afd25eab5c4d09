/**
 * The "instance" of an aws end-to-end test: a network namespace with sshd (and node, python3,
 * rsync from this machine's filesystem) that plays each EC2 instance spotctl launches in moto.
 *
 * It boots the way EC2 + cloud-init would: when a new spotctl instance is running in moto, it
 * reads the instance's user-data (the host key the controller generated) and its key pair's
 * public key from moto, installs them as sshd's host key and authorized key, and (re)starts sshd.
 * Until then sshd is down (connection refused), as on an instance that is still booting. So the
 * test exercises the real thing: the controller's own key and a pinned host key, never a key the
 * test handed over.
 *
 * The controller finds this host through the test-only SPOTCTL_TEST_INSTANCE_HOST (see
 * `env()`); SPOTCTL_TEST_SHUTDOWN_ARGV makes the agent's shutdown action a TerminateInstances
 * call to moto (what AWS does after an OS shutdown with InstanceInitiatedShutdownBehavior=terminate),
 * never a shutdown of this machine.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { hostKeyFromCloudConfig, loadIamSdk } from '@spotctl/controller';
import { TEST_CREDENTIALS, loadEc2Sdk, type EC2Client, type MotoEc2 } from './aws-moto.ts';
import type { NetnsImds } from './imds.ts';
import type { Netns } from './netns.ts';
import type { Sshd } from './sshd.ts';

const execFileAsync = promisify(execFile);
const POLL_MS = 150;
/** The simulator stops by itself after this long even if nobody stops it (bounded loop). */
const MAX_LIFETIME_MS = 30 * 60_000;

export interface TestInstanceHost extends AsyncDisposable {
  /** Instance ids this host has "booted" as, in order. */
  readonly booted: string[];
  /** The instance profile ARN each booted instance was launched with (moto forgets it at termination). */
  readonly profiles: ReadonlyMap<string, string | undefined>;
  /** While paused, new instances are not booted (sshd stays down: SSH is refused). */
  pause(): void;
  resume(): void;
  /**
   * Resolves once the instance this host last played is gone (terminated) and sshd is down
   * again, as a fresh instance's address would be; bounded by `timeoutMs`.
   */
  waitIdle(timeoutMs?: number): Promise<void>;
  /** Errors the simulator ran into (tests assert there are none). */
  readonly errors: string[];
  /** The environment spotctl needs to use this host for the instances it launches. */
  env(): Record<string, string>;
  close(): Promise<void>;
}

/** A curl that calls TerminateInstances on moto for `{instanceId}` in `{region}` (moto checks no signature). */
export function terminateViaMotoArgv(moto: MotoEc2): string[] {
  return [
    'curl',
    '-sS',
    '-m',
    '20',
    '-X',
    'POST',
    '-H',
    'Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/ec2/aws4_request, SignedHeaders=host, Signature=0',
    '--data',
    'Action=TerminateInstances&Version=2016-11-15&InstanceId.1={instanceId}',
    `${moto.endpoint}/`,
  ];
}

/**
 * When the instance it played is terminated, the machine is gone: every process in the
 * namespace (the agent, the job) is killed by pid, except the ones `keep` names (the metadata
 * emulator, which plays a part of EC2, not of the instance).
 */
async function killInstanceProcesses(netns: Netns, keep: readonly number[]): Promise<void> {
  const { stdout } = await execFileAsync('ip', ['netns', 'pids', netns.name], { timeout: 10_000 });
  for (const pid of stdout.split(/\s+/).filter(Boolean).map(Number)) {
    if (keep.includes(pid) || pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

export async function startTestInstanceHost(options: {
  moto: MotoEc2;
  region: string;
  netns: Netns;
  sshd: Sshd;
  keepPids?: () => (number | undefined)[];
  /** The metadata emulator of the namespace: it serves the booted instance's profile credentials. */
  imds?: Pick<NetnsImds, 'setInstanceProfile'>;
}): Promise<TestInstanceHost> {
  const { moto, region, netns, sshd } = options;
  const sdk = await loadEc2Sdk();
  const ec2: EC2Client & Disposable = await moto.ec2(region);
  // Down until the first instance boots.
  await sshd.stop();

  const booted: string[] = [];
  const profiles = new Map<string, string | undefined>();
  const errors: string[] = [];
  let paused = false;
  let stopped = false;
  /** The instance sshd currently plays; undefined while sshd is down. */
  let current: string | undefined;

  /**
   * What EC2 does for an instance launched with an instance profile: its metadata service serves
   * the profile's role credentials (moto accepts any keys; these name the role so a test can tell).
   */
  const serveProfile = async (profileArn: string | undefined): Promise<void> => {
    if (!options.imds) return;
    if (!profileArn) return await options.imds.setInstanceProfile(undefined);
    const { IAMClient, GetInstanceProfileCommand } = await loadIamSdk();
    const iam = new IAMClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials: TEST_CREDENTIALS, maxAttempts: 2 });
    try {
      const name = profileArn.split('/').at(-1)!;
      const profile = (await iam.send(new GetInstanceProfileCommand({ InstanceProfileName: name }))).InstanceProfile;
      const roleName = profile?.Roles?.[0]?.RoleName;
      if (!roleName) throw new Error(`instance profile ${profileArn} has no role`);
      await options.imds.setInstanceProfile({
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

  const boot = async (instanceId: string, keyName: string | undefined, profileArn?: string): Promise<void> => {
    const attr = await ec2.send(new sdk.DescribeInstanceAttributeCommand({ InstanceId: instanceId, Attribute: 'userData' }));
    const hostKey = hostKeyFromCloudConfig(Buffer.from(attr.UserData?.Value ?? '', 'base64').toString());
    if (!hostKey) throw new Error(`${instanceId}: no host key in its user-data`);
    if (!keyName) throw new Error(`${instanceId}: launched without a key pair`);
    const pair = (await ec2.send(new sdk.DescribeKeyPairsCommand({ KeyNames: [keyName], IncludePublicKey: true }))).KeyPairs?.[0];
    if (!pair?.PublicKey) throw new Error(`${instanceId}: key pair ${keyName} has no public key in moto`);
    await sshd.stop();
    await serveProfile(profileArn);
    await writeFile(path.join(sshd.dir, 'host_ed25519_key'), hostKey.privateKey, { mode: 0o600 });
    await writeFile(path.join(sshd.dir, 'host_ed25519_key.pub'), `${hostKey.publicKey}\n`);
    await writeFile(path.join(sshd.dir, 'authorized_keys'), `${pair.PublicKey.trim()}\n`);
    await sshd.start();
    booted.push(instanceId);
    profiles.set(instanceId, profileArn);
    current = instanceId;
  };

  const started = Date.now();
  const loop = (async () => {
    while (!stopped && Date.now() - started < MAX_LIFETIME_MS) {
      if (!paused) {
        try {
          const r = await ec2.send(
            new sdk.DescribeInstancesCommand({
              Filters: [
                { Name: 'tag:spotctl:managed', Values: ['true'] },
                { Name: 'tag:spotctl:role', Values: ['run', 'ami-builder'] },
                { Name: 'instance-state-name', Values: ['pending', 'running'] },
              ],
            }),
          );
          const live = (r.Reservations ?? []).flatMap((res) => res.Instances ?? []);
          // The machine this host played is gone: nothing answers on its address any more.
          if (current !== undefined && !live.some((i) => i.InstanceId === current)) {
            await sshd.stop();
            await killInstanceProcesses(
              netns,
              (options.keepPids?.() ?? []).filter((p): p is number => p !== undefined),
            );
            current = undefined;
          }
          const fresh = live.filter((i) => i.InstanceId && !booted.includes(i.InstanceId));
          for (const instance of fresh) await boot(instance.InstanceId!, instance.KeyName, instance.IamInstanceProfile?.Arn);
        } catch (error) {
          errors.push(error instanceof Error ? error.message : String(error));
        }
      }
      await sleep(POLL_MS);
    }
  })();

  const close = async (): Promise<void> => {
    stopped = true;
    await loop;
    ec2[Symbol.dispose]();
  };
  return {
    booted,
    profiles,
    errors,
    pause: () => {
      paused = true;
    },
    resume: () => {
      paused = false;
    },
    async waitIdle(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (current !== undefined) {
        if (Date.now() > deadline) throw new Error(`the test host still plays ${current} after ${timeoutMs} ms`);
        await sleep(POLL_MS);
      }
    },
    env: () => ({
      SPOTCTL_TEST_INSTANCE_HOST: `${sshd.user}@${netns.nsAddress}:22`,
      SPOTCTL_TEST_SHUTDOWN_ARGV: JSON.stringify(terminateViaMotoArgv(moto)),
    }),
    close,
    [Symbol.asyncDispose]: close,
  };
}
