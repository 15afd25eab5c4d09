/**
 * Checkpoints that cannot get through (the store down, no usable credentials): the run must still
 * end, with the failure said plainly, instead of a final flush that holds the agent (on EC2: a
 * billed instance) for ever. The real CLI and agent bundles, S3 on moto behind its front door.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { startMoto, type Moto } from './helpers/moto.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

/** Writes one 2 MiB checkpoint file (write + rename) and exits 0. */
const ONE_SAVE = `
import os
d = os.environ["SPOTCTL_CHECKPOINT_DIR"]
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "state.bin.tmp"), "wb") as f:
    f.write(os.urandom(2 * 1024 * 1024))
os.replace(os.path.join(d, "state.bin.tmp"), os.path.join(d, "state.bin"))
print("saved", flush=True)
`;

interface PsRow {
  runId: string;
  state: string;
  checkpointsFailing?: { failures: number; lastError: string | null };
}

describe('a run whose checkpoint uploads fail for good', () => {
  let moto: Moto;
  let home: TmpDir;
  let proj: TmpDir;
  let env: Record<string, string>;

  beforeAll(async () => {
    moto = await startMoto();
    await moto.createBucket('ckfail');
    home = await tmpDir();
    proj = await tmpDir();
    writeProject(proj.path, { 'save.py': ONE_SAVE });
    env = {
      AWS_ENDPOINT_URL: moto.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
    };
  });
  afterAll(async () => {
    await moto?.close();
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
  });

  it('ends once the exit flush budget is spent when the store is down, says so with what to do, and ps shows it', async () => {
    await moto.stop('refuse');
    let r;
    try {
      r = await runSpotctl(
        [
          'run',
          '--no-install',
          '--sync',
          proj.path,
          '--checkpoint-to',
          's3://ckfail/down',
          '--checkpoint-flush-timeout',
          '3s',
          '--',
          'save.py',
        ],
        {
          home: home.path,
          env,
          timeoutMs: 60_000,
        },
      );
    } finally {
      await moto.start();
    }
    // The job's own exit code: the run ended, the checkpoint did not get through.
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('saved\n');
    expect(r.stderr).toMatch(
      /final checkpoint failed after \d+(\.\d)? s: .*state\.bin.*no set got through\. check that the host can write to s3:\/\/ckfail\/down\//,
    );

    const ps = await runSpotctl(['ps', '--json'], { home: home.path, env });
    expect(ps.code, ps.stderr).toBe(0);
    const [row] = JSON.parse(ps.stdout) as PsRow[];
    expect(row?.checkpointsFailing, ps.stdout).toBeDefined();
    const table = await runSpotctl(['ps'], { home: home.path, env });
    expect(table.stdout).toMatch(/exited \(checkpoints failing\)/);
    expect(table.stdout).toMatch(/: checkpoints not getting through \(\d+ failures\): .*state\.bin/);
  });

  it('without usable credentials: the first failure shows at once, the run still ends', async () => {
    await using empty = await tmpDir();
    const noCreds = {
      ...env,
      AWS_ACCESS_KEY_ID: '',
      AWS_SECRET_ACCESS_KEY: '',
      AWS_PROFILE: '',
      AWS_SHARED_CREDENTIALS_FILE: `${empty.path}/credentials`,
      AWS_CONFIG_FILE: `${empty.path}/config`,
    };
    const r = await runSpotctl(
      [
        'run',
        '--no-install',
        '--sync',
        proj.path,
        '--checkpoint-to',
        's3://ckfail/nocreds',
        '--checkpoint-flush-timeout',
        '3s',
        '--',
        'save.py',
      ],
      {
        home: home.path,
        env: noCreds,
        timeoutMs: 60_000,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      /checkpoint upload of state\.bin failed: .*; retrying\. check that the host can write to s3:\/\/ckfail\/nocreds\//,
    );
    expect(r.stderr).toMatch(/final checkpoint failed after/);
  });
});
