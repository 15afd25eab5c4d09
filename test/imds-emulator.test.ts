/**
 * The metadata emulator answers like EC2's IMDSv2, checked over real HTTP on 127.0.0.1 with a
 * plain HTTP client (not ours), so the client's tests below rest on a verified server.
 */
import { describe, expect, test } from 'vitest';
import { imdsTime } from '@spotctl/agent';
import { startImds } from './helpers/imds.ts';

class ManualClock {
  t = Date.UTC(2026, 10, 22, 9, 58, 0);
  now(): number {
    return this.t;
  }
}

async function put(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(`${url}/latest/api/token`, { method: 'PUT', headers });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

async function get(url: string, path: string, token?: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${url}${path}`, token === undefined ? {} : { headers: { 'x-aws-ec2-metadata-token': token } });
  return { status: res.status, body: await res.text() };
}

async function token(url: string, ttl = 60): Promise<string> {
  const res = await put(url, { 'x-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
  expect(res.status).toBe(200);
  return res.body;
}

describe('ImdsEmulator: tokens', () => {
  test('the TTL header is required and must be an integer from 1 to 21600', async () => {
    await using imds = await startImds();
    expect((await put(imds.url)).status).toBe(400);
    for (const bad of ['0', '21601', '-1', 'abc', '1.5', '', '60s']) {
      expect((await put(imds.url, { 'x-aws-ec2-metadata-token-ttl-seconds': bad })).status, `ttl ${JSON.stringify(bad)}`).toBe(400);
    }
    for (const good of ['1', '21600']) {
      const res = await put(imds.url, { 'x-aws-ec2-metadata-token-ttl-seconds': good });
      expect(res.status).toBe(200);
      expect(res.body).toMatch(/^[A-Za-z0-9+/=]{40,}$/);
      expect(res.headers.get('x-aws-ec2-metadata-token-ttl-seconds')).toBe(good);
    }
    expect(imds.emulator.requests.tokenPuts).toBe(10);
  });

  test('a token PUT that went through a proxy (X-Forwarded-For) is refused with 403; GET on the token path is 405', async () => {
    await using imds = await startImds();
    const res = await put(imds.url, { 'x-aws-ec2-metadata-token-ttl-seconds': '60', 'x-forwarded-for': '10.0.0.9' });
    expect(res.status).toBe(403);
    expect((await get(imds.url, '/latest/api/token')).status).toBe(405);
  });

  test('GETs need a live token: missing, unknown and expired all get 401', async () => {
    const clock = new ManualClock();
    await using imds = await startImds({ clock });
    const t = await token(imds.url, 60);
    expect(await get(imds.url, '/latest/meta-data/instance-id', t)).toEqual({ status: 200, body: 'i-0123456789abcdef0' });
    expect((await get(imds.url, '/latest/meta-data/instance-id')).status).toBe(401);
    expect((await get(imds.url, '/latest/meta-data/instance-id', 'bm90LWEtdG9rZW4=')).status).toBe(401);
    clock.t += 59_999;
    expect((await get(imds.url, '/latest/meta-data/instance-id', t)).status).toBe(200);
    clock.t += 1;
    expect((await get(imds.url, '/latest/meta-data/instance-id', t)).status).toBe(401);
    expect(imds.emulator.requests.unauthorized).toBe(3);
    expect(imds.emulator.liveTokens).toBe(0);
  });

  test("httpTokens 'optional' (IMDSv1 allowed) answers token-less GETs but still rejects a bad token", async () => {
    await using imds = await startImds({ httpTokens: 'optional' });
    expect((await get(imds.url, '/latest/meta-data/instance-type')).status).toBe(200);
    expect((await get(imds.url, '/latest/meta-data/instance-type', 'nope')).status).toBe(401);
  });
});

describe('ImdsEmulator: metadata and notices', () => {
  test('static items are configurable; unknown paths are 404', async () => {
    await using imds = await startImds({ instanceId: 'i-0abc', availabilityZone: 'eu-west-3b', instanceType: 'g5.xlarge' });
    const t = await token(imds.url);
    expect(await get(imds.url, '/latest/meta-data/instance-id', t)).toEqual({ status: 200, body: 'i-0abc' });
    expect(await get(imds.url, '/latest/meta-data/placement/availability-zone', t)).toEqual({ status: 200, body: 'eu-west-3b' });
    expect(await get(imds.url, '/latest/meta-data/placement/region', t)).toEqual({ status: 200, body: 'eu-west-3' });
    expect(await get(imds.url, '/latest/meta-data/instance-type', t)).toEqual({ status: 200, body: 'g5.xlarge' });
    expect((await get(imds.url, '/latest/meta-data/nothing-here', t)).status).toBe(404);
    expect((await get(imds.url, '/latest/meta-data/spot/instance-action/', t)).status).toBe(404);
  });

  test('instance-action: 404 until scheduled, then the notice with a fixed time two minutes ahead, UTC without millis', async () => {
    const clock = new ManualClock();
    clock.t += 437; // a notice in the middle of a second: the time is still whole seconds
    await using imds = await startImds({ clock });
    const t = await token(imds.url);
    const path = '/latest/meta-data/spot/instance-action';
    expect((await get(imds.url, path, t)).status).toBe(404);
    expect(imds.emulator.noticeServedAt).toBeUndefined();

    const scheduled = imds.emulator.scheduleInterruption({ inMs: 30_000 });
    expect(scheduled).toEqual({ action: 'terminate', noticeAt: clock.t + 30_000, time: '2026-11-22T10:00:30Z' });
    expect((await get(imds.url, path, t)).status).toBe(404);
    clock.t += 29_999;
    expect((await get(imds.url, path, t)).status).toBe(404);
    clock.t += 1;
    const res = await get(imds.url, path, t);
    expect(res.status).toBe(200);
    expect(res.body).toBe('{"action":"terminate","time":"2026-11-22T10:00:30Z"}');
    expect(imds.emulator.noticeServedAt).toBe(clock.t);
    // The time does not drift with later requests (AWS's mock recomputes it; EC2 does not).
    clock.t += 10_000;
    expect((await get(imds.url, path, t)).body).toBe(res.body);
    expect(imds.emulator.noticeServedAt).toBe(clock.t - 10_000);
    expect(await get(imds.url, '/latest/meta-data/spot/termination-time', t)).toEqual({ status: 200, body: '2026-11-22T10:00:30Z' });

    imds.emulator.clearInterruption();
    expect((await get(imds.url, path, t)).status).toBe(404);
    expect(imds.emulator.noticeServedAt).toBeUndefined();
    expect(imds.emulator.requests.noticesServed).toBe(2);
  });

  test('stop keeps the two-minute lead; hibernate has none', async () => {
    const clock = new ManualClock();
    await using imds = await startImds({ clock });
    const t = await token(imds.url);
    const path = '/latest/meta-data/spot/instance-action';
    imds.emulator.scheduleInterruption({ action: 'stop' });
    expect(JSON.parse((await get(imds.url, path, t)).body)).toEqual({ action: 'stop', time: imdsTime(clock.t + 120_000) });
    expect((await get(imds.url, '/latest/meta-data/spot/termination-time', t)).status).toBe(404);
    imds.emulator.scheduleInterruption({ action: 'hibernate' });
    expect(JSON.parse((await get(imds.url, path, t)).body)).toEqual({ action: 'hibernate', time: '2026-11-22T09:58:00Z' });
    imds.emulator.scheduleInterruption({ action: 'terminate', leadMs: 5000 });
    expect(JSON.parse((await get(imds.url, path, t)).body)).toEqual({ action: 'terminate', time: '2026-11-22T09:58:05Z' });
  });

  test('rebalance: 404 until recommended, then its noticeTime', async () => {
    const clock = new ManualClock();
    await using imds = await startImds({ clock });
    const t = await token(imds.url);
    const path = '/latest/meta-data/events/recommendations/rebalance';
    expect((await get(imds.url, path, t)).status).toBe(404);
    expect(imds.emulator.recommendRebalance({ inMs: 2000 })).toBe('2026-11-22T09:58:02Z');
    expect((await get(imds.url, path, t)).status).toBe(404);
    clock.t += 2000;
    expect(await get(imds.url, path, t)).toEqual({ status: 200, body: '{"noticeTime":"2026-11-22T09:58:02Z"}' });
    imds.emulator.clearRebalance();
    expect((await get(imds.url, path, t)).status).toBe(404);
  });

  test('stop/restart keeps the port, the tokens and the schedule; faults are one-shot', async () => {
    await using imds = await startImds();
    const t = await token(imds.url);
    imds.emulator.scheduleInterruption();
    await imds.stop();
    await expect(fetch(`${imds.url}/latest/meta-data/instance-id`)).rejects.toThrow();
    await imds.restart();
    expect((await get(imds.url, '/latest/meta-data/spot/instance-action', t)).status).toBe(200);

    imds.emulator.injectFault({ path: '/latest/meta-data/instance-id', status: 503, times: 2 });
    expect((await get(imds.url, '/latest/meta-data/instance-id', t)).status).toBe(503);
    expect((await get(imds.url, '/latest/meta-data/instance-id', t)).status).toBe(503);
    expect((await get(imds.url, '/latest/meta-data/instance-id', t)).status).toBe(200);
    expect(imds.emulator.countFor('/latest/meta-data/instance-id')).toBe(3);
  });
});
