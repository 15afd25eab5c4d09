/**
 * The agent bundle over real sockets: auth, subprotocol, the request/response protocol, log
 * replay and live streaming, stop, shutdown, the idle watchdog, and flow control.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import {
  AGENT_FILES,
  HEALTH_PATH,
  PROTOCOL_VERSION,
  WS_PATH,
  WS_SUBPROTOCOL,
  checkResult,
  type JobStatus,
  type LogLine,
} from '@spotctl/shared';
import {
  AGENT_BUNDLE,
  connectClient,
  ensureAgentBundle,
  expectUpgradeRefused,
  httpGet,
  pollUntil,
  startAgent,
  waitForJobEnd,
  type TestClient,
  type TestMessage,
} from './helpers/agent-process.ts';
import { tmpDir } from './helpers/tmp.ts';

beforeAll(async () => {
  await ensureAgentBundle();
});

type EndEvent = Extract<TestMessage, { event: 'end' }>;

/**
 * A logs frame carries at most one read chunk of the agent's log (256 KiB), or one record when a
 * record is bigger (a pipe chunk plus a partial line: well under 256 KiB more).
 */
const MAX_FRAME_BYTES = 512 * 1024;

/**
 * Collects the logs events that follow `after` (the subscribe response) up to the end event, and
 * checks each batch's size. Indexes, not "messages since now": several frames can arrive in one
 * read and be recorded before the caller's await resumes.
 */
async function collectUntilEnd(client: TestClient, after: TestMessage, timeoutMs = 30_000): Promise<{ lines: LogLine[]; end: EndEvent }> {
  const startIndex = client.messages.indexOf(after) + 1;
  if (startIndex === 0) throw new Error('collectUntilEnd: the subscribe response is not among the received messages');
  const end = await client.nextEvent('end', { timeoutMs, where: (m) => client.messages.indexOf(m) >= startIndex });
  const window = client.messages.slice(startIndex, client.messages.indexOf(end));
  const lines: LogLine[] = [];
  for (const m of window) {
    if ('event' in m && m.event === 'logs') {
      expect(m.lines.length).toBeGreaterThan(0);
      expect(m.frameBytes).toBeLessThanOrEqual(MAX_FRAME_BYTES);
      lines.push(...m.lines);
    }
  }
  return { lines, end };
}

function expectSeqs(lines: LogLine[], from: number, to: number): void {
  const seqs = lines.map((l) => l.seq);
  expect(seqs.length).toBe(to - from + 1);
  for (let i = 0; i < seqs.length; i++) {
    if (seqs[i] !== from + i)
      throw new Error(`line ${i}: expected seq ${from + i}, got ${seqs[i]} (lines ${seqs.slice(Math.max(0, i - 3), i + 3).join(',')})`);
  }
}

