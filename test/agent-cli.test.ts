/**
 * The agent's command-line contract, which the controller depends on: `version`, `start`
 * (daemonize, idempotent, restart), config errors, environment overrides, signals.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, test } from 'vitest';
import { PROTOCOL_VERSION, parseAgentState, type JobStatus } from '@spotctl/shared';
import {
  AGENT_BUNDLE,
  connectClient,
  ensureAgentBundle,
  expectUpgradeRefused,
  isProcessAlive,
  pollUntil,
  readStoredLog,
  runAgentCli,
  startAgent,
  waitForJobEnd,
} from './helpers/agent-process.ts';

beforeAll(async () => {
  await ensureAgentBundle();
});

const tmpDirs: string[] = [];
afterEach(() => {
  for (const dir of tmpDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function tmp(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-agent-cli-'));
  tmpDirs.push(dir);
  return dir;
}

/** Fields 5 and 6 of /proc/<pid>/stat: process group and session. */
function groupAndSession(pid: number): { pgrp: number; session: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { pgrp: Number(fields[2]), session: Number(fields[3]) };
}

describe('version', () => {
  test('prints versions and the bundle hash as one JSON line', async () => {
    const result = await runAgentCli(['version']);
    expect(result.code).toBe(0);
    const hash = createHash('sha256').update(readFileSync(AGENT_BUNDLE)).digest('hex').slice(0, 16);
    expect(result.stdout).toBe(`{"agentVersion":"0.1.0","buildId":"${hash}","protocolVersion":${PROTOCOL_VERSION}}\n`);
  });
});

describe('config errors', () => {
  test('a bad config exits 2 with one line naming the field', async () => {
    const dir = tmp();
    const configPath = path.join(dir, 'config.json');
    const base = { runId: 'r', workdir: dir, stateDir: path.join(dir, 'state'), command: ['true'], token: 'x'.repeat(20) };
    for (const [bad, field] of [
      [{ ...base, port: 'eighty' }, '/port'],
      [{ ...base, command: [] }, '/command'],
      [{ ...base, idleTimeoutMs: 1.5 }, '/idleTimeoutMs'],
      [{ ...base, shutdownAction: { kind: 'reboot' } }, '/shutdownAction'],
      // Past 2^31-1 ms a Node.js timer fires at once: refused rather than a grace of zero.
      [{ ...base, graceMs: 2 ** 31 }, '/graceMs'],
      [{ ...base, simulate: { interruptAfterMs: 360_000_000_000_000 } }, '/simulate/interruptAfterMs'],
      [{ ...base, onRebalance: 'signal:NOPE' }, '/onRebalance'],
    ] as const) {
      writeFileSync(configPath, JSON.stringify(bad));
      for (const command of ['start', 'run']) {
        const result = await runAgentCli([command, '--config', configPath]);
        expect(result.code, `${command} with ${field}: ${result.stderr}`).toBe(2);
        expect(result.stdout).toBe('');
        expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
        expect(result.stderr).toContain(field);
      }
    }
    // Nothing was started or created for the bad configs.
    expect(existsSync(path.join(dir, 'state'))).toBe(false);
    // An environment override is validated too.
    writeFileSync(configPath, JSON.stringify(base));
    const badPort = await runAgentCli(['start', '--config', configPath], { env: { SPOTCTL_AGENT_PORT: 'abc' } });
    expect(badPort.code).toBe(2);
    expect(badPort.stderr).toContain('SPOTCTL_AGENT_PORT');
  });

  test('usage errors exit 2', async () => {
    expect((await runAgentCli([])).code).toBe(2);
    expect((await runAgentCli(['frobnicate'])).code).toBe(2);
    expect((await runAgentCli(['start'])).code).toBe(2);
    const missing = await runAgentCli(['start', '--config', path.join(tmp(), 'nope.json')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read config file/);
  });
});

describe('start', () => {
  test('daemonizes in a new session, the job in its own group; a second start prints the same agent', async () => {
    await using agent = await startAgent({ command: ['sleep', '30'] });
    const agentIds = groupAndSession(agent.pid);
    // setsid: the ssh session that ran `start` can go away without a SIGHUP reaching the agent.
    expect(agentIds.session).toBe(agent.pid);
    // One memory-reducer GC, not two or three: the later ones freed nothing (bench/agent-idle).
    expect(readFileSync(`/proc/${agent.pid}/cmdline`, 'utf8').split('\0')).toContain('--memory-reducer-single-gc');
    await using client = await connectClient(agent);
    const status = (await client.call('status', {})) as JobStatus;
    expect(status.state).toBe('running');
    expect(groupAndSession(status.pid ?? 0).pgrp).toBe(status.pid);

    const again = await runAgentCli(['start', '--config', agent.configPath]);
    expect(again.code).toBe(0);
    const state = parseAgentState(again.stdout.trim());
    expect(state.ok && state.value).toEqual(agent.state);
    // agent.json holds the same.
    expect(JSON.parse(readFileSync(path.join(agent.stateDir, 'agent.json'), 'utf8'))).toEqual(agent.state);
  });

  test('a restarted agent for the same run continues the log after the last seq', async () => {
    await using first = await startAgent({ command: ['sh', '-c', 'echo one; echo two'] });
    {
      await using client = await connectClient(first);
      await waitForJobEnd(client);
      await client.request('shutdown', {});
    }
    await first.waitForExit();
    const second = await runAgentCli(['start', '--config', first.configPath]);
    expect(second.code, second.stderr).toBe(0);
    const state = parseAgentState(second.stdout.trim());
    if (!state.ok) throw new Error(state.error);
    expect(state.value.pid).not.toBe(first.pid);
    try {
      await pollUntil(() => first.readStatus()?.state === 'exited' && first.readStatus()?.lastSeq === 4, 'the second job to end', 10_000);
      const lines = readStoredLog(first.stateDir);
      expect(lines.map((l) => [l.seq, l.text])).toEqual([
        [1, 'one'],
        [2, 'two'],
        [3, 'one'],
        [4, 'two'],
      ]);
    } finally {
      process.kill(state.value.pid, 'SIGTERM');
      await pollUntil(() => !isProcessAlive(state.value.pid), 'the second agent to exit');
    }
  });

  test('an agent that dies before it is ready: exit 1, its output on stderr, the job stopped', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    const dir = tmp();
    const configPath = path.join(dir, 'config.json');
    writeFileSync(
      configPath,
      JSON.stringify({
        runId: 'r',
        workdir: dir,
        stateDir: path.join(dir, 'state'),
        command: ['sleep', '30'],
        token: 'x'.repeat(20),
        port,
      }),
    );
    try {
      const result = await runAgentCli(['start', '--config', configPath]);
      expect(result.code).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/EADDRINUSE/);
      expect(result.stderr).toMatch(/before it was ready/);
      const readStatus = () => JSON.parse(readFileSync(path.join(dir, 'state', 'status.json'), 'utf8')) as JobStatus;
      const status = readStatus();
      // The job had started before the port turned out to be taken; it must not be left running.
      await pollUntil(() => !isProcessAlive(status.pid ?? 0), `job ${status.pid} to be killed`, 5000);
      // And the status says why, for the controller to show.
      await pollUntil(() => readStatus().stopReason === 'agent-start-failed', 'the status to name the start failure', 5000);
      expect(readStatus().error).toMatch(/^the agent failed to start: .*EADDRINUSE/);
    } finally {
      blocker.close();
    }
  });
});

