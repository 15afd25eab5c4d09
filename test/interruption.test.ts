/**
 * Spot interruptions end to end through the real CLI and agent: the agent polls a metadata
 * emulator over IMDSv2, SIGTERMs the job's group, grants the grace, SIGKILLs, flushes the
 * checkpoint folder to S3 (moto_server) or a directory, and the controller reports it all.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSpotctl, watchSpotctl } from './helpers/cli.ts';
import { startImds, startImdsInNetns, type TestImds } from './helpers/imds.ts';
import { startMoto, type Moto } from './helpers/moto.ts';
import { createNetns } from './helpers/netns.ts';
import { sshHostArgs, startSshd } from './helpers/sshd.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

/** Saves {step, payload} to checkpoints/state.json every 0.3 s (write + rename), as a careful job does. */
const CKJOB = `
import hashlib, json, os, signal, sys, time
d = os.environ["SPOTCTL_CHECKPOINT_DIR"]
os.makedirs(d, exist_ok=True)
p = os.path.join(d, "state.json")
mode = sys.argv[1] if len(sys.argv) > 1 else "run"
step = 0
if os.path.exists(p):
    with open(p) as f:
        st = json.load(f)
    assert hashlib.sha256(st["payload"].encode()).hexdigest() == st["sha"], "torn checkpoint"
    step = st["step"]
    print(f"restored step {step}", flush=True)
if mode == "once":
    sys.exit(0)
def term(*_):
    print(f"SIGTERM at {time.time():.3f}", flush=True)
    if mode != "ignore-term":
        sys.exit(143)
signal.signal(signal.SIGTERM, term)
while True:
    step += 1
    payload = os.urandom(128 * 1024).hex()
    with open(p + ".tmp", "w") as f:
        json.dump({"step": step, "payload": payload, "sha": hashlib.sha256(payload.encode()).hexdigest()}, f)
    # The rename and its line are one step: a SIGTERM between them would leave a saved step unprinted.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    os.replace(p + ".tmp", p)
    print(f"saved step {step}", flush=True)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    time.sleep(0.3)
`;

function savedSteps(stdout: string): number[] {
  return [...stdout.matchAll(/^saved step (\d+)$/gm)].map((m) => Number(m[1]));
}