describe('authentication and handshake', () => {
  test('no token or a wrong token gets 401 and the upgrade fails', async () => {
    await using agent = await startAgent({ command: ['sleep', '30'] });
    for (const token of [null, 'wrong-token-wrong-token', `${agent.token}x`, agent.token.slice(0, -1)]) {
      const refused = await expectUpgradeRefused(agent, { token });
      expect(refused.statusCode).toBe(401);
      expect(refused.body).toMatchObject({ code: 'SPOTCTL_UNAUTHORIZED' });
    }
    // Plain HTTP routes too.
    expect((await httpGet(agent, HEALTH_PATH)).status).toBe(401);
    expect((await httpGet(agent, HEALTH_PATH, 'nope')).status).toBe(401);
    expect((await httpGet(agent, '/no/such/route')).status).toBe(401);
    // The websocket path without an upgrade says what it is.
    const plain = await httpGet(agent, WS_PATH, agent.token);
    expect(plain.status).toBe(426);
    expect(JSON.stringify(plain.body)).toContain(WS_SUBPROTOCOL);
    const health = await httpGet(agent, HEALTH_PATH, agent.token);
    expect(health.status).toBe(200);
    expect(checkResult('health', health.body).ok).toBe(true);
    expect(health.body).toMatchObject({ ok: true, runId: agent.config.runId, agentVersion: '0.1.0', clients: 0 });
    // The token never reaches the agent's own log.
    const agentLog = readFileSync(path.join(agent.stateDir, 'agent.log'), 'utf8');
    expect(agentLog).not.toContain(agent.token);
  });

  test('a token sent in a query string by mistake stays out of agent.log', async () => {
    await using agent = await startAgent({ command: ['sleep', '30'] });
    const secret = 'query-secret-0123456789';
    expect((await httpGet(agent, `${HEALTH_PATH}?token=${secret}`)).status).toBe(401);
    expect((await httpGet(agent, `${HEALTH_PATH}?token=${secret}&x=1`, agent.token)).status).toBe(200);
    const missing = await httpGet(agent, `/no/such/route?access_token=${secret}`, agent.token);
    expect(missing.status).toBe(404);
    expect(JSON.stringify(missing.body)).not.toContain(secret);
    const agentLog = readFileSync(path.join(agent.stateDir, 'agent.log'), 'utf8');
    expect(agentLog).toContain('token=[Redacted]');
    expect(agentLog).toContain('/no/such/route?access_token=[Redacted]');
    expect(agentLog).not.toContain(secret);
  });

  test('a client without the subprotocol is refused with a message naming it', async () => {
    await using agent = await startAgent({ command: ['sleep', '30'] });
    const none = await expectUpgradeRefused(agent, { protocols: [] });
    expect(none.statusCode).toBe(400);
    expect(JSON.stringify(none.body)).toContain(WS_SUBPROTOCOL);
    const other = await expectUpgradeRefused(agent, { protocols: ['spotctl.v999'] });
    expect(other.statusCode).toBe(400);
    expect(other.body).toMatchObject({ code: 'SPOTCTL_AGENT_VERSION' });
    expect(JSON.stringify(other.body)).toContain(WS_SUBPROTOCOL);
    // Offering several, ours among them, works, and ours is selected.
    await using client = await connectClient(agent, { protocols: ['spotctl.v999', WS_SUBPROTOCOL] });
    expect(client.ws.protocol).toBe(WS_SUBPROTOCOL);
  });

  test('hello carries the protocol and agent versions and the build id', async () => {
    await using agent = await startAgent({ command: ['sleep', '30'] });
    await using client = await connectClient(agent);
    const hello = await client.nextEvent('hello');
    const bundleHash = createHash('sha256').update(readFileSync(AGENT_BUNDLE)).digest('hex').slice(0, 16);
    expect(hello).toEqual({
      type: 'event',
      event: 'hello',
      protocolVersion: PROTOCOL_VERSION,
      agentVersion: '0.1.0',
      buildId: bundleHash,
      runId: agent.config.runId,
      // No nvidia-smi on this machine: no GPU seen.
      gpus: [],
    });
    expect(agent.state).toMatchObject({ buildId: bundleHash, agentVersion: '0.1.0', protocolVersion: PROTOCOL_VERSION, host: '127.0.0.1' });
  });

  test('hello carries the GPUs the agent sees with nvidia-smi (a fake one on PATH here)', async () => {
    await using bin = await tmpDir();
    const smi = path.join(bin.path, 'nvidia-smi');
    writeFileSync(smi, '#!/bin/sh\necho "NVIDIA L4, 23034 MiB"\necho "NVIDIA L4, 23034 MiB"\n');
    chmodSync(smi, 0o755);
    await using agent = await startAgent({ command: ['sleep', '30'], env: { PATH: `${bin.path}:${process.env.PATH ?? '/usr/bin:/bin'}` } });
    await using client = await connectClient(agent);
    const hello = await client.nextEvent('hello');
    expect(hello).toMatchObject({
      gpus: [
        { name: 'NVIDIA L4', memoryMiB: 23034 },
        { name: 'NVIDIA L4', memoryMiB: 23034 },
      ],
    });
  });
});

