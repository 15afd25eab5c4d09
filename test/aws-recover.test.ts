/**
 * Managed aws runs end to end (issue 10): moto for EC2, IAM and S3, and a pool of test hosts that
 * gives each launched instance a machine of its own — own network namespace and address, own disk,
 * own IMDSv2 emulator (helpers/aws-test-pool.ts). An interruption is driven through the
 * emulator of the instance it hits.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { listRunRoles, loadIamSdk } from '@spotctl/controller';
import { runSpotctl, watchSpotctl } from './helpers/cli.ts';
import { TEST_CREDENTIALS, loadEc2Sdk, startMotoEc2, type MotoEc2 } from './helpers/aws-moto.ts';
import { startTestInstancePool, type TestInstancePool } from './helpers/aws-test-pool.ts';
import { createNetns, type Netns } from './helpers/netns.ts';
import { skipUnlessCi } from './helpers/prerequisites.ts';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';
import { writeProject } from './fixtures.ts';

const REGION = 'us-east-2';
const LIVE = ['pending', 'running', 'stopping', 'stopped'];

function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 5000 });
    execFileSync('which', ['moto_server', 'curl'], { stdio: 'ignore', timeout: 5000 });
    return undefined;
  } catch (e) {
    return `ip netns, moto_server or curl unavailable: ${e instanceof Error ? e.message : String(e)}`;
  }
}
const skip = skipUnlessCi('aws-recover', netnsUnavailable());

interface RunJson {
  runId: string;
  aws?: { instanceId: string; az: string; instanceType: string; terminatedAt?: number };
  attempts?: {
    attempt: number;
    instanceId: string;
    instanceType: string;
    az: string;
    outcome?: string;
    pricePerHour: number;
    launchedAt: number;
    endedAt?: number;
  }[];
}

describe.skipIf(skip)('managed aws runs (moto + one test host per instance)', () => {
  let hub: Netns;
  let moto: MotoEc2;
  let pool: TestInstancePool;
  let home: TmpDir;
  let proj: TmpDir;
  let work: TmpDir;
  let lookup: http.Server;
  let lookupUrl = '';
  const bucket = 'recover-ckpt';

  const remoteDir = (): string => path.join(work.path, 'remote');
  const args = (...extra: string[]): string[] => [
    'run',
    '--provider',
    'aws',
    '--region',
    REGION,
    '--workers',
    '1',
    '--remote-dir',
    remoteDir(),
    '--ssh-config',
    path.join(work.path, 'ssh_config'),
    '--sync',
    proj.path,
    '--no-install',
    ...extra,
  ];
  const env = (): Record<string, string> => ({ ...moto.env(), ...pool.env(), SPOTCTL_IP_LOOKUP_URL: lookupUrl });
  const runRecord = (runId: string): RunJson =>
    JSON.parse(readFileSync(path.join(home.path, 'runs', runId, 'run.json'), 'utf8')) as RunJson;
  const lastRunId = (): string => readdirSync(path.join(home.path, 'runs')).sort().at(-1)!;

  async function instances(filters: { Name: string; Values: string[] }[]) {
    const { DescribeInstancesCommand } = await loadEc2Sdk();
    using ec2 = await moto.ec2(REGION);
    const r = await ec2.send(new DescribeInstancesCommand({ Filters: filters }));
    return (r.Reservations ?? []).flatMap((res) => res.Instances ?? []);
  }
  const liveSpotctlInstances = () =>
    instances([
      { Name: 'tag:spotctl:managed', Values: ['true'] },
      { Name: 'instance-state-name', Values: LIVE },
    ]);
  async function runRoles(): Promise<string[]> {
    const { IAMClient } = await loadIamSdk();
    const iam = new IAMClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials: TEST_CREDENTIALS });
    try {
      return (await listRunRoles(iam)).map((r) => r.runId);
    } finally {
      iam.destroy();
    }
  }

  beforeAll(async () => {
    // moto listens on this namespace's host-side address; every instance host routes to it.
    hub = await createNetns();
    moto = await startMotoEc2({ host: hub.hostAddress });
    home = await tmpDir();
    proj = await tmpDir();
    work = await tmpDir();
    writeProject(work.path, { ssh_config: '# empty: keeps ~/.ssh/config out of the test\n' });
    pool = await startTestInstancePool({ moto, region: REGION, remoteDir: remoteDir(), dir: work.path });
    writeProject(proj.path, {
      'hello.py': 'print("hello", flush=True)\n',
      'version.txt': 'v1\n',
      // Counts to 8, one step per 0.5 s, saving its step as a checkpoint; resumes from a restored one.
      'count.py': [
        'import json, os, signal, sys, time',
        'os.makedirs("checkpoints", exist_ok=True)',
        'state = "checkpoints/state.json"',
        'step = json.load(open(state))["step"] if os.path.exists(state) else 0',
        'print(f"code {open(\'version.txt\').read().strip()}", flush=True)',
        "print(f\"attempt {os.environ.get('SPOTCTL_ATTEMPT')} restored-set {os.environ.get('SPOTCTL_RESTORED_SET', 'none')} from step {step}\", flush=True)",
        'signal.signal(signal.SIGTERM, lambda *a: (print(f"stopping at step {step}", flush=True), sys.exit(0)))',
        'while step < 8:',
        '    step += 1',
        '    print(f"step {step}", flush=True)',
        '    open(state + ".tmp", "w").write(json.dumps({"step": step}))',
        '    os.replace(state + ".tmp", state)',
        '    time.sleep(0.5 if os.environ.get("SPOTCTL_ATTEMPT") != "1" else 3)',
        'print("done", flush=True)',
        '',
      ].join('\n'),
    });
    lookup = http.createServer((_req, res) => res.end('203.0.113.9\n'));
    lookup.listen(0, '127.0.0.1');
    await once(lookup, 'listening');
    lookupUrl = `http://127.0.0.1:${(lookup.address() as AddressInfo).port}/`;
    // moto loads its S3 backend on the first call: slow on a loaded machine.
    const created = await fetch(`${moto.endpoint}/${bucket}`, { method: 'PUT', signal: AbortSignal.timeout(60_000) });
    expect(created.ok).toBe(true);
  });
  afterAll(async () => {
    lookup?.close();
    await pool?.close();
    await moto?.close();
    await hub?.close();
    await proj?.[Symbol.asyncDispose]();
    await work?.[Symbol.asyncDispose]();
    await home?.[Symbol.asyncDispose]();
  });
  afterEach(async () => {
    await pool.waitAllGone();
    expect(pool.errors).toEqual([]);
  });

  it('each launched instance gets a host of its own: its own address, disk and metadata service', async () => {
    const first = pool.booted.length;
    for (let i = 0; i < 2; i++) {
      const r = await runSpotctl(args('hello.py'), { home: home.path, env: env(), timeoutMs: 180_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('hello');
    }
    const [a, b] = [pool.host(pool.booted[first]!)!, pool.host(pool.booted[first + 1]!)!];
    expect(a.netns.nsAddress).not.toBe(b.netns.nsAddress);
    // Each run's files are on its own host's disk only (never in the shared directory underneath).
    const runs = (disk: string) => (existsSync(path.join(disk, 'runs')) ? readdirSync(path.join(disk, 'runs')) : []);
    expect(runs(a.disk)).toHaveLength(1);
    expect(runs(b.disk)).toHaveLength(1);
    expect(runs(a.disk)[0]).not.toBe(runs(b.disk)[0]);
    expect(readdirSync(remoteDir())).toEqual([]);
    // Each agent polled its own instance's metadata service.
    expect((await a.imds.stats()).requests.gets).toBeGreaterThan(0);
    expect((await b.imds.stats()).requests.gets).toBeGreaterThan(0);
    expect(await liveSpotctlInstances()).toEqual([]);
  });

  it('an interruption mid-job: attempt 2 runs on another pool, resumes from the committed set, and everything ends', async () => {
    const first = pool.booted.length;
    const cli = watchSpotctl(args('--checkpoint-to', `s3://${bucket}/team`, 'count.py'), {
      home: home.path,
      env: env(),
      timeoutMs: 300_000,
    });
    await cli.until('stdout', /^step 2$/m, 150_000);
    const host1 = await pool.waitForHost(first);
    // The laptop's tree changes while attempt 1 runs: attempt 2 must still run attempt 1's code.
    writeFileSync(path.join(proj.path, 'version.txt'), 'v2\n');
    await host1.imds.scheduleInterruption({ leadMs: 120_000 });
    const r = await cli.done;
    writeFileSync(path.join(proj.path, 'version.txt'), 'v1\n');
    expect(r.code, r.stderr).toBe(0);
    const runId = lastRunId();
    expect(r.stdout.match(/^code .*$/gm)).toEqual(['code v1', 'code v1']);
    const lines = r.stdout
      .trim()
      .split('\n')
      .filter((l) => !l.startsWith('code '));
    // Attempt 1 started from scratch and stopped at some step; attempt 2 resumed exactly there.
    expect(lines[0]).toBe('attempt 1 restored-set none from step 0');
    const stopped = Number(/^stopping at step (\d+)$/m.exec(r.stdout)?.[1]);
    expect(stopped).toBeGreaterThanOrEqual(2);
    const resumed = lines.findIndex((l) => l.startsWith('attempt 2 '));
    expect(lines[resumed]).toMatch(new RegExp(`^attempt 2 restored-set \\d+ from step ${stopped}$`));
    // Every step once, in order, across both attempts; then done.
    const steps = lines.filter((l) => /^step \d+$/.test(l)).map((l) => Number(l.slice(5)));
    expect(steps).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(lines.at(-1)).toBe('done');
    expect(r.stderr).toMatch(/attempt 1 interrupted on i-/);
    expect(r.stderr).toMatch(/↻ attempt 2: relaunching/);

    const record = runRecord(runId);
    expect(record.attempts).toHaveLength(2);
    const [a1, a2] = record.attempts!;
    expect(a1).toMatchObject({ attempt: 1, outcome: 'interrupted' });
    expect(a2).toMatchObject({ attempt: 2, outcome: 'ended' });
    expect(`${a2!.instanceType} ${a2!.az}`).not.toBe(`${a1!.instanceType} ${a1!.az}`);
    // Two machines: attempt 2's disk never had attempt 1's files (the restore came from S3).
    expect(pool.booted.slice(first)).toEqual([a1!.instanceId, a2!.instanceId]);
    const host2 = pool.host(a2!.instanceId)!;
    expect(host2.disk).not.toBe(host1.disk);
    // The run's role was kept for attempt 2 (same profile) and is gone at the end; nothing runs.
    expect(host1.profileArn).toBeDefined();
    expect(host2.profileArn).toBe(host1.profileArn);
    expect(await runRoles()).not.toContain(runId);
    expect(await liveSpotctlInstances()).toEqual([]);
    // ps: the attempt count and current instance; --json the per-attempt list, spend over both.
    const ps = await runSpotctl(['ps', '--json'], { home: home.path });
    const row = (JSON.parse(ps.stdout) as { runId: string; host: string; spend: number; attempts: { instanceId: string }[] }[]).find(
      (x) => x.runId === runId,
    )!;
    expect(row.host).toBe(`${a2!.instanceId} (${a2!.az}), attempt 2`);
    expect(row.attempts.map((a) => a.instanceId)).toEqual([a1!.instanceId, a2!.instanceId]);
    const both = [a1!, a2!].reduce((sum, a) => sum + (a.pricePerHour * (a.endedAt! - a.launchedAt)) / 3_600_000, 0);
    expect(row.spend).toBeGreaterThan(0);
    expect(row.spend).toBeCloseTo(both, 8);
  }, 320_000);

  it('an instance terminated without notice is found gone through EC2 and the run recovers on another instance', async () => {
    const first = pool.booted.length;
    const cli = watchSpotctl(args('--checkpoint-to', `s3://${bucket}/team`, 'count.py'), {
      home: home.path,
      env: env(),
      timeoutMs: 300_000,
    });
    await cli.until('stdout', /^step 2$/m, 150_000);
    const victim = pool.booted[first]!;
    const { TerminateInstancesCommand } = await loadEc2Sdk();
    {
      using ec2 = await moto.ec2(REGION);
      await ec2.send(new TerminateInstancesCommand({ InstanceIds: [victim] }));
    }
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`attempt 1 interrupted: ${victim}`);
    expect(r.stderr).toMatch(/terminated without notice \(EC2 says it is gone\)/);
    // Attempt 2 resumed from a set attempt 1 committed before it vanished (not from scratch).
    expect(r.stdout).toMatch(/^attempt 2 restored-set \d+ from step [12]$/m);
    expect(r.stdout.trim().split('\n').at(-1)).toBe('done');
    const record = runRecord(lastRunId());
    expect(record.attempts?.map((a) => a.outcome)).toEqual(['interrupted', 'ended']);
    expect(record.attempts![1]!.instanceId).not.toBe(victim);
    expect(await runRoles()).not.toContain(lastRunId());
    expect(await liveSpotctlInstances()).toEqual([]);
  }, 320_000);

  it('--no-recover: an interrupted run ends with its own exit code and says the job did not finish, even if the job exited 0', async () => {
    const first = pool.booted.length;
    const cli = watchSpotctl(args('--no-recover', '--checkpoint-to', `s3://${bucket}/team`, 'count.py'), {
      home: home.path,
      env: env(),
      timeoutMs: 240_000,
    });
    await cli.until('stdout', /^step 1$/m, 150_000);
    await (await pool.waitForHost(first)).imds.scheduleInterruption({ leadMs: 120_000 });
    const r = await cli.done;
    expect(r.stdout).toMatch(/^stopping at step \d+$/m);
    expect(r.code, r.stderr).toBe(75);
    expect(r.stderr).toMatch(
      /the job did not finish: a spot interruption ended attempt 1 and --no-recover was given; the newest committed checkpoint set is #\d+/,
    );
    expect(pool.booted.length).toBe(first + 1);
    expect(await runRoles()).not.toContain(lastRunId());
    expect(await liveSpotctlInstances()).toEqual([]);
  }, 260_000);

  it('--max-attempts exhausted: a clear error naming the last set, nothing left running', async () => {
    const first = pool.booted.length;
    const cli = watchSpotctl(args('--max-attempts', '1', '--checkpoint-to', `s3://${bucket}/team`, 'count.py'), {
      home: home.path,
      env: env(),
      timeoutMs: 240_000,
    });
    await cli.until('stdout', /^step 1$/m, 150_000);
    await (await pool.waitForHost(first)).imds.scheduleInterruption({ leadMs: 120_000 });
    const r = await cli.done;
    expect(r.code, r.stderr).toBe(75);
    expect(r.stderr).toMatch(
      /the job did not finish: 1 attempts were interrupted \(--max-attempts 1\); the newest committed checkpoint set is #\d+; nothing of the run is left running/,
    );
    expect(r.stderr).toContain(`spotctl run --restore-from ${lastRunId()}`);
    expect(await runRoles()).not.toContain(lastRunId());
    expect(await liveSpotctlInstances()).toEqual([]);
  }, 260_000);
});
