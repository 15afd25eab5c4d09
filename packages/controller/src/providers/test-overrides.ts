/**
 * Test-only settings (README, "Testing"), read once at the CLI's composition root (cli/main.ts)
 * into one typed object that is passed down; nothing deeper reads `SPOTCTL_TEST_*` itself.
 *
 * SPOTCTL_TEST_INSTANCE_HOST=user@addr[:port] makes the aws provider SSH to that host instead of
 * the instance's address (moto invents addresses nobody answers on); SPOTCTL_TEST_INSTANCE_IDENTITY
 * and SPOTCTL_TEST_INSTANCE_KNOWN_HOSTS replace the key and the pinned known_hosts;
 * SPOTCTL_TEST_SHUTDOWN_ARGV (a JSON array; `{instanceId}` and `{region}` are filled in) replaces
 * the agent's `sudo shutdown -h now`. With the host override and no shutdown override the agent
 * only exits: a test host is never shut down. SPOTCTL_TEST_INSTANCE_HOSTS=FILE instead gives each
 * launched instance a test host of its own: FILE is a JSON object `{ "i-…": "user@addr[:port]" }`
 * that the test's host pool writes as it boots each instance (as EC2 gives each its own address). SPOTCTL_TEST_BAKE_ROOT=DIR makes an AMI bake put its
 * files under DIR (see providers/aws-ami.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '@spotctl/shared';
import { parseHostSpec, type SshTarget } from '../transport/ssh.ts';

export const TEST_ENV = {
  host: 'SPOTCTL_TEST_INSTANCE_HOST',
  hosts: 'SPOTCTL_TEST_INSTANCE_HOSTS',
  identity: 'SPOTCTL_TEST_INSTANCE_IDENTITY',
  knownHosts: 'SPOTCTL_TEST_INSTANCE_KNOWN_HOSTS',
  shutdownArgv: 'SPOTCTL_TEST_SHUTDOWN_ARGV',
  bakeRoot: 'SPOTCTL_TEST_BAKE_ROOT',
} as const;

/** Where a launched instance is reached instead of its own address, and how the agent "shuts it down". */
export interface TestHostOverride {
  /** One host plays every instance (SPOTCTL_TEST_INSTANCE_HOST). */
  target?: SshTarget;
  /** Each instance has a host of its own, named in this file (SPOTCTL_TEST_INSTANCE_HOSTS). */
  hostsFile?: string;
  shutdownArgv?: string[];
}

/** How long an instance's entry in the hosts file may take to appear (its test host boots). */
const TEST_HOST_WAIT_MS = 60_000;

/**
 * The test host that plays `instanceId`: the one host, or the instance's own entry in the hosts
 * file once the test's pool wrote it (bounded, cancellable).
 */
export async function testTargetFor(override: TestHostOverride, instanceId: string, signal?: AbortSignal): Promise<SshTarget> {
  if (!override.hostsFile) {
    if (!override.target)
      throw new UserError('SPOTCTL_CONFIG', `${TEST_ENV.host} or ${TEST_ENV.hosts} must name the test host`, {
        remediation: 'set one of them',
      });
    return override.target;
  }
  const until = Date.now() + TEST_HOST_WAIT_MS;
  for (;;) {
    signal?.throwIfAborted();
    let spec: unknown;
    try {
      spec = (JSON.parse(readFileSync(override.hostsFile, 'utf8')) as Record<string, unknown>)[instanceId];
    } catch {
      // Not written yet (the pool writes it whole, by rename).
    }
    if (typeof spec === 'string') return parseHostSpec(spec);
    if (Date.now() > until)
      throw new UserError(
        'SPOTCTL_CONFIG',
        `${TEST_ENV.hosts}: no test host for ${instanceId} in ${override.hostsFile} after ${TEST_HOST_WAIT_MS / 1000} s`,
        { remediation: 'the test host pool did not boot the instance; check its errors' },
      );
    await sleep(200, undefined, signal ? { signal } : {});
  }
}

/** Every test-only setting in effect; empty in normal use. */
export interface TestOverrides {
  host?: TestHostOverride;
  /** An AMI bake's files go under this directory on the (test) host. */
  bakeRoot?: string;
}

export function testHostOverride(env: NodeJS.ProcessEnv): TestHostOverride | undefined {
  const host = env[TEST_ENV.host];
  const hostsRaw = env[TEST_ENV.hosts];
  const hostsFile = hostsRaw ? path.resolve(hostsRaw) : undefined;
  if (host && hostsFile) {
    throw new UserError('SPOTCTL_CONFIG', `${TEST_ENV.host} and ${TEST_ENV.hosts} cannot be used together`, {
      remediation: `these are test-only settings: keep one of them`,
    });
  }
  if (!host && !hostsFile) {
    if (env[TEST_ENV.shutdownArgv] || env[TEST_ENV.identity] || env[TEST_ENV.knownHosts]) {
      throw new UserError(
        'SPOTCTL_CONFIG',
        `${TEST_ENV.identity}, ${TEST_ENV.knownHosts} and ${TEST_ENV.shutdownArgv} only apply with ${TEST_ENV.host}`,
        {
          remediation: `these are test-only settings: unset them, or set ${TEST_ENV.host} as well`,
        },
      );
    }
    return undefined;
  }
  if (hostsFile && (env[TEST_ENV.identity] || env[TEST_ENV.knownHosts])) {
    throw new UserError('SPOTCTL_CONFIG', `${TEST_ENV.identity} and ${TEST_ENV.knownHosts} only apply with ${TEST_ENV.host}`, {
      remediation: 'these are test-only settings: unset them',
    });
  }
  let target: SshTarget | undefined;
  if (host) {
    target = { ...parseHostSpec(host) };
    const identity = env[TEST_ENV.identity];
    const knownHosts = env[TEST_ENV.knownHosts];
    if (identity) target.identityFile = path.resolve(identity);
    if (knownHosts) target.knownHostsFile = path.resolve(knownHosts);
  }
  let shutdownArgv: string[] | undefined;
  const raw = env[TEST_ENV.shutdownArgv];
  if (raw) {
    const parsed: unknown = JSON.parse(raw);
    if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((a) => typeof a === 'string')) {
      throw new UserError('SPOTCTL_CONFIG', `${TEST_ENV.shutdownArgv} must be a JSON array of strings`, {
        remediation: `e.g. ${TEST_ENV.shutdownArgv}='["curl","-X","POST","…"]'`,
      });
    }
    shutdownArgv = parsed as string[];
  }
  return { ...(target ? { target } : {}), ...(hostsFile ? { hostsFile } : {}), ...(shutdownArgv ? { shutdownArgv } : {}) };
}

/** Reads every `SPOTCTL_TEST_*` setting (the composition root calls this once). */
export function readTestOverrides(env: NodeJS.ProcessEnv): TestOverrides {
  const host = testHostOverride(env);
  const bakeRoot = env[TEST_ENV.bakeRoot] || undefined;
  if (bakeRoot && !host) {
    throw new UserError('SPOTCTL_CONFIG', `${TEST_ENV.bakeRoot} only applies with ${TEST_ENV.host}`, {
      remediation: `it is a test-only setting: unset ${TEST_ENV.bakeRoot}`,
    });
  }
  return { ...(host ? { host } : {}), ...(bakeRoot ? { bakeRoot } : {}) };
}
