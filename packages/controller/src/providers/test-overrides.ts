/**
 * Test-only settings (README, "Testing"), read once at the CLI's composition root (cli/main.ts)
 * into one typed object that is passed down; nothing deeper reads `SPOTCTL_TEST_*` itself.
 *
 * SPOTCTL_TEST_INSTANCE_HOST=user@addr[:port] makes the aws provider SSH to that host instead of
 * the instance's address (moto invents addresses nobody answers on); SPOTCTL_TEST_INSTANCE_IDENTITY
 * and SPOTCTL_TEST_INSTANCE_KNOWN_HOSTS replace the key and the pinned known_hosts;
 * SPOTCTL_TEST_SHUTDOWN_ARGV (a JSON array; `{instanceId}` and `{region}` are filled in) replaces
 * the agent's `sudo shutdown -h now`. With the host override and no shutdown override the agent
 * only exits: a test host is never shut down. SPOTCTL_TEST_BAKE_ROOT=DIR makes an AMI bake put its
 * files under DIR (see providers/aws-ami.ts).
 */
import path from 'node:path';
import { UserError } from '@spotctl/shared';
import { parseHostSpec, type SshTarget } from '../transport/ssh.ts';

export const TEST_ENV = {
  host: 'SPOTCTL_TEST_INSTANCE_HOST',
  identity: 'SPOTCTL_TEST_INSTANCE_IDENTITY',
  knownHosts: 'SPOTCTL_TEST_INSTANCE_KNOWN_HOSTS',
  shutdownArgv: 'SPOTCTL_TEST_SHUTDOWN_ARGV',
  bakeRoot: 'SPOTCTL_TEST_BAKE_ROOT',
} as const;

/** Where a launched instance is reached instead of its own address, and how the agent "shuts it down". */
export interface TestHostOverride {
  target: SshTarget;
  shutdownArgv?: string[];
}

/** Every test-only setting in effect; empty in normal use. */
export interface TestOverrides {
  host?: TestHostOverride;
  /** An AMI bake's files go under this directory on the (test) host. */
  bakeRoot?: string;
}

export function testHostOverride(env: NodeJS.ProcessEnv): TestHostOverride | undefined {
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

/** Reads every `SPOTCTL_TEST_*` setting (the composition root calls this once). */
export function readTestOverrides(env: NodeJS.ProcessEnv): TestOverrides {
  const host = testHostOverride(env);
  const bakeRoot = env[TEST_ENV.bakeRoot] || undefined;
  if (bakeRoot && !host) {
    throw new UserError('SPOTCTL_CONFIG', `${TEST_ENV.bakeRoot} only applies with ${TEST_ENV.host}`, { remediation: `it is a test-only setting: unset ${TEST_ENV.bakeRoot}` });
  }
  return { ...(host ? { host } : {}), ...(bakeRoot ? { bakeRoot } : {}) };
}