describe('environment', () => {
  test('SPOTCTL_AGENT_TOKEN overrides the config token and is not passed to the job', async () => {
    const envToken = 'e'.repeat(32);
    await using agent = await startAgent({
      // eslint-disable-next-line no-template-curly-in-string -- shell parameter expansion, not a template
      command: ['sh', '-c', 'echo "$SPOTCTL_RUN_ID|$SPOTCTL_HEARTBEAT|$PYTHONUNBUFFERED|${SPOTCTL_AGENT_TOKEN:-unset}|$FOO"'],
      config: { env: { FOO: 'bar' } },
      env: { SPOTCTL_AGENT_TOKEN: envToken },
    });
    expect(agent.token).toBe(envToken);
    const refused = await expectUpgradeRefused({ url: agent.url, token: agent.config.token });
    expect(refused.statusCode).toBe(401);
    await using client = await connectClient(agent);
    await waitForJobEnd(client);
    const [line, ...more] = readStoredLog(agent.stateDir);
    expect(more).toEqual([]);
    expect(line?.text).toBe(`${agent.config.runId}|${agent.config.heartbeatPath}|1|unset|bar`);
  });
});

describe('lifecycle', () => {
  test('SIGTERM to the agent stops the job with its grace, then the agent exits', async () => {
    await using agent = await startAgent({ command: ['sleep', '30'] });
    await pollUntil(() => agent.readStatus()?.state === 'running', 'the job to run');
    process.kill(agent.pid, 'SIGTERM');
    await agent.waitForExit(10_000);
    expect(agent.readStatus()).toMatchObject({ state: 'exited', signal: 'SIGTERM', stopReason: 'agent-signal' });
  });

  test('with the longest grace a timer holds, SIGTERM still waits for the job to end', async () => {
    // The job takes a moment to act on SIGTERM (the trap runs once the current sleep is over).
    await using agent = await startAgent({
      command: ['sh', '-c', 'trap "exit 3" TERM; while :; do sleep 0.2; done'],
      config: { graceMs: 2 ** 31 - 1 },
    });
    await pollUntil(() => agent.readStatus()?.state === 'running', 'the job to run');
    process.kill(agent.pid, 'SIGTERM');
    await agent.waitForExit(10_000);
    expect(agent.readStatus()).toMatchObject({ state: 'exited', exitCode: 3, stopReason: 'agent-signal' });
    expect(readFileSync(path.join(agent.stateDir, 'agent.log'), 'utf8')).not.toContain('did not end in time');
  });

  test('max runtime stops the job, then the shutdown action runs', async () => {
    await using agent = await startAgent({
      command: ['sleep', '30'],
      // idleTimeoutMs 2000 makes the watchdog check every 500 ms (min(5 s, idle/4)).
      config: { maxRuntimeMs: 500, idleTimeoutMs: 2000, graceMs: 500 },
    });
    await agent.waitForExit(15_000);
    expect(agent.readStatus()).toMatchObject({ state: 'exited', signal: 'SIGTERM', stopReason: 'max-runtime' });
    const shutdown = JSON.parse(readFileSync(path.join(agent.stateDir, 'shutdown.json'), 'utf8')) as { reason: string };
    expect(shutdown.reason).toBe('max-runtime');
  });
});
