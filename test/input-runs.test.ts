/**
 * Options of commands that act on an existing run, through the real `spotctl` executable: checked
 * before the command touches anything, and remediation that names commands which work.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { RunStore } from '@spotctl/controller';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';

/** Should anything slip through to the AWS SDK, it meets a closed loopback port, never AWS. */
const NO_AWS = { AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_REGION: 'us-east-1' };

describe('commands on a finished local run with a checkpoint', () => {
  let home: TmpDir;
  let store: TmpDir;
  let proj: TmpDir;
  let runId: string;
  beforeAll(async () => {
    home = await tmpDir();
    store = await tmpDir();
    proj = await tmpDir();
    // The job writes one checkpoint file, waits for it to be committed, then exits.
    const job =
      'mkdir -p checkpoints && echo saved > checkpoints/state.txt && for i in $(seq 300); do ls "$STORE"/*/manifests/*.json >/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1';
    const r = await runSpotctl(
      [
        'run',
        '--provider',
        'local',
        '--no-install',
        '--sync',
        proj.path,
        '--checkpoint-to',
        store.path,
        '--env',
        `STORE=${store.path}`,
        '--',
        'sh',
        '-c',
        job,
      ],
      {
        home: home.path,
        env: NO_AWS,
        timeoutMs: 60_000,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    runId = new RunStore(path.join(home.path, 'runs')).resolve('last').runId;
  });
  afterAll(async () => {
    await store?.[Symbol.asyncDispose]();
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
  });

  it('checkpoints pull refuses a non-empty directory unless --force', async () => {
    await using dest = await tmpDir();
    writeFileSync(path.join(dest.path, 'state.txt'), 'mine\n');
    const refused = await runSpotctl(['checkpoints', 'pull', 'last', dest.path], { home: home.path, env: NO_AWS });
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(/is not empty: a pull would replace files of the same name → .*--force/);
    expect(readFileSync(path.join(dest.path, 'state.txt'), 'utf8')).toBe('mine\n');
    const forced = await runSpotctl(['checkpoints', 'pull', 'last', dest.path, '--force'], { home: home.path, env: NO_AWS });
    expect(forced.code, forced.stderr).toBe(0);
    expect(readFileSync(path.join(dest.path, 'state.txt'), 'utf8')).toBe('saved\n');
  });

  it('checkpoints pull of a missing set points at a command that exists', async () => {
    await using dest = await tmpDir();
    const r = await runSpotctl(['checkpoints', 'pull', 'last', path.join(dest.path, 'new'), '--seq', '99'], {
      home: home.path,
      env: NO_AWS,
    });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`→ see the committed sets with: spotctl checkpoints ls ${runId}`);
    expect((await runSpotctl(['checkpoints', 'ls', runId], { home: home.path, env: NO_AWS })).code).toBe(0);
  });

  it('teardown says a local run has no instance, without asking AWS', async () => {
    const r = await runSpotctl(['teardown', 'last'], { home: home.path, env: NO_AWS });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim()).toBe(
      `spotctl error: run ${runId} ran on the local provider: it has no EC2 instance to terminate → stop its job with: spotctl stop ${runId}`,
    );
  });

  it('stop refuses a bad --grace even though the run has ended', async () => {
    const r = await runSpotctl(['stop', 'last', '--grace', 'abc'], { home: home.path, env: NO_AWS });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/invalid duration for --grace: 'abc'/);
    expect(r.stderr).not.toMatch(/had already ended/);
  });

  it('the rsync command suggested for checkpoints on an SSH host carries its port, key and known_hosts', async () => {
    const runs = new RunStore(path.join(home.path, 'runs'));
    const record = runs.load(runId);
    runs.save({
      ...record,
      runId: `${runId}-ssh`,
      provider: 'ssh',
      target: { user: 'me', host: 'gpu-box', port: 2222, identityFile: '/keys/id ed25519', knownHostsFile: '/keys/known_hosts' },
      checkpoint: { dir: 'checkpoints', target: { kind: 'dir', path: '/srv/ckpt' } },
    });
    const r = await runSpotctl(['checkpoints', 'ls', `${runId}-ssh`], { home: home.path, env: NO_AWS });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(
      `copy them with: rsync -a -e 'ssh -p 2222 -i '\\''/keys/id ed25519'\\'' -o IdentitiesOnly=yes -o UserKnownHostsFile=/keys/known_hosts' me@gpu-box:/srv/ckpt/${runId}-ssh/ ./`,
    );
  });
});
