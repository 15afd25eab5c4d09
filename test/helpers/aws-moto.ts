/**
 * moto_server for EC2/STS tests, one per test file, with moto's validations on (instance types,
 * AMIs, key pairs) and the checked-in image list (test/fixtures/moto-amis.json: stock Ubuntu
 * 24.04 from Canonical's account, which moto does not ship; no `creation_date`, which moto
 * mishandles once a second region loads the list).
 *
 * It listens on loopback by default, or on an address the test owns (the host side of a test
 * network namespace's veth, so a test host inside the namespace can call it) — never 0.0.0.0.
 * Every call in here and in the clients tests make uses dummy credentials and
 * AWS_EC2_METADATA_DISABLED=true: nothing ever asks the real metadata service or real AWS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
// The SDK is the controller's dependency, not the test package's: reach it through its loader.
import { loadEc2Sdk, type Ec2Sdk } from '@spotctl/controller';

export type EC2Client = InstanceType<Ec2Sdk['EC2Client']>;
export { loadEc2Sdk };

export const MOTO_AMIS_PATH = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'moto-amis.json');
export const TEST_CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' } as const;
const START_TIMEOUT_MS = 30_000;

export interface MotoEc2 extends AsyncDisposable {
  /** `http://<host>:<port>` */
  readonly endpoint: string;
  readonly host: string;
  readonly port: number;
  /** Forgets everything (`POST /moto-api/reset`). */
  reset(): Promise<void>;
  /** An EC2 client for `region` that talks to this moto only. Destroy it (or use `using`). */
  ec2(region: string): Promise<EC2Client & Disposable>;
  /** The environment a spotctl child process needs to talk to this moto only. */
  env(region?: string): Record<string, string>;
  close(): Promise<void>;
}

async function freePort(host: string): Promise<number> {
  const server = net.createServer();
  server.listen(0, host);
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

export async function startMotoEc2(options: { host?: string } = {}): Promise<MotoEc2> {
  const host = options.host ?? '127.0.0.1';
  if (host === '0.0.0.0' || host === '::') throw new Error('startMotoEc2: never listen on every interface');
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort(host);
    const child = spawn('moto_server', ['-H', host, '-p', String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION: 'true',
        MOTO_ENABLE_AMI_VALIDATION: 'true',
        MOTO_ENABLE_KEYPAIR_VALIDATION: 'true',
        MOTO_AMIS_PATH,
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
      },
    });
    let output = '';
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-4000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const endpoint = `http://${host}:${port}`;
    const deadline = Date.now() + START_TIMEOUT_MS;
    let up = false;
    while (!up && Date.now() < deadline && child.exitCode === null) {
      up = await fetch(`${endpoint}/moto-api/data.json`, { signal: AbortSignal.timeout(1_000) }).then(
        async (r) => (await r.arrayBuffer(), r.ok),
        () => false,
      );
      if (!up) await sleep(100);
    }
    if (!up) {
      await stop(child);
      if (attempt === 3) throw new Error(`moto_server did not start on ${endpoint}:\n${output}`);
      continue;
    }
    let closed = false;
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await stop(child);
    };
    return {
      endpoint,
      host,
      port,
      async reset() {
        const r = await fetch(`${endpoint}/moto-api/reset`, { method: 'POST', signal: AbortSignal.timeout(10_000) });
        if (!r.ok) throw new Error(`moto reset: HTTP ${r.status}`);
      },
      async ec2(region) {
        const { EC2Client } = await loadEc2Sdk();
        const client = new EC2Client({ region, endpoint, credentials: TEST_CREDENTIALS, maxAttempts: 2 });
        return Object.assign(client, { [Symbol.dispose]: () => client.destroy() });
      },
      env(region) {
        return {
          AWS_ENDPOINT_URL: endpoint,
          AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
          AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
          AWS_EC2_METADATA_DISABLED: 'true',
          AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
          ...(region ? { AWS_REGION: region } : {}),
        };
      },
      close,
      [Symbol.asyncDispose]: close,
    };
  }
  throw new Error('unreachable');
}

/** Runs `fn` with process.env pointing the SDK at moto (restored afterwards). */
export async function withMotoEnv<T>(moto: MotoEc2, region: string | undefined, fn: () => Promise<T>): Promise<T> {
  const env = moto.env(region);
  const saved = new Map<string, string | undefined>();
  for (const key of [...Object.keys(env), 'AWS_ENDPOINT_URL_EC2', 'AWS_ENDPOINT_URL_STS', 'AWS_PROFILE']) saved.set(key, process.env[key]);
  Object.assign(process.env, env);
  delete process.env.AWS_ENDPOINT_URL_EC2;
  delete process.env.AWS_ENDPOINT_URL_STS;
  delete process.env.AWS_PROFILE;
  if (!region) delete process.env.AWS_REGION;
  try {
    return await fn();
  } finally {
    for (const [key, value] of saved) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}
