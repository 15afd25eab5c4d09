/**
 * Rebuilds the local record of an aws run from the cloud, for a machine that lost it (or never
 * had it): the instance's tags say which run, command, price, market, SSH user, host key and
 * remote directory; the instance itself (over SSH, pinned to the tagged host key, with this
 * machine's spotctl key) holds the agent's config (the run's bearer token) and state (its port).
 * Nothing secret is in the tags: the token never leaves the laptop and the instance.
 *
 * Only a machine that holds the key pair's private key (`$SPOTCTL_HOME/keys/<key name>`) can
 * recover a run; anyone else sees it in `spotctl ls` and can `spotctl teardown` it.
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { AGENT_FILES, SpotctlError, UserError, parseAgentConfig, parseAgentState, type AgentState } from '@spotctl/shared';
import type { AwsRunInfo, RunRecord, RunStore } from '../runs/run-store.ts';
import { shellQuote } from '../transport/shell.ts';
import { SshConnection, type SshTarget } from '../transport/ssh.ts';
import { writeKnownHosts } from './ami-user-data.ts';
import type { ManagedInstance } from './lifecycle.ts';
import { TAG } from './tags.ts';

export interface RecoverOptions {
  instance: ManagedInstance;
  store: RunStore;
  keysDir: string;
  /** Test-only address override (SPOTCTL_TEST_INSTANCE_HOST), as for launches. */
  targetOverride?: Partial<SshTarget>;
  sshConfig?: string;
  signal?: AbortSignal;
}

/** The record's cloud half, from tags alone (no SSH). */
export function awsInfoFromInstance(i: ManagedInstance): AwsRunInfo {
  return {
    region: i.region,
    az: i.az,
    instanceId: i.instanceId,
    instanceType: i.instanceType,
    vcpus: 0,
    market: i.market === 'on-demand' ? 'on-demand' : 'spot',
    pricePerHour: i.pricePerHour ?? 0,
    imageId: i.imageId ?? '',
    keyName: i.keyName ?? '',
    securityGroupId: i.securityGroupIds[0] ?? '',
    launchedAt: i.launchedAt ?? (Date.parse(i.tags[TAG.created] ?? '') || 0),
  };
}

/** Recovers and saves the run's record; returns it. */
export async function recoverRunRecord(options: RecoverOptions): Promise<RunRecord> {
  const { instance, store } = options;
  const runId = instance.runId;
  if (!runId) throw new SpotctlError('SPOTCTL_INTERNAL', `${instance.instanceId} carries no ${TAG.runId}`);
  if (instance.state !== 'running') {
    throw new UserError('SPOTCTL_AGENT_UNREACHABLE', `run ${runId}'s instance ${instance.instanceId} is ${instance.state}`, {
      remediation: 'only a running instance can be attached to',
    });
  }
  const keyFile = instance.keyName ? path.join(options.keysDir, instance.keyName) : undefined;
  if (!keyFile || !existsSync(keyFile)) {
    throw new UserError(
      'SPOTCTL_CONFIG',
      `this machine does not hold the SSH key of run ${runId} (${instance.keyName ?? 'no key pair'}; launched from ${instance.launchedFrom ?? 'another machine'})`,
      {
        remediation: `follow it from the machine that launched it, or end it: spotctl teardown ${runId}`,
      },
    );
  }
  const hostKey = instance.tags[TAG.hostKey];
  if (!hostKey)
    throw new UserError('SPOTCTL_CONFIG', `run ${runId} has no ${TAG.hostKey} tag, so its host cannot be verified`, {
      remediation: `end it with: spotctl teardown ${runId}`,
    });
  const address = instance.publicIp;
  if (!address && !options.targetOverride?.host)
    throw new UserError('SPOTCTL_AGENT_UNREACHABLE', `${instance.instanceId} has no public address`);

  const runDir = store.runDir(runId);
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const knownHostsFile = path.join(runDir, 'known_hosts');
  let target: SshTarget = { user: instance.sshUser ?? 'ubuntu', host: address ?? '', identityFile: keyFile, knownHostsFile };
  if (options.targetOverride) target = { ...target, ...options.targetOverride };
  if (options.sshConfig) target.configFile = options.sshConfig;
  if (target.knownHostsFile === knownHostsFile) await writeKnownHosts(knownHostsFile, target.host, target.port, hostKey);

  await using conn = await SshConnection.open(target, { controlDir: runDir, ...(options.signal ? { signal: options.signal } : {}) });
  const remoteDir = instance.tags[TAG.remoteDir] ?? '~/.spotctl';
  const base = remoteDir.startsWith('/') ? shellQuote(remoteDir) : `"$HOME"/${shellQuote(remoteDir.replace(/^~\/?/, ''))}`;
  const stateDir = `${base}/runs/${shellQuote(runId)}/agent`;
  const r = await conn.exec(
    `echo "home=$HOME"; cat ${stateDir}/config.json; echo; echo '--8<--'; cat ${stateDir}/${AGENT_FILES.state} 2>/dev/null`,
    {
      timeoutMs: 30_000,
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
  const [head = '', stateText = ''] = r.stdout.split('--8<--\n');
  const configText = head.split('\n').slice(1).join('\n').trim();
  let parsedConfig: unknown;
  try {
    parsedConfig = JSON.parse(configText);
  } catch {
    throw new UserError(
      'SPOTCTL_AGENT_UNREACHABLE',
      `run ${runId}: the agent's config is not on ${instance.instanceId} (the setup may not have finished)`,
      { remediation: `end it with: spotctl teardown ${runId}` },
    );
  }
  const config = parseAgentConfig(parsedConfig);
  if (!config.ok) throw new SpotctlError('SPOTCTL_PROTOCOL', `run ${runId}: the agent config on the host is invalid (${config.error})`);
  const state = parseAgentState(stateText.trim());
  const agent: AgentState | undefined = state.ok ? state.value : undefined;
  const home = /^home=(.*)$/m.exec(head)?.[1] ?? '';
  const c = config.value;
  const runRoot = path.posix.dirname(c.stateDir);
  const record: RunRecord = {
    runId,
    provider: 'aws',
    createdAt: Date.parse(instance.tags[TAG.created] ?? '') || instance.launchedAt || Date.now(),
    command: c.command,
    syncPaths: [],
    target,
    layout: {
      home,
      runDir: runRoot,
      workdir: c.workdir,
      stateDir: c.stateDir,
      agentPath: agent ? path.posix.join(path.posix.dirname(path.posix.dirname(runRoot)), 'agent', agent.buildId, 'agent.mjs') : '',
    },
    token: c.token,
    graceMs: c.graceMs ?? 90_000,
    detached: instance.tags[TAG.detached] === 'true',
    ...(agent ? { agent } : {}),
    aws: awsInfoFromInstance(instance),
  };
  store.save(record);
  return record;
}
