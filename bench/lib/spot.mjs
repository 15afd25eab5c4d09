// @ts-check
/**
 * Helpers for the spot-interruption and checkpoint benchmarks (issue 5 rows 1–3): the metadata
 * emulator and moto_server from the test harness (TypeScript, bundled on the fly like
 * `harness.mjs` does), a dummy-credentials AWS environment, bare agents started with that
 * environment, and readers for the agent's files.
 *
 * Safety: everything is loopback. The emulator listens on 127.0.0.1, moto on 127.0.0.1, and the
 * environment handed to the agent and to `aws` disables the metadata service
 * (`AWS_EC2_METADATA_DISABLED=true`), points any stray metadata lookup at a closed loopback port and
 * carries dummy credentials only. Nothing here ever contacts 169.254.169.254.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { stopAgent, writeAgentConfig } from './agent.mjs';
import { bundleHarness } from './harness.mjs';
import { expectOk, runCommand } from './proc.mjs';

/** The emulator's instance-action path (what the agent polls every second). */
export const INSTANCE_ACTION_PATH = '/latest/meta-data/spot/instance-action';

let loading;

/**
 * The metadata emulator with its request counts (test/helpers/imds-emulator.ts) and `startMoto` (test/helpers/moto.ts),
 * bundled with esbuild into bench/.cache and imported.
 *
 * @returns {Promise<{ ImdsEmulator: new (options?: object) => any, startMoto: () => Promise<any> }>}
 */
export function loadSpotHarness() {
  loading ??= bundleHarness('spot-harness', [
    "export { TestImdsEmulator as ImdsEmulator } from './imds-emulator.ts';",
    "export { startMoto } from './moto.ts';",
  ]);
  return loading;
}

/** A metadata emulator on 127.0.0.1 (in this process), closed when the benchmark ends. */
export async function startEmulator(ctx) {
  const { ImdsEmulator } = await loadSpotHarness();
  const emulator = new ImdsEmulator();
  await emulator.listen({ host: '127.0.0.1', port: 0 });
  ctx.onCleanup(() => emulator.close());
  return emulator;
}

/**
 * moto_server on loopback (test/helpers/moto.ts), stopped when the benchmark ends. Benchmarks use
 * `endpoint` (moto itself), not the helper's front-door proxy, which would put a Node.js TCP relay
 * in this process in the data path.
 */
export async function startBenchMoto(ctx, bucket) {
  const { startMoto } = await loadSpotHarness();
  const moto = await startMoto();
  ctx.onCleanup(() => moto.close());
  const handle = {
    endpoint: moto.directEndpoint,
    /** Forgets every object (moto keeps them in memory) and creates the bucket again. */
    async fresh() {
      await moto.reset();
      await moto.createBucket(bucket);
    },
  };
  await handle.fresh();
  return handle;
}

/**
 * Environment for the agent and the `aws` CLI: dummy credentials, no metadata service, no user
 * config files, S3 calls going to moto unless told otherwise.
 */
export function awsEnv(dir, endpoint) {
  mkdirSync(dir, { recursive: true });
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('AWS_')) delete env[key];
  return {
    ...env,
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    // Belt and braces: anything that still asks for metadata gets a refused loopback connection.
    AWS_EC2_METADATA_SERVICE_ENDPOINT: 'http://127.0.0.1:9',
    AWS_CONFIG_FILE: path.join(dir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'no-aws-credentials'),
    ...(endpoint ? { AWS_ENDPOINT_URL: endpoint } : {}),
    NO_COLOR: '1',
  };
}

/** `aws --endpoint-url ENDPOINT s3 cp --recursive DIR s3://…`, timed (wall, spawn to exit). */
export async function awsS3CpRecursive({ dir, url, endpoint, env, signal, timeoutMs = 120_000 }) {
  const r = await runCommand(
    'aws',
    ['--endpoint-url', endpoint, 's3', 'cp', '--recursive', '--only-show-errors', '--no-progress', dir, url],
    { env, signal, timeoutMs, stdout: 'ignore' },
  );
  expectOk({ ...r, stdout: '' }, 'aws s3 cp --recursive');
  return r.ms;
}