describe('requests', () => {
  test('malformed JSON, unknown methods, wrong params and binary frames get errors; the connection keeps working', async () => {
    await using agent = await startAgent({ command: ['sleep', '30'] });
    await using client = await connectClient(agent);
    await client.nextEvent('hello');

    client.sendRaw('{not json');
    const badJson = await client.waitForResponse(null);
    expect(badJson).toMatchObject({ id: null, error: { code: 'SPOTCTL_BAD_REQUEST' } });

    client.sendRaw(JSON.stringify({ id: 7, method: 'launchMissiles', params: {} }));
    const unknown = await client.waitForResponse(7);
    expect(unknown).toMatchObject({ id: 7, error: { code: 'SPOTCTL_BAD_REQUEST' } });
    expect(JSON.stringify(unknown)).toMatch(/unknown method.*launchMissiles/);

    client.sendRaw(JSON.stringify({ id: 8, method: 'subscribe', params: { fromSeq: 'one' } }));
    const wrongType = await client.waitForResponse(8);
    expect(wrongType).toMatchObject({ id: 8, error: { code: 'SPOTCTL_BAD_REQUEST' } });
    expect(JSON.stringify(wrongType)).toContain('/params/fromSeq');

    client.sendRaw(JSON.stringify({ id: 9, method: 'stop', params: { graceMs: -5 } }));
    expect(await client.waitForResponse(9)).toMatchObject({ id: 9, error: { code: 'SPOTCTL_BAD_REQUEST' } });

    client.sendRaw(JSON.stringify({ id: 10, method: 'status', params: { extra: true } }));
    expect(await client.waitForResponse(10)).toMatchObject({ id: 10, error: { code: 'SPOTCTL_BAD_REQUEST' } });

    client.sendRaw(JSON.stringify([1, 2, 3]));
    client.sendRaw(Buffer.from([1, 2, 3]), { binary: true });
    await client.waitFor((m) => 'error' in m && m.id === null && /binary/.test(m.error.message), {
      what: 'the binary-frame error',
      fromStart: true,
    });

    // Still alive and answering.
    const status = (await client.call('status', {})) as JobStatus;
    expect(status).toMatchObject({ runId: agent.config.runId, state: 'running', command: ['sleep', '30'] });
    expect(checkResult('status', status).ok).toBe(true);
    const health = await client.call('health', {});
    expect(health).toMatchObject({ ok: true, clients: 1 });
    expect(client.invalid).toEqual([]);
  });
});

describe('log streaming', () => {
  test("subscribe replays a finished job's 10 000 lines exactly once, in order, then 'end'", async () => {
    await using agent = await startAgent({ command: ['seq', '1', '10000'] });
    await using client = await connectClient(agent);
    const final = await waitForJobEnd(client);
    expect(final).toMatchObject({ state: 'exited', exitCode: 0, lastSeq: 10_000 });

    const sub = await client.request('subscribe', { fromSeq: 0 });
    expect(sub).toEqual({ id: expect.any(Number), result: { fromSeq: 1, lastSeq: 10_000 } });
    const all = await collectUntilEnd(client, sub);
    expectSeqs(all.lines, 1, 10_000);
    expect(all.lines.every((l) => l.text === String(l.seq) && l.stream === 'stdout')).toBe(true);
    expect(all.end.status).toMatchObject({ state: 'exited', exitCode: 0, lastSeq: 10_000 });

    // From the middle, without follow; on the same connection (replaces the first subscription).
    const mid = await client.request('subscribe', { fromSeq: 4321, follow: false });
    expect(mid).toMatchObject({ result: { fromSeq: 4321, lastSeq: 10_000 } });
    const rest = await collectUntilEnd(client, mid);
    expectSeqs(rest.lines, 4321, 10_000);

    // Past the end: nothing but the end.
    const past = await client.request('subscribe', { fromSeq: 10_001 });
    expect((await collectUntilEnd(client, past)).lines).toEqual([]);
    expect(client.invalid).toEqual([]);
  });

  test('streams a running job live; end comes after the last line, with the exit code', async () => {
    const script = 'echo ready; while [ ! -f go ]; do sleep 0.02; done; echo "after go"; echo oops >&2; exit 4';
    await using agent = await startAgent({ command: ['sh', '-c', script] });
    await using client = await connectClient(agent);
    const sub = await client.request('subscribe', { fromSeq: 1 });
    expect('result' in sub).toBe(true);
    const ready = await client.nextEvent('logs', { where: (m) => m.lines.some((l) => l.text === 'ready') });
    expect(ready.lines[0]).toMatchObject({ seq: 1, stream: 'stdout', text: 'ready' });
    // The job is still running: this line arrived live.
    expect(await client.call('status', {})).toMatchObject({ state: 'running' });

    writeFileSync(path.join(agent.workdir, 'go'), '');
    const all = await collectUntilEnd(client, sub);
    expect(all.end.status).toMatchObject({ state: 'exited', exitCode: 4, signal: null, lastSeq: 3 });
    const lines = client.messages.flatMap((m) => ('event' in m && m.event === 'logs' ? m.lines : []));
    expect(lines.map((l) => [l.seq, l.stream, l.text])).toEqual([
      [1, 'stdout', 'ready'],
      [2, 'stdout', 'after go'],
      [3, 'stderr', 'oops'],
    ]);
    // Every logs event came before the end.
    const lastLogsIndex = client.messages.findLastIndex((m) => 'event' in m && m.event === 'logs');
    expect(lastLogsIndex).toBeLessThan(client.messages.indexOf(all.end));
    // A status event announced the end to the connected client, too.
    expect(client.messages.some((m) => 'event' in m && m.event === 'status' && m.status.state === 'exited')).toBe(true);
    expect(agent.readStatus()).toMatchObject({ state: 'exited', exitCode: 4, lastSeq: 3 });
  });

  test('a command that cannot start ends with exit code 127 and says why in the log', async () => {
    await using agent = await startAgent({ command: ['no-such-command-for-spotctl'] });
    await using client = await connectClient(agent);
    const sub = await client.request('subscribe', { fromSeq: 1 });
    const { lines, end } = await collectUntilEnd(client, sub);
    expect(end.status).toMatchObject({ state: 'failed-to-start', exitCode: 127, lastSeq: 1 });
    expect(end.status.error).toMatch(/command not found/);
    expect(lines).toEqual([expect.objectContaining({ seq: 1, stream: 'stderr', text: expect.stringMatching(/command not found/) })]);
  });
});

