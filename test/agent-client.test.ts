/**
 * The controller's agent client and log follower against the real agent bundle, and against a
 * peer that breaks the protocol (binary logs frames that do not validate, an agent of another
 * protocol version) over real websockets.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { beforeAll, describe, expect, test } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { AgentConnection, followLogs, type AgentEndpoint } from '@spotctl/controller';
import { PROTOCOL_VERSION, WS_SUBPROTOCOL, batchLines, encodeLogFrame, type LogLine } from '@spotctl/shared';
import { ensureAgentBundle, startAgent, type AgentProcess } from './helpers/agent-process.ts';

beforeAll(async () => {
  await ensureAgentBundle();
});

function endpointOf(agent: AgentProcess): AgentEndpoint {
  return { kind: 'tcp', host: '127.0.0.1', port: agent.state.port, token: agent.token };
}

/** Follows the whole log from `fromSeq`, collecting the lines. */
async function followAll(endpoint: AgentEndpoint, fromSeq: number): Promise<LogLine[]> {
  const lines: LogLine[] = [];
  await followLogs({
    connect: async (signal) => await AgentConnection.connect(endpoint, signal ? { signal } : {}),
    fromSeq,
    onLines: (batch) => {
      lines.push(...batchLines(batch));
      return true;
    },
    drain: async () => undefined,
    reconnectTimeoutMs: 5_000,
  });
  return lines;
}

describe('following a real agent', () => {
  test('binary logs frames deliver every line once from any seq, streams and text intact', async () => {
    // Two big writes of many lines each (one record each on the agent), then stderr, then a
    // line without a newline at the end.
    const script = [
      'import sys',
      "sys.stdout.write(''.join(f'out {i} ü\\n' for i in range(1, 3001))); sys.stdout.flush()",
      "sys.stderr.write('err 🙂\\n'); sys.stderr.flush()",
      "sys.stdout.write(''.join(f'out {i} ü\\n' for i in range(3001, 5001)) + 'no newline'); sys.stdout.flush()",
    ].join('\n');
    await using agent = await startAgent({ command: ['python3', '-c', script] });
    const endpoint = endpointOf(agent);
    const all = await followAll(endpoint, 1);
    expect(all.map((l) => l.seq)).toEqual(Array.from({ length: 5002 }, (_, i) => i + 1));
    expect(all.filter((l) => l.stream === 'stderr').map((l) => l.text)).toEqual(['err 🙂']);
    const out = all.filter((l) => l.stream === 'stdout').map((l) => l.text);
    expect(out.slice(0, 2)).toEqual(['out 1 ü', 'out 2 ü']);
    expect(out.at(-2)).toBe('out 5000 ü');
    expect(out.at(-1)).toBe('no newline');
    // Resuming inside a record, at a record boundary, and at the very end.
    for (const from of [2, 1500, 3000, 3001, 3002, 5002]) {
      const rest = await followAll(endpoint, from);
      expect(rest).toEqual(all.slice(from - 1));
    }
  });
});

