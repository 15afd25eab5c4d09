/**
 * The hand-written IMDSv2 client against the real emulator on 127.0.0.1: token reuse, refresh
 * before expiry, re-fetch on 401, timeouts, refusals and aborts.
 */
import { describe, expect, test } from 'vitest';
import { DEFAULT_IMDS_ENDPOINT, ImdsClient, ImdsError, resolveImdsEndpoint } from '@spotctl/agent';
import { startImds } from './helpers/imds.ts';

class ManualClock {
  t = 1_800_000_000_000;
  now(): number {
    return this.t;
  }
}

async function rejection(promise: Promise<unknown>): Promise<ImdsError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof ImdsError) return e;
    throw e;
  }
  throw new Error('expected a rejection');
}

describe('endpoint', () => {
  // Resolution only: nothing here sends a request.
  test('config first, then AWS_EC2_METADATA_SERVICE_ENDPOINT, then 169.254.169.254', () => {
    expect(resolveImdsEndpoint(undefined, {})).toBe(DEFAULT_IMDS_ENDPOINT);
    expect(DEFAULT_IMDS_ENDPOINT).toBe('http://169.254.169.254');
    expect(resolveImdsEndpoint(undefined, { AWS_EC2_METADATA_SERVICE_ENDPOINT: 'http://127.0.0.1:1338/' })).toBe('http://127.0.0.1:1338');
    expect(resolveImdsEndpoint('http://127.0.0.1:9', { AWS_EC2_METADATA_SERVICE_ENDPOINT: 'http://127.0.0.1:1338' })).toBe(
      'http://127.0.0.1:9',
    );
    expect(new ImdsClient({ env: {} }).endpoint).toBe('http://169.254.169.254');
    expect(new ImdsClient({ env: { AWS_EC2_METADATA_SERVICE_ENDPOINT: 'http://[fd00:ec2::254]' } }).endpoint).toBe(
      'http://[fd00:ec2::254]',
    );
  });

  test('bad options fail at construction', () => {
    expect(() => new ImdsClient({ endpoint: 'https://169.254.169.254' })).toThrow(/http:\/\//);
    expect(() => new ImdsClient({ endpoint: 'not a url' })).toThrow(/not a URL/);
    expect(() => new ImdsClient({ endpoint: 'http://127.0.0.1:9', tokenTtlS: 0 })).toThrow(RangeError);
    expect(() => new ImdsClient({ endpoint: 'http://127.0.0.1:9', tokenTtlS: 21_601 })).toThrow(RangeError);
  });
});

describe('ImdsClient against the emulator', () => {
  test('one token and one keep-alive connection carry hundreds of GETs', async () => {
    await using imds = await startImds({ instanceId: 'i-0feedface0000000' });
    await using client = new ImdsClient({ endpoint: imds.url });
    for (let i = 0; i < 300; i++) {
      expect(await client.get('meta-data/instance-id')).toEqual({ status: 200, body: 'i-0feedface0000000' });
    }
    // Relative paths live under /latest/; absolute ones are taken as they are.
    expect(await client.get('/latest/meta-data/instance-type')).toEqual({ status: 200, body: 'm5.large' });
    expect(await client.get('meta-data/spot/instance-action')).toMatchObject({ status: 404 });
    const counts = imds.emulator.requests;
    expect(counts.tokenPuts).toBe(1);
    expect(client.tokenFetches).toBe(1);
    expect(counts.gets).toBe(302);
    expect(counts.unauthorized).toBe(0);
    expect(counts.connections).toBe(1);
  });

  test('AWS_EC2_METADATA_DISABLED only guards the default address, not an explicit endpoint', async () => {
    await using imds = await startImds();
    await using client = new ImdsClient({ endpoint: imds.url, env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    expect((await client.get('meta-data/instance-id')).status).toBe(200);
    // (The default-address case is exercised inside a network namespace: test/imds-netns.test.ts.)
  });

  test('asks for the configured TTL (default 21600)', async () => {
    await using imds = await startImds();
    await using a = new ImdsClient({ endpoint: imds.url });
    await using b = new ImdsClient({ endpoint: imds.url, tokenTtlS: 90 });
    await a.get('meta-data/instance-id');
    await b.get('meta-data/instance-id');
    expect(imds.emulator.requests.tokenPuts).toBe(2);
    expect(imds.emulator.liveTokens).toBe(2);
  });

  test('a token the server expired is dropped: new token, one retry, the caller sees 200', async () => {
    const serverClock = new ManualClock();
    await using imds = await startImds({ clock: serverClock });
    // The client's own clock stands still, so it still believes in its token.
    await using client = new ImdsClient({ endpoint: imds.url, tokenTtlS: 60, now: () => 0 });
    expect((await client.get('meta-data/instance-id')).status).toBe(200);
    serverClock.t += 60_000;
    expect((await client.get('meta-data/instance-id')).status).toBe(200);
    expect(imds.emulator.requests).toMatchObject({ tokenPuts: 2, unauthorized: 1 });
    // The new token is reused again.
    expect((await client.get('meta-data/instance-id')).status).toBe(200);
    expect(imds.emulator.requests).toMatchObject({ tokenPuts: 2, unauthorized: 1 });

    // A restarted service forgets every token: same recovery.
    imds.emulator.revokeTokens();
    expect((await client.get('meta-data/instance-id')).status).toBe(200);
    expect(imds.emulator.requests).toMatchObject({ tokenPuts: 3, unauthorized: 2 });
  });

  test('the token is replaced 15 s before it expires, without ever getting a 401', async () => {
    const clock = new ManualClock();
    await using imds = await startImds({ clock });
    await using client = new ImdsClient({ endpoint: imds.url, tokenTtlS: 60, now: () => clock.now() });
    await client.get('meta-data/instance-id');
    clock.t += 44_999;
    await client.get('meta-data/instance-id');
    expect(imds.emulator.requests.tokenPuts).toBe(1);
    clock.t += 1;
    await client.get('meta-data/instance-id');
    expect(imds.emulator.requests).toMatchObject({ tokenPuts: 2, unauthorized: 0 });
  });

  test('a 401 that persists after the retry is returned, not looped on', async () => {
    await using imds = await startImds();
    await using client = new ImdsClient({ endpoint: imds.url });
    imds.emulator.injectFault({ path: '/latest/meta-data/instance-id', status: 401, times: 5 });
    expect((await client.get('meta-data/instance-id')).status).toBe(401);
    expect(imds.emulator.countFor('/latest/meta-data/instance-id')).toBe(2);
    expect(imds.emulator.requests.tokenPuts).toBe(2);
  });

  test('concurrent first requests share one token PUT', async () => {
    await using imds = await startImds();
    await using client = new ImdsClient({ endpoint: imds.url });
    const results = await Promise.all(Array.from({ length: 8 }, () => client.get('meta-data/instance-id')));
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(imds.emulator.requests.tokenPuts).toBe(1);
  });

  test('a refused token request is an ImdsError with its status', async () => {
    await using imds = await startImds();
    await using client = new ImdsClient({ endpoint: imds.url });
    imds.emulator.injectFault({ path: '/latest/api/token', status: 403 });
    const err = await rejection(client.get('meta-data/instance-id'));
    expect(err).toMatchObject({ kind: 'http', status: 403 });
    // Nothing is cached from the failure; the next call works.
    expect((await client.get('meta-data/instance-id')).status).toBe(200);
  });

  test('a slow answer times out; a stopped service is a network error; both recover', async () => {
    await using imds = await startImds();
    await using client = new ImdsClient({ endpoint: imds.url, timeoutMs: 100 });
    expect((await client.get('meta-data/instance-id')).status).toBe(200);

    imds.emulator.injectFault({ path: '/latest/meta-data/instance-id', delayMs: 2000, status: 200, body: 'late' });
    expect(await rejection(client.get('meta-data/instance-id'))).toMatchObject({ kind: 'timeout' });
    expect((await client.get('meta-data/instance-id')).status).toBe(200);

    await imds.stop();
    const refused = await rejection(client.get('meta-data/instance-id'));
    expect(refused.kind).toBe('network');
    expect(refused.message).toMatch(/ECONNREFUSED/);
    await imds.restart();
    expect((await client.get('meta-data/instance-id')).status).toBe(200);
  });

  test('an abort signal stops the wait; a closed client refuses', async () => {
    await using imds = await startImds();
    const client = new ImdsClient({ endpoint: imds.url, timeoutMs: 10_000 });
    await client.get('meta-data/instance-id');
    imds.emulator.injectFault({ path: '/latest/meta-data/instance-id', delayMs: 5000, status: 200 });
    const ac = new AbortController();
    const pending = client.get('meta-data/instance-id', { signal: ac.signal });
    ac.abort(new Error('stop now'));
    await expect(pending).rejects.toThrow('stop now');
    await expect(client.get('meta-data/instance-id', { signal: AbortSignal.abort(new Error('already')) })).rejects.toThrow('already');
    await client.close();
    await client.close();
    expect(await rejection(client.get('meta-data/instance-id'))).toMatchObject({ kind: 'closed' });
  });
});