describe('stop and shutdown', () => {
  test('stop of a job that traps SIGTERM ends it with SIGKILL after graceMs', async () => {
    await using agent = await startAgent({ command: ['sh', '-c', 'trap "" TERM; echo trapped; while :; do sleep 0.05; done'] });
    await using client = await connectClient(agent);
    const sub = await client.request('subscribe', { fromSeq: 1 });
    await client.nextEvent('logs', { where: (m) => m.lines.some((l) => l.text === 'trapped') });
    const stoppedAt = Date.now();
    const stop = await client.request('stop', { graceMs: 500 });
    // Answered right after SIGTERM, not after the exit.
    expect(stop).toMatchObject({ result: { state: 'running', stopReason: 'stop' } });
    const { end } = await collectUntilEnd(client, sub);
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(450);
    expect(end.status).toMatchObject({ state: 'exited', signal: 'SIGKILL', exitCode: null, stopReason: 'stop' });
  });

  test('shutdown is refused while the job runs, and exits the agent once it has ended', async () => {
    await using agent = await startAgent({ command: ['sleep', '30'] });
    await using client = await connectClient(agent);
    const refused = await client.request('shutdown', {});
    expect(refused).toMatchObject({ error: { code: 'SPOTCTL_JOB_STATE' } });
    await client.request('stop', { force: true });
    await waitForJobEnd(client);
    const ok = await client.request('shutdown', {});
    expect(ok).toMatchObject({ result: { ok: true } });
    const closed = await client.closed;
    expect(closed.code).toBeGreaterThan(0);
    await agent.waitForExit(10_000);
    expect(agent.readStatus()).toMatchObject({ state: 'exited', signal: 'SIGKILL', stopReason: 'force' });
  });
});

