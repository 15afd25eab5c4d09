/**
 * Managed aws runs end to end (issue 10): moto for EC2, IAM and S3, and a pool of test hosts that
 * gives each launched instance a machine of its own — own network namespace and address, own disk,
 * own IMDSv2 emulator (helpers/aws-test-pool.ts). An interruption is driven through the
 * emulator of the instance it hits.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { loadEc2Sdk, startMotoEc2, type MotoEc2 } from './helpers/aws-moto.ts';
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
    'run', '--provider', 'aws', '--region', REGION, '--workers', '1',
    '--remote-dir', remoteDir(), '--ssh-config', path.join(work.path, 'ssh_config'), '--sync', proj.path, '--no-install',
    ...extra,
  ];
  const env = (): Record<string, string> => ({ ...moto.env(), ...pool.env(), SPOTCTL_IP_LOOKUP_URL: lookupUrl });

  async function instances(filters: { Name: string; Values: string[] }[]) {
    const { DescribeInstancesCommand } = await loadEc2Sdk();
    using ec2 = await moto.ec2(REGION);
    const r = await ec2.send(new DescribeInstancesCommand({ Filters: filters }));
    return (r.Reservations ?? []).flatMap((res) => res.Instances ?? []);
  }
  const liveSpotctlInstances = () => instances([{ Name: 'tag:spotctl:managed', Values: ['true'] }, { Name: 'instance-state-name', Values: LIVE }]);
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
      // Counts to 8, one step per 0.5 s, saving its step as a checkpoint; resumes from a restored one.
      'count.py': [
        'import json, os, signal, sys, time',
        'os.makedirs("checkpoints", exist_ok=True)',
        'state = "checkpoints/state.json"',
        'step = json.load(open(state))["step"] if os.path.exists(state) else 0',
        'print(f"attempt {os.environ.get(\'SPOTCTL_ATTEMPT\')} restored-set {os.environ.get(\'SPOTCTL_RESTORED_SET\', \'none\')} from step {step}", flush=True)',
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
    const created = await fetch(`${moto.endpoint}/${bucket}`, { method: 'PUT', signal: AbortSignal.timeout(10_000) });
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
});

