/**
 * Reaching a launched instance (a run's or an AMI bake's builder): this machine's key and the
 * address range it may SSH from, a known_hosts pinning the host key we generated, and waiting
 * until the login works.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '@spotctl/shared';
import createDebug from 'debug';
import { cloudInitWaitScript, generateHostKey, writeKnownHosts } from '../aws/ami-user-data.ts';
import { UBUNTU_USER, ensureLocalKey, resolveSshCidr, type LocalKey } from '../aws/infra.ts';
import type { Output } from '../output/output.ts';
import { spotctlHome } from '../runs/run-store.ts';
import { SshConnection, type SshTarget } from '../transport/ssh.ts';
import { TEST_ENV, testTargetFor, type TestHostOverride } from './test-overrides.ts';

const debug = createDebug('spotctl:aws');

/** From "running" to an SSH login that works: boot, cloud-init writing keys. @default 600_000 */
export const SSH_READY_TIMEOUT_MS = 600_000;
/** cloud-init installing Node.js and python3-venv on stock Ubuntu. @default 900 */
export const CLOUD_INIT_TIMEOUT_S = 900;
/** Between SSH attempts while the instance boots. */
const SSH_RETRY_INTERVAL_MS = 3_000;

function keysDir(): string {
  return path.join(spotctlHome(), 'keys');
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
export async function waitForSsh(
  target: SshTarget,
  options: { controlDir: string; signal?: AbortSignal; timeoutMs?: number; out: Output },
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? SSH_READY_TIMEOUT_MS);
  let attempts = 0;
  let lastError: unknown;
  for (; attempts < 10_000 && Date.now() < deadline; attempts++) {
    options.signal?.throwIfAborted();
    let conn: SshConnection | undefined;
    try {
      conn = await SshConnection.open(target, {
        controlDir: options.controlDir,
        connectTimeoutS: 10,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (error) {
      if (!isRetryableSshError(error)) throw error;
      lastError = error;
      debug('ssh not ready (attempt %d): %s', attempts + 1, (error as Error).message);
      await sleep(SSH_RETRY_INTERVAL_MS, undefined, options.signal ? { signal: options.signal } : {});
      continue;
    }
    try {
      const r = await conn.exec(cloudInitWaitScript(CLOUD_INIT_TIMEOUT_S), {
        timeoutMs: (CLOUD_INIT_TIMEOUT_S + 30) * 1000,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      const status = /cloud-init=(\S+)/.exec(r.stdout)?.[1];
      if (status !== '0' && status !== '2' && status !== 'absent')
        options.out.warn(`cloud-init did not finish cleanly (status ${status ?? 'unknown'}); checking the host anyway`);
      return;
    } finally {
      await conn.close();
    }
  }
  throw new UserError(
    'SPOTCTL_SSH_UNREACHABLE',
    `the instance did not accept SSH within ${Math.round((options.timeoutMs ?? SSH_READY_TIMEOUT_MS) / 1000)} s: ${lastError instanceof Error ? lastError.message : 'no answer'}`,
    {
      remediation:
        'check that nothing between this machine and AWS blocks port 22 and that --ssh-cidr (if given) covers your address; spotctl terminated the instance',
      cause: lastError,
    },
  );
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
  instanceId: string;
  signal?: AbortSignal;
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
    const testTarget = await testTargetFor(override, options.instanceId, options.signal);
    target = { ...target, ...testTarget };
    options.out.warn(
      `test-only setting ${override.hostsFile ? TEST_ENV.hosts : TEST_ENV.host} in effect: connecting to ${testTarget.host}${testTarget.port ? `:${testTarget.port}` : ''} instead of ${address}`,
    );
  }
  if (options.sshConfig) target.configFile = options.sshConfig;
  if (target.knownHostsFile === knownHostsFile) await writeKnownHosts(knownHostsFile, target.host, target.port, options.hostPublicKey);
  return target;
}
