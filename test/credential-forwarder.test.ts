/**
 * The controller's credential forwarder against a real agent: the first set is pushed at once,
 * a new one is minted and pushed when three quarters of its life are gone, a failed push is
 * retried, and an agent that was not configured for forwarded credentials refuses them. The
 * agent's log names when each set expires, never the keys.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { AGENT_FILES, type CredentialsParams } from '@spotctl/shared';
import { AgentConnection, CredentialForwarder } from '@spotctl/controller';
import { startAgent, type AgentProcess } from './helpers/agent-process.ts';

const agents: AgentProcess[] = [];
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.close()));
});

const LONG_JOB = ['python3', '-c', 'import time\nfor _ in range(600): time.sleep(0.1)'];

async function agentWith(credentials: 'forwarded' | undefined): Promise<AgentProcess> {
  const agent = await startAgent({
    command: LONG_JOB,
    config: (dir) => ({
      checkpoint: {
        dir: path.join(dir, 'ckpt'),
        target: { kind: 'dir', path: path.join(dir, 'store') },
        ...(credentials ? { credentials } : {}),
      },
    }),
  });
  agents.push(agent);
  return agent;
}

const connectTo = (agent: AgentProcess) => (signal: AbortSignal) =>
  AgentConnection.connect({ kind: 'tcp', host: '127.0.0.1', port: agent.state.port, token: agent.token }, { signal });

function receivedExpiries(agent: AgentProcess): string[] {
  return readFileSync(path.join(agent.stateDir, AGENT_FILES.agentLog), 'utf8')
    .split('\n')
    .filter((l) => l.includes('forwarded S3 credentials received'))
    .map((l) => (JSON.parse(l) as { expiresAt: string }).expiresAt);
}

test('pushes the first set, renews at three quarters of its life, retries a failed push, logs no key', async () => {
  const agent = await agentWith('forwarded');
  let now = Date.parse('2026-12-06T00:00:00Z');
  const sets: CredentialsParams[] = [];
  const mintAt = (): CredentialsParams => {
    const c = {
      accessKeyId: `ASIA${sets.length}`,
      secretAccessKey: `very-secret-${sets.length}`,
      sessionToken: `session-${sets.length}`,
      expiresAt: now + 3_600_000,
    };
    sets.push(c);
    return c;
  };
  const scheduled: Array<{ tick: () => Promise<void>; ms: number }> = [];
  const warnings: string[] = [];
  let failConnect = false;
  const connect = connectTo(agent);
  const mintedFor: number[] = [];

  await using forwarder = await CredentialForwarder.start({
    first: mintAt(),
    mint: (durationS) => {
      mintedFor.push(durationS);
      return Promise.resolve(mintAt());
    },
    connect: (signal) => (failConnect ? Promise.reject(new Error('tunnel down')) : connect(signal)),
    out: { warn: (m: string) => warnings.push(m) },
    now: () => now,
    schedule: (tick, ms) => {
      scheduled.push({ tick, ms });
      return { cancel: () => undefined };
    },
  });
  expect(forwarder.pushed).toBe(true);
  expect(receivedExpiries(agent)).toEqual([new Date(sets[0]!.expiresAt).toISOString()]);
  expect(scheduled.at(-1)?.ms).toBe(2_700_000);

  // Three quarters later: a new set, pushed; but the tunnel is down, so the push fails once.
  now += 2_700_000;
  failConnect = true;
  await scheduled.at(-1)!.tick();
  expect(mintedFor).toEqual([3600]);
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toMatch(/could not forward S3 credentials to the agent \(tunnel down\); retrying/);
  expect(scheduled.at(-1)?.ms).toBe(10_000);
  expect(receivedExpiries(agent)).toHaveLength(1);

  failConnect = false;
  now += 10_000;
  await scheduled.at(-1)!.tick();
  expect(mintedFor).toEqual([3600]);
  expect(receivedExpiries(agent)).toEqual([sets[0], sets[1]].map((s) => new Date(s!.expiresAt).toISOString()));

  const log = readFileSync(path.join(agent.stateDir, AGENT_FILES.agentLog), 'utf8');
  expect(log).not.toMatch(/very-secret|session-\d/);
});

test('an agent not configured for forwarded credentials refuses them', async () => {
  const agent = await agentWith(undefined);
  const connection = await connectTo(agent)(AbortSignal.timeout(10_000));
  try {
    await expect(
      connection.request('credentials', { accessKeyId: 'A', secretAccessKey: 'B', sessionToken: 'C', expiresAt: Date.now() + 900_000 }),
    ).rejects.toMatchObject({ code: 'SPOTCTL_BAD_REQUEST' });
  } finally {
    await connection.close();
  }
});