describe('idle watchdog', () => {
  test('runs the shutdown command once the job has ended and no client is connected', async () => {
    await using agent = await startAgent({
      command: ['true'],
      config: (dir) => ({
        idleTimeoutMs: 1500,
        shutdownAction: { kind: 'command', argv: ['sh', '-c', `echo fired > ${path.join(dir, 'fired')}`] },
      }),
    });
    const fired = path.join(agent.dir, 'fired');
    await pollUntil(() => existsSync(fired), 'the shutdown command to write its file', 15_000);
    expect(readFileSync(fired, 'utf8')).toBe('fired\n');
    const shutdown = JSON.parse(readFileSync(path.join(agent.stateDir, 'shutdown.json'), 'utf8')) as { reason: string; at: number };
    expect(shutdown.reason).toBe('idle');
    const status = agent.readStatus();
    expect(status?.state).toBe('exited');
    // Not before the idle timeout had passed since the job ended.
    expect(shutdown.at - (status?.endedAt ?? 0)).toBeGreaterThanOrEqual(1500);
    await agent.waitForExit(10_000);
  });

  test('a heartbeat file touched every 300 ms keeps it from firing', async () => {
    await using agent = await startAgent({
      command: ['true'],
      config: (dir) => ({
        idleTimeoutMs: 1500,
        heartbeatPath: path.join(dir, 'heartbeat'),
        shutdownAction: { kind: 'command', argv: ['sh', '-c', `echo fired > ${path.join(dir, 'fired')}`] },
      }),
    });
    const fired = path.join(agent.dir, 'fired');
    const heartbeat = agent.config.heartbeatPath ?? '';
    const touch = (): void => writeFileSync(heartbeat, `${Date.now()}\n`);
    touch();
    const toucher = setInterval(touch, 300);
    try {
      // Asserting that nothing happens for 3 s needs those 3 s.
      await new Promise((r) => setTimeout(r, 3200));
      expect(existsSync(fired)).toBe(false);
      expect(agent.alive()).toBe(true);
    } finally {
      clearInterval(toucher);
    }
    // Once the touching stops, it fires.
    await pollUntil(() => existsSync(fired), 'the shutdown command after the heartbeat stopped', 15_000);
    await agent.waitForExit(10_000);
  });

  test('a connected client keeps it from firing', async () => {
    await using agent = await startAgent({
      command: ['true'],
      config: (dir) => ({
        idleTimeoutMs: 1000,
        shutdownAction: { kind: 'command', argv: ['sh', '-c', `echo fired > ${path.join(dir, 'fired')}`] },
      }),
    });
    const fired = path.join(agent.dir, 'fired');
    const client = await connectClient(agent);
    await waitForJobEnd(client);
    await new Promise((r) => setTimeout(r, 2500));
    expect(existsSync(fired)).toBe(false);
    await client.close();
    await pollUntil(() => existsSync(fired), 'the shutdown command after the client left', 15_000);
  });
});

describe('flow control', () => {
  test("a paused client on a job printing ~200 MB does not grow the agent's memory", async () => {
    const script = "import sys\nline = 'x' * 999 + '\\n'\nw = sys.stdout.write\nfor _ in range(200_000): w(line)\n";
    await using agent = await startAgent({ command: ['python3', '-c', script] });
    const rssOf = (pid: number): number => {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : 0;
    };
    const samples: number[] = [rssOf(agent.pid)];
    const sampler = setInterval(() => samples.push(rssOf(agent.pid)), 50);
    try {
      await using slow = await connectClient(agent);
      await slow.request('subscribe', { fromSeq: 1 });
      // Stop reading: from now on the kernel buffers fill and the agent must hold back.
      slow.ws.pause();
      await using observer = await connectClient(agent);
      const final = await waitForJobEnd(observer, 60_000);
      expect(final).toMatchObject({ state: 'exited', exitCode: 0, lastSeq: 200_000 });
      // Keep measuring a little after the end: the paused subscriber still has 200 MB to go.
      await new Promise((r) => setTimeout(r, 500));
      expect(statSync(path.join(agent.stateDir, AGENT_FILES.log)).size).toBeGreaterThan(200_000_000);
      const health = (await observer.call('health', {})) as { clients: number; rssBytes: number };
      expect(health.clients).toBe(2);
      slow.ws.resume();
    } finally {
      clearInterval(sampler);
    }
    const maxRss = Math.max(...samples);
    console.log(`agent RSS max ${(maxRss / 1048576).toFixed(1)} MiB over ${samples.length} samples`);
    expect(maxRss).toBeLessThan(150 * 1024 * 1024);
  });
});
