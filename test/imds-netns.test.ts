/**
 * The client and the poller with their DEFAULT endpoint (no config, no environment variable)
 * reach the metadata service at 169.254.169.254, as on EC2. Played inside a network namespace:
 * the emulator listens on 169.254.169.254:80 on the namespace's loopback, and the client runs as a
 * child process inside the same namespace. This test process never contacts that address itself:
 * it steers the emulator over the child's stdin/stdout.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { bundleHelper, startImdsInNetns, type NetnsImds } from './helpers/imds.ts';
import { createNetns, type Netns } from './helpers/netns.ts';
import { skipUnlessCi } from './helpers/prerequisites.ts';
import { readUntil, tapStream } from './helpers/read-until.ts';

function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 5000 });
    return undefined;
  } catch (e) {
    return `ip netns unavailable: ${e instanceof Error ? e.message : String(e)}`;
  }
}

const skip = skipUnlessCi('imds-netns', netnsUnavailable());

/**
 * Runs the probe in the namespace with a clean metadata environment: no endpoint variable, and
 * without the AWS_EC2_METADATA_DISABLED=true the test run sets (unless `disabled`).
 */
function probeArgv(script: string, args: string[], options: { disabled?: boolean } = {}): string[] {
  const env = ['env', '-u', 'AWS_EC2_METADATA_SERVICE_ENDPOINT', '-u', 'AWS_EC2_METADATA_DISABLED'];
  if (options.disabled) env.push('AWS_EC2_METADATA_DISABLED=true');
  return [...env, process.execPath, script, ...args];
}

describe.skipIf(skip)('IMDS at 169.254.169.254 inside a network namespace', () => {
  let ns: Netns;
  let imds: NetnsImds;
  let probe: string;

  beforeAll(async () => {
    probe = await bundleHelper('imds-probe');
    ns = await createNetns();
    imds = await startImdsInNetns(ns);
  });
  afterAll(async () => {
    await imds?.close();
    await ns?.close();
  });

  test('the client with no endpoint configured talks IMDSv2 to 169.254.169.254, one token for all GETs', async () => {
    const res = await ns.exec(probeArgv(probe, ['client']), { timeoutMs: 15_000 });
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({
      endpoint: 'http://169.254.169.254',
      instanceId: 'i-0123456789abcdef0',
      availabilityZone: 'us-east-1a',
      instanceType: 'm5.large',
      instanceActionStatus: 404,
      tokenFetches: 1,
    });
    const { requests } = await imds.stats();
    expect(requests).toMatchObject({ tokenPuts: 1, gets: 4, unauthorized: 0 });
  });

  test('AWS_EC2_METADATA_DISABLED=true keeps a default-endpoint client away from the address', async () => {
    const before = (await imds.stats()).requests.total;
    const res = await ns.exec(probeArgv(probe, ['disabled'], { disabled: true }), { timeoutMs: 15_000 });
    expect(res.code, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ endpoint: 'http://169.254.169.254', error: { kind: 'disabled' } });
    expect((await imds.stats()).requests.total).toBe(before);
  });

  test('the poller with default settings sees a scheduled interruption within about a poll interval', async () => {
    const child = ns.spawn(probeArgv(probe, ['poll', '1000', '20000']), { stdio: ['ignore', 'pipe', 'pipe'] });
    tapStream(child.stdout!);
    tapStream(child.stderr!);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await readUntil(child.stdout!, /"event":"started"/, 10_000);
      const scheduled = await imds.scheduleInterruption({ inMs: 1500 });
      const line = await readUntil(child.stdout!, /\{"event":"interruption".*\}\n/, 15_000);
      const event = JSON.parse(line.slice(line.indexOf('{"event":"interruption"'))) as {
        action: { action: string; time: string };
        noticedAt: number;
      };
      expect(event.action).toEqual({ action: 'terminate', time: scheduled.time });
      const { noticeServedAt } = await imds.stats();
      console.log(
        `[imds-netns] notice available → poller callback: ${event.noticedAt - scheduled.noticeAt} ms ` +
          `(first 200 served ${(noticeServedAt ?? NaN) - scheduled.noticeAt} ms after it was available; pollIntervalMs 1000)`,
      );
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await imds.clearInterruption();
    }
  });
});
