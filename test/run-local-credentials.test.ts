/**
 * Forwarded S3 credentials on the local provider, across a detach: `run --detach` pushes one
 * long-lived set and says until when it is valid; `attach` mints and pushes a fresh one (and keeps
 * renewing while attached); the job's checkpoint then reaches S3.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { S3ObjectStore } from '@spotctl/agent';
import { runSpotctl, watchSpotctl } from './helpers/cli.ts';
import { startMoto, type Moto } from './helpers/moto.ts';
import { waitFor } from './helpers/read-until.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

// Waits (bounded) for the test to say go, so the checkpoint is written only once attach has run.
const JOB = `
import os, time
for _ in range(1200):
    if os.path.exists("go"):
        break
    time.sleep(0.05)
d = os.environ["SPOTCTL_CHECKPOINT_DIR"]
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "state.tmp"), "w") as f:
    f.write("state")
os.replace(os.path.join(d, "state.tmp"), os.path.join(d, "state"))
print("done")
`;

let moto: Moto;
let home: TmpDir;
let proj: TmpDir;
beforeAll(async () => {
  moto = await startMoto();
  await moto.createBucket('local-fwd');
  home = await tmpDir();
  proj = await tmpDir();
  writeProject(proj.path, { 'job.py': JOB });
});
afterAll(async () => {
  await proj?.[Symbol.asyncDispose]();
  await home?.[Symbol.asyncDispose]();
  await moto?.close();
});

function received(stateDir: string): number {
  const file = path.join(stateDir, 'agent.log');
  if (!existsSync(file)) return 0;
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.includes('forwarded S3 credentials received')).length;
}

it('a detached run gets one long-lived set; attach pushes a fresh one', async () => {
  const env = { AWS_ENDPOINT_URL: moto.endpoint, AWS_REGION: 'us-east-1' };
  const r = await runSpotctl(
    ['run', '--provider', 'local', '--detach', '--no-install', '--sync', proj.path, '--checkpoint-to', 's3://local-fwd/p', 'job.py'],
    {
      home: home.path,
      env,
      timeoutMs: 60_000,
    },
  );
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toMatch(/forwarding credentials scoped to this run, valid until \d{4}-\d\d-\d\dT/);
  const runId = /run ([0-9a-z-]+):/.exec(r.stderr)?.[1] as string;
  const runDir = path.join(home.path, 'runs', runId);
  const stateDir = path.join(runDir, 'agent');
  expect(received(stateDir)).toBe(1);

  const attach = watchSpotctl(['attach', runId], { home: home.path, env, timeoutMs: 90_000 });
  await waitFor(() => received(stateDir) >= 2 || undefined, { timeoutMs: 30_000, what: 'a second credentials push' });
  writeFileSync(path.join(runDir, 'work', 'go'), '');
  const a = await attach.done;
  expect(a.code, a.stderr).toBe(0);
  expect(a.stdout).toContain('done');
  expect(a.stderr).not.toMatch(/could not (renew|forward)/);

  const s3 = new S3ObjectStore({ bucket: 'local-fwd', prefix: 'p', endpoint: moto.endpoint });
  try {
    expect((await s3.list(`${runId}/manifests/`)).length).toBeGreaterThan(0);
  } finally {
    s3.close();
  }
}, 150_000);

/** A loopback port nobody listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

it('when STS cannot mint credentials, one warning line says so and the agent uses the host chain', async () => {
  const env = {
    AWS_ENDPOINT_URL: moto.endpoint,
    AWS_ENDPOINT_URL_STS: `http://127.0.0.1:${await closedPort()}`,
    AWS_REGION: 'us-east-1',
    AWS_MAX_ATTEMPTS: '1',
  };
  writeFileSync(path.join(proj.path, 'go'), '');
  const r = await runSpotctl(
    ['run', '--provider', 'local', '--no-install', '--sync', proj.path, '--checkpoint-to', 's3://local-fwd/p', 'job.py'],
    {
      home: home.path,
      env,
      timeoutMs: 90_000,
    },
  );
  expect(r.code, r.stderr).toBe(0);
  const warnings = r.stderr.split('\n').filter((l) => l.includes("the agent will use the host's own AWS credentials instead"));
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toMatch(
    /S3 checkpoints: could not tell who this machine acts as \(sts:GetCallerIdentity: .*\).*sts:GetFederationToken/,
  );
  const runId = /run ([0-9a-z-]+):/.exec(r.stderr)?.[1] as string;
  const config = JSON.parse(readFileSync(path.join(home.path, 'runs', runId, 'agent', 'config.json'), 'utf8')) as {
    checkpoint?: { credentials?: string };
  };
  expect(config.checkpoint?.credentials).toBeUndefined();
  // The agent here has this machine's (test) credentials in its environment: the upload still works.
  const s3 = new S3ObjectStore({ bucket: 'local-fwd', prefix: 'p', endpoint: moto.endpoint });
  try {
    expect((await s3.list(`${runId}/manifests/`)).length).toBeGreaterThan(0);
  } finally {
    s3.close();
  }
}, 120_000);