describe('spot interruption (local provider, IMDS emulator, S3 on moto)', () => {
  let moto: Moto;
  let imds: TestImds;
  let home: TmpDir;
  let proj: TmpDir;
  let env: Record<string, string>;

  beforeAll(async () => {
    moto = await startMoto();
    await moto.createBucket('ckpt');
    imds = await startImds();
    home = await tmpDir();
    proj = await tmpDir();
    writeProject(proj.path, { 'ckjob.py': CKJOB });
    env = {
      AWS_ENDPOINT_URL: moto.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
    };
  });
  afterAll(async () => {
    await imds?.close();
    await moto?.close();
    await proj?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
  });

  it('SIGTERMs the job once the notice is served, commits the last checkpoint, and restore brings it back', async () => {
    imds.emulator.clearInterruption();
    const cli = watchSpotctl(
      ['run', '--no-install', '--sync', proj.path, '--imds-endpoint', imds.url, '--checkpoint-to', 's3://ckpt/runs', '--', 'ckjob.py'],
      { home: home.path, env },
    );
    await cli.until('stdout', /saved step 5\n/, 30_000);
    const notice = imds.emulator.scheduleInterruption({ action: 'terminate' });
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(143);

    // Order, not speed (the latency is bench/interruption-latency's): the job hears of the notice
    // after the agent's poll saw it and before the time EC2 would take the instance.
    const servedAt = imds.emulator.noticeServedAt as number;
    expect(servedAt).toBeTypeOf('number');
    const sigterm = /SIGTERM at ([\d.]+)/.exec(r.stdout);
    expect(sigterm, r.stdout.slice(-500)).not.toBeNull();
    const sigtermAtMs = Number(sigterm?.[1]) * 1000;
    console.log(`notice served → SIGTERM in the job: ${(sigtermAtMs - servedAt).toFixed(0)} ms`);
    expect(sigtermAtMs).toBeGreaterThanOrEqual(servedAt);
    expect(sigtermAtMs).toBeLessThan(Date.parse(notice.time));
    expect(r.stderr).toMatch(/spot interruption notice: terminate at \S+Z/);
    expect(r.stderr).toMatch(/spot interruption \(terminate\): job ended .* after SIGTERM; final checkpoint #\d+: 1 files/);
    expect(r.stderr).toContain('s3://ckpt/runs/');
    const lastSaved = Math.max(...savedSteps(r.stdout));

    // The committed sets are listed, and the latest pulls with its checksum verified.
    const ls = await runSpotctl(['checkpoints', 'ls', 'last', '--json'], { home: home.path, env });
    expect(ls.code, ls.stderr).toBe(0);
    const sets = JSON.parse(ls.stdout) as { seq: number; reason: string; files: number }[];
    expect(sets.at(-1)).toMatchObject({ reason: 'interruption', files: 1 });
    await using pulled = await tmpDir();
    const pull = await runSpotctl(['checkpoints', 'pull', 'last', pulled.path], { home: home.path, env });
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.stderr).toMatch(/pulled checkpoint #\d+ .*checksums verified/);
    const state = JSON.parse(readFileSync(path.join(pulled.path, 'state.json'), 'utf8')) as { step: number };
    expect(state.step).toBe(lastSaved);

    // A new run restores the newest committed set before the job starts; the job checks its hash.
    const again = await runSpotctl(
      ['run', '--no-install', '--sync', proj.path, '--restore-from', 'last', '--checkpoint-to', 's3://ckpt/runs', '--', 'ckjob.py', 'once'],
      { home: home.path, env },
    );
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`restored step ${lastSaved}\n`);
    expect(again.stderr).toMatch(/restored checkpoint #\d+: 1 files/);
  });

  it('kills a job that ignores SIGTERM when the grace runs out, and still flushes', async () => {
    imds.emulator.clearInterruption();
    const cli = watchSpotctl(
      [
        'run',
        '--no-install',
        '--grace',
        '2s',
        '--sync',
        proj.path,
        '--imds-endpoint',
        imds.url,
        '--checkpoint-to',
        's3://ckpt/runs',
        '--',
        'ckjob.py',
        'ignore-term',
      ],
      { home: home.path, env },
    );
    await cli.until('stdout', /saved step 3\n/, 30_000);
    imds.emulator.scheduleInterruption({ action: 'terminate' });
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(137);
    expect(r.stdout).toMatch(/SIGTERM at/);
    // It went on saving during the grace; the final flush has the newest complete one.
    expect(r.stderr).toMatch(/killed when the grace ran out.*final checkpoint #\d+: 1 files/);
    const lastSaved = Math.max(...savedSteps(r.stdout));
    const again = await runSpotctl(
      ['run', '--no-install', '--sync', proj.path, '--restore-from', 'last', '--checkpoint-to', 's3://ckpt/runs', '--', 'ckjob.py', 'once'],
      { home: home.path, env },
    );
    expect(again.code, again.stderr).toBe(0);
    const restored = Number(/restored step (\d+)/.exec(again.stdout)?.[1]);
    // The step saved in the last moments before SIGKILL may be mid-write; never a torn one.
    expect(restored).toBeGreaterThanOrEqual(lastSaved - 1);
  });

  it('rides out an S3 outage that spans the notice: the final set is committed once S3 is back', async () => {
    imds.emulator.clearInterruption();
    const cli = watchSpotctl(
      ['run', '--no-install', '--sync', proj.path, '--imds-endpoint', imds.url, '--checkpoint-to', 's3://ckpt/outage', '--', 'ckjob.py'],
      { home: home.path, env },
    );
    await cli.until('stdout', /saved step 3\n/, 30_000);
    await moto.stop('refuse');
    try {
      await cli.until('stdout', /saved step 6\n/, 30_000);
      imds.emulator.scheduleInterruption({ action: 'terminate' });
      await cli.until('stderr', /spot interruption notice/, 30_000);
      // S3 stays down a while after the job has gone: the flush must retry, not give up or tear.
      await new Promise((resolve) => setTimeout(resolve, 2000));
    } finally {
      await moto.start();
    }
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toMatch(/final checkpoint #\d+: 1 files/);
    const lastSaved = Math.max(...savedSteps(r.stdout));
    const again = await runSpotctl(
      [
        'run',
        '--no-install',
        '--sync',
        proj.path,
        '--restore-from',
        'last',
        '--checkpoint-to',
        's3://ckpt/outage',
        '--',
        'ckjob.py',
        'once',
      ],
      { home: home.path, env },
    );
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`restored step ${lastSaved}\n`);
  });

  it('rehearses an interruption with --simulate-interruption and reports what was saved', async () => {
    const r = await runSpotctl(['run', '--no-install', '--sync', proj.path, '--simulate-interruption', '2s', '--', 'ckjob.py'], {
      home: home.path,
      env,
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toMatch(/rehearsal: an interruption notice \(terminate, deadline \S+\) will be served in 2 s/);
    expect(r.stderr).toMatch(/rehearsed interruption \(terminate\): job ended .*final checkpoint #\d+: 1 files.*checkpoint-store/);
  });
});

describe('spot interruption with the default metadata address (agent inside a network namespace)', () => {
  it('the unmodified default endpoint 169.254.169.254 reaches the emulator in the namespace', async () => {
    await using ns = await createNetns();
    await using nsImds = await startImdsInNetns(ns);
    await using sshd = await startSshd({ netns: ns });
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeProject(proj.path, { 'ckjob.py': CKJOB });
    const cli = watchSpotctl(
      [
        'run',
        '--remote-dir',
        `${home.path}/remote`,
        ...sshHostArgs(sshd),
        '--no-install',
        '--sync',
        proj.path,
        '--imds-endpoint',
        'default',
        '--checkpoint-to',
        `${home.path}/store`,
        '--',
        'ckjob.py',
      ],
      { home: home.path },
    );
    await cli.until('stdout', /saved step 3\n/, 60_000);
    await nsImds.scheduleInterruption({ action: 'terminate' });
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toMatch(/spot interruption notice: terminate/);
    expect(r.stderr).toMatch(/final checkpoint #\d+: 1 files/);
  });
});
