/**
 * S3 credentials forwarded to an agent on an SSH host: the controller mints run-scoped ones from
 * its own identity (moto's STS), pushes them over the websocket, and the agent uploads with them
 * while the host's own environment has no AWS credentials at all. They never reach the host's disk
 * (nor this machine's run record), nor the job's environment.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3ObjectStore } from '@spotctl/agent';
import { runSpotctl } from './helpers/cli.ts';
import { startMoto, type Moto } from './helpers/moto.ts';
import { sshHostArgs, startSshd, type Sshd } from './helpers/sshd.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

// What moto's GetFederationToken answers, every time.
const MOTO_SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY';
const MOTO_TOKEN_START = 'AQoDYXdzEPT//////////wEXAMPLE';

const CKPT_JOB = `
import os
d = os.environ["SPOTCTL_CHECKPOINT_DIR"]
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "model.bin.tmp"), "wb") as f:
    f.write(b"weights" * 1000)
os.replace(os.path.join(d, "model.bin.tmp"), os.path.join(d, "model.bin"))
print("job credentials env:", sorted(k for k in os.environ if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")))
`;

/** Every file under `dir` whose bytes contain one of `needles`. */
function filesContaining(dir: string, needles: string[]): string[] {
  const hits: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      const st = statSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size < 64 * 1024 * 1024) {
        const text = readFileSync(p, 'latin1');
        if (needles.some((n) => text.includes(n))) hits.push(p);
      }
    }
  };
  walk(dir);
  return hits;
}

describe('spotctl run --host --checkpoint-to s3:// (forwarded credentials)', () => {
  let sshd: Sshd;
  let moto: Moto;
  let home: TmpDir;
  let proj: TmpDir;
  let remoteDir = '';

  beforeAll(async () => {
    [sshd, moto] = await Promise.all([startSshd(), startMoto()]);
    await moto.createBucket('fwd-ckpt');
    home = await tmpDir();
    remoteDir = `${home.path}/remote`;
    proj = await tmpDir();
    writeProject(proj.path, { 'ckpt.py': CKPT_JOB });
  });
  afterAll(async () => {
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
    await moto?.close();
    await sshd?.close();
  });

  it('the agent uploads with credentials minted here while the host has none, and none are on its disk', async () => {
    const args = ['run', '--remote-dir', remoteDir, ...sshHostArgs(sshd)];
    const r = await runSpotctl([...args, '--no-install', '--sync', proj.path, '--checkpoint-to', 's3://fwd-ckpt/team', 'ckpt.py'], {
      home: path.join(home.path, 'local'),
      env: { AWS_ENDPOINT_URL: moto.endpoint, AWS_REGION: 'us-east-1' },
      timeoutMs: 120_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/host's own AWS credentials/);
    // Neither the host's environment nor the forwarding gives the job any AWS credentials.
    expect(r.stdout).toContain('job credentials env: []');
    const runId = /run ([0-9a-z-]+):/.exec(r.stderr)?.[1] as string;
    expect(runId).toBeTruthy();

    // The host's agent really had nothing of its own: its environment holds no credentials.
    const agentLog = readFileSync(path.join(remoteDir, 'runs', runId, 'agent', 'agent.log'), 'utf8');
    expect(agentLog).toContain('forwarded S3 credentials received');
    expect(agentLog).not.toContain("host's own AWS credential chain");
    const config = JSON.parse(readFileSync(path.join(remoteDir, 'runs', runId, 'agent', 'config.json'), 'utf8')) as {
      checkpoint?: { credentials?: string };
    };
    expect(config.checkpoint?.credentials).toBe('forwarded');

    // The set is in S3 under the run's prefix.
    const s3 = new S3ObjectStore({ bucket: 'fwd-ckpt', prefix: 'team', endpoint: moto.endpoint });
    try {
      expect((await s3.list(`${runId}/manifests/`)).length).toBeGreaterThan(0);
    } finally {
      s3.close();
    }

    // Neither the host's run folder (config, logs, job output) nor this machine's record holds them.
    expect(filesContaining(remoteDir, [MOTO_SECRET, MOTO_TOKEN_START])).toEqual([]);
    expect(filesContaining(path.join(home.path, 'local'), [MOTO_SECRET, MOTO_TOKEN_START])).toEqual([]);
  }, 150_000);
});
