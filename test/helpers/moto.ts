/**
 * A real moto_server for S3 tests, on loopback only, behind a small TCP front door.
 *
 * Why the front door: moto keeps everything in memory, so killing and restarting the process to
 * simulate an outage would also lose the bucket and every object, which real S3 never does. The
 * front door (a loopback TCP proxy on `port`) is what clients use; `stop()` resets its connections
 * and stops listening (connection refused), or answers 503 to everything, and `start()` listens on
 * the same port again, while moto itself and its state stay up. Tests inspect moto through
 * `directEndpoint`, which works during an outage.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpDir, type TmpDir } from './tmp.ts';

const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;

export type OutageMode = 'refuse' | '503';

export interface RecordedRequest {
  method: string;
  /** Path and query, e.g. `/bucket/key?partNumber=1&uploadId=...`. */
  path: string;
}

export interface Moto extends AsyncDisposable {
  /** What clients use: `http://127.0.0.1:<port>` (the front door). */
  readonly endpoint: string;
  readonly port: number;
  /** moto itself, reachable even while the front door is stopped: for inspecting state in tests. */
  readonly directEndpoint: string;
  /** Forgets every bucket and object (`POST /moto-api/reset`). */
  reset(): Promise<void>;
  /** Creates a bucket (moto does not check signatures, so a plain PUT does). */
  createBucket(name: string): Promise<void>;
  /**
   * Simulates an outage: `'refuse'` resets every open connection and stops listening, `'503'` keeps
   * listening but answers every request with 503 SlowDown. @default 'refuse'
   */
  stop(mode?: OutageMode): Promise<void>;
  /** Ends the outage: the front door listens on the same port again. */
  start(): Promise<void>;
  /** Starts moto's request recorder (forgetting earlier recordings). Records bodies too: small tests only. */
  startRecording(): Promise<void>;
  /** Stops the recorder and returns what it recorded. */
  stopRecording(): Promise<RecordedRequest[]>;
  /** Bytes clients have sent through the front door so far (request bodies included). */
  bytesReceived(): number;
  /** Stops the front door and moto; idempotent. */
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, HOST);
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  server.close();
  await once(server, 'close');
  return port;
}

async function motoApi(base: string, route: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(`${base}${route}`, { ...init, signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${route}: HTTP ${res.status} ${await res.text()}`);
  return res;
}

async function spawnMoto(port: number, work: string): Promise<ChildProcess> {
  const child = spawn('moto_server', ['-H', HOST, '-p', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      MOTO_RECORDER_FILEPATH: path.join(work, 'recording.jsonl'),
      // moto must never look for real credentials or the metadata service.
      AWS_EC2_METADATA_DISABLED: 'true',
    },
  });
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`moto_server exited during startup:\n${output}`);
    try {
      const res = await fetch(`http://${HOST}:${port}/moto-api/data.json`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) {
        await res.arrayBuffer();
        // Nothing reads moto's output after startup; keep the pipes drained.
        child.stdout?.resume();
        child.stderr?.resume();
        return child;
      }
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`moto_server did not answer within ${START_TIMEOUT_MS} ms:\n${output}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

const SLOW_DOWN_BODY =
  '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';
const SLOW_DOWN = Buffer.from(
  `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: ${Buffer.byteLength(SLOW_DOWN_BODY)}\r\nConnection: close\r\n\r\n${SLOW_DOWN_BODY}`,
);

/** Starts moto_server on a free loopback port, with the front door on another. */
export async function startMoto(): Promise<Moto> {
  const work: TmpDir = await tmpDir('spotctl-moto-');
  let child: ChildProcess | undefined;
  let motoPort = 0;
  // Another process may take the free port before moto binds it: try a few.
  for (let attempt = 1; !child; attempt++) {
    motoPort = await freePort();
    try {
      child = await spawnMoto(motoPort, work.path);
    } catch (err) {
      if (attempt >= 3) {
        await work[Symbol.asyncDispose]();
        throw err;
      }
    }
  }
  const moto = child;
  const directEndpoint = `http://${HOST}:${motoPort}`;

  let mode: 'up' | OutageMode = 'up';
  let received = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    if (mode === '503') {
      client.once('data', () => client.end(SLOW_DOWN, () => client.destroySoon()));
      return;
    }
    const upstream = net.connect(motoPort, HOST);
    sockets.add(upstream);
    upstream.once('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
    client.on('data', (chunk: Buffer) => (received += chunk.length));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  let listening = true;
  let closed = false;

  const resetAll = (): void => {
    for (const s of sockets) s.resetAndDestroy();
    sockets.clear();
  };

  const stopListening = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    const done = once(server, 'close');
    server.close();
    resetAll();
    await done;
  };

  const handle: Moto = {
    endpoint: `http://${HOST}:${port}`,
    port,
    directEndpoint,
    async reset() {
      await motoApi(directEndpoint, '/moto-api/reset', { method: 'POST' });
    },
    async createBucket(name) {
      await motoApi(directEndpoint, `/${name}`, { method: 'PUT' });
    },
    async stop(outage = 'refuse') {
      mode = outage;
      if (outage === 'refuse') {
        await stopListening();
      } else {
        resetAll();
        if (!listening) await handle.start();
        mode = '503';
      }
    },
    async start() {
      mode = 'up';
      if (listening || closed) return;
      server.listen(port, HOST);
      await once(server, 'listening');
      listening = true;
    },
    async startRecording() {
      await writeFile(path.join(work.path, 'recording.jsonl'), '');
      await motoApi(directEndpoint, '/moto-api/recorder/reset-recording', { method: 'POST' });
      await motoApi(directEndpoint, '/moto-api/recorder/start-recording', { method: 'POST' });
    },
    async stopRecording() {
      await motoApi(directEndpoint, '/moto-api/recorder/stop-recording', { method: 'POST' });
      const text = await readFile(path.join(work.path, 'recording.jsonl'), 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => {
          let entry: { method: string; url: string };
          try {
            entry = JSON.parse(line) as { method: string; url: string };
          } catch {
            // moto appends each entry with its body from several threads; big bodies interleave.
            throw new Error('moto recording is garbled (concurrent large bodies): record only small uploads');
          }
          const url = new URL(entry.url, directEndpoint);
          return { method: entry.method, path: `${url.pathname}${url.search}` };
        });
    },
    bytesReceived: () => received,
    async close() {
      if (closed) return;
      closed = true;
      await stopListening();
      await stopChild(moto);
      await rm(work.path, { recursive: true, force: true });
    },
    async [Symbol.asyncDispose]() {
      await handle.close();
    },
  };
  return handle;
}