/** An HTTP server that refuses every websocket upgrade the way an agent of protocol v1 does. */
async function oldAgent(): Promise<{ endpoint: AgentEndpoint } & AsyncDisposable> {
  const server = createServer();
  server.on('upgrade', (_req, socket) => {
    const body = JSON.stringify({
      code: 'SPOTCTL_AGENT_VERSION',
      message: `this agent speaks websocket subprotocol spotctl.v1 (protocol v1); offered: ${WS_SUBPROTOCOL}`,
    });
    socket.end(
      `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: { kind: 'tcp', host: '127.0.0.1', port, token: 'fake' },
    async [Symbol.asyncDispose]() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A websocket server that greets like an agent and then does what `onSubscribe` says when the
 * client subscribes.
 */
async function fakeAgent(options: {
  protocolVersion?: number;
  onSubscribe?: (ws: WebSocket) => void;
}): Promise<{ endpoint: AgentEndpoint } & AsyncDisposable> {
  const wss = new WebSocketServer({
    port: 0,
    host: '127.0.0.1',
    handleProtocols: (protocols) => (protocols.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
  });
  wss.on('connection', (ws) => {
    ws.send(
      JSON.stringify({
        type: 'event',
        event: 'hello',
        protocolVersion: options.protocolVersion ?? PROTOCOL_VERSION,
        agentVersion: '0.0.0',
        buildId: 'fake',
        runId: 'fake',
      }),
    );
    ws.on('message', (data) => {
      const request = JSON.parse(data.toString()) as { id: number; method: string };
      if (request.method === 'subscribe') {
        ws.send(JSON.stringify({ id: request.id, result: { fromSeq: 1, lastSeq: 3 } }));
        options.onSubscribe?.(ws);
      }
    });
  });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const { port } = wss.address() as AddressInfo;
  return {
    endpoint: { kind: 'tcp', host: '127.0.0.1', port, token: 'fake' },
    async [Symbol.asyncDispose]() {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

/** A frame whose header says one thing and whose payload another. */
function frameWith(header: unknown, payload: string): Buffer {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  return Buffer.concat([len, h, Buffer.from(payload)]);
}

describe('a peer that breaks the protocol', () => {
  const good = { event: 'logs', firstSeq: 1, segments: [{ stream: 'stdout', ts: 1, count: 2, bytes: 4 }] };
  const cases: [string, Buffer | string, RegExp][] = [
    ['a frame too short for a header', Buffer.from([1, 2]), /too short for a logs frame/],
    ['a header that is not JSON', Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('{[')]), /header is not valid JSON/],
    ['a header that breaks the schema', frameWith({ ...good, firstSeq: -1 }, 'a\nb\n'), /header \/firstSeq/],
    ['a payload with fewer lines than the header says', frameWith(good, 'abc\n'), /does not hold 2 complete lines/],
    ['a payload longer than the header says', frameWith(good, 'a\nb\nextra\n'), /bytes after its last segment/],
    [
      'log lines as JSON, the v1 way',
      JSON.stringify({ type: 'event', event: 'logs', lines: [{ seq: 1, ts: 1, stream: 'stdout', text: 'x' }] }),
      /breaks the protocol/,
    ],
  ];
  for (const [what, frame, error] of cases) {
    test(`${what} ends the connection with a protocol error saying why`, async () => {
      await using peer = await fakeAgent({ onSubscribe: (ws) => ws.send(frame, { binary: Buffer.isBuffer(frame) }) });
      const seen: string[] = [];
      const failure = await followLogs({
        connect: async () => await AgentConnection.connect(peer.endpoint),
        onLines: (batch) => {
          seen.push(...batchLines(batch).map((l) => l.text));
          return true;
        },
        drain: async () => undefined,
      }).catch((e: unknown) => e);
      expect(failure).toMatchObject({ code: 'SPOTCTL_PROTOCOL' });
      expect((failure as Error).message).toMatch(/the agent sent a message that breaks the protocol/);
      expect((failure as Error).message).toMatch(error);
      expect(seen).toEqual([]);
    });
  }

  test('a valid frame after a gap in seq is refused as missing lines', async () => {
    const frame = encodeLogFrame([{ firstSeq: 5, count: 1, ts: 1, stream: 'stdout', data: Buffer.from('five\n') }]);
    await using peer = await fakeAgent({ onSubscribe: (ws) => ws.send(frame, { binary: true }) });
    const failure = await followLogs({
      connect: async () => await AgentConnection.connect(peer.endpoint),
      onLines: () => true,
      drain: async () => undefined,
    }).catch((e: unknown) => e);
    expect(failure).toMatchObject({ code: 'SPOTCTL_PROTOCOL', message: expect.stringMatching(/log lines 1\.\.4 are missing/) });
  });

  test('an agent of the previous protocol: refused subprotocol or old hello give a version error', async () => {
    {
      await using old = await oldAgent();
      const failure = await AgentConnection.connect(old.endpoint).catch((e: unknown) => e);
      expect(failure).toMatchObject({ code: 'SPOTCTL_AGENT_VERSION' });
      expect((failure as Error).message).toMatch(
        new RegExp(
          `refused websocket subprotocol ${WS_SUBPROTOCOL} \\(this spotctl speaks protocol v${PROTOCOL_VERSION}\\): this agent speaks websocket subprotocol spotctl.v1`,
        ),
      );
      expect((failure as { remediation?: string }).remediation).toMatch(/re-run/);
    }
    {
      await using old = await fakeAgent({ protocolVersion: 1 });
      const failure = await AgentConnection.connect(old.endpoint).catch((e: unknown) => e);
      expect(failure).toMatchObject({
        code: 'SPOTCTL_AGENT_VERSION',
        message: `the agent speaks protocol v1, this spotctl speaks v${PROTOCOL_VERSION}`,
      });
    }
  });
});