/** An object's bytes as text, through `aws s3 cp s3://… -` (moto refuses unsigned GETs). */
export async function awsS3Cat({ url, endpoint, env, signal, timeoutMs = 30_000 }) {
  const r = await runCommand('aws', ['--endpoint-url', endpoint, 's3', 'cp', '--only-show-errors', url, '-'], { env, signal, timeoutMs });
  return expectOk(r, `aws s3 cp ${url} -`).stdout;
}

/**
 * Starts a bare agent (`node agent.mjs start --config FILE`, the way the controller does) with
 * `env` and extra config fields (`imds`, `checkpoint`, ...). The agent is stopped by its pid when
 * `stop()` is called or the benchmark ends. shutdownAction stays `exit`.
 *
 * @template {Record<string, unknown>} [E={}]
 * @param {{ agentBundle: string, signal: AbortSignal, onCleanup: (fn: () => unknown) => void }} ctx
 * @param {{ dir: string, command?: string[], extra?: E, env?: NodeJS.ProcessEnv, graceMs?: number, idleTimeoutMs?: number, timeoutMs?: number }} options
 */
export async function startSpotAgent(
  ctx,
  { dir, command, extra = /** @type {E} */ ({}), env, graceMs, idleTimeoutMs = 600_000, timeoutMs = 30_000 },
) {
  const { file, config } = writeAgentConfig(dir, { command, idleTimeoutMs });
  const full = { ...config, ...(graceMs !== undefined ? { graceMs } : {}), ...extra, shutdownAction: { kind: 'exit' } };
  writeFileSync(file, JSON.stringify(full), { mode: 0o600 });
  const r = await runCommand(process.execPath, [ctx.agentBundle, 'start', '--config', file], { env, signal: ctx.signal, timeoutMs });
  if (r.code !== 0) throw new Error(`agent start exited ${r.code ?? r.signal}: ${r.stderr.slice(-1500)}`);
  const state = JSON.parse(r.stdout.trim().split('\n')[0] ?? '');
  let stopped;
  const stop = () => (stopped ??= stopAgent(state, full.stateDir));
  ctx.onCleanup(stop);
  return { state, config: full, stateDir: full.stateDir, stop };
}

/** Parsed JSON lines of a file (a partial last line and unreadable lines are skipped). */
export function readJsonLines(file) {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // being written
    }
  }
  return out;
}

/** The agent's pino log entries (`agent.log`, with `time` in epoch ms and `msg`). */
export const agentLog = (agent) => readJsonLines(path.join(agent.stateDir, 'agent.log'));
/**
 * The job's output lines as the agent stored them (`log.records`: a JSON header line per record,
 * `{seq, count, ts, stream, bytes}`, then `bytes` bytes of lines). A record still being written is
 * left out.
 */
export function jobLines(agent) {
  let data;
  try {
    data = readFileSync(path.join(agent.stateDir, 'log.records'));
  } catch {
    return [];
  }
  const out = [];
  let pos = 0;
  while (pos < data.length) {
    const nl = data.indexOf(10, pos);
    if (nl === -1) break;
    let header;
    try {
      header = JSON.parse(data.toString('utf8', pos, nl));
    } catch {
      break;
    }
    const end = nl + 1 + header.bytes;
    if (end > data.length) break;
    out.push(...data.toString('utf8', nl + 1, end - 1).split('\n'));
    pos = end;
  }
  return out;
}

/** The agent's status.json, or undefined. */
export function readStatus(agent) {
  try {
    return JSON.parse(readFileSync(path.join(agent.stateDir, 'status.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

/** Uniform random number in [min, max). */
export const uniform = (min, max) => min + Math.random() * (max - min);
