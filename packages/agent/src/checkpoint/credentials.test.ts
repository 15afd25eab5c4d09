import { expect, test } from 'vitest';
import { ForwardedCredentials, type AwsCredentials } from './credentials.ts';

const pushed = (n: number, expiresAt: number) => ({
  accessKeyId: `ASIA${n}`,
  secretAccessKey: `secret-${n}`,
  sessionToken: `token-${n}`,
  expiresAt,
});

function recorder() {
  const lines: Array<{ obj: unknown; msg: string | undefined }> = [];
  const log = (obj: unknown, msg?: string) => lines.push({ obj, msg });
  return { lines, logger: { info: log, warn: log, error: log, debug: log } };
}

test('a request waits for the first pushed set, then always gets the newest', async () => {
  let now = 1_000_000;
  const host = { calls: 0 };
  const creds = new ForwardedCredentials({
    waitMs: 3_600_000,
    now: () => now,
    hostChain: () => {
      host.calls++;
      return Promise.resolve({ accessKeyId: 'HOST', secretAccessKey: 'host' });
    },
  });
  const first = creds.provider();
  creds.set(pushed(1, now + 900_000));
  expect(await first).toEqual({
    accessKeyId: 'ASIA1',
    secretAccessKey: 'secret-1',
    sessionToken: 'token-1',
    expiration: new Date(now + 900_000),
  });
  creds.set(pushed(2, now + 1_800_000));
  expect((await creds.provider()).accessKeyId).toBe('ASIA2');
  now += 1_800_001;
  // Expired and not renewed (the controller is gone): the host's own chain, re-asked within a minute.
  const fallback: AwsCredentials = await creds.provider();
  expect(fallback.accessKeyId).toBe('HOST');
  expect(fallback.expiration?.getTime()).toBeLessThanOrEqual(now + 60_000);
  creds.set(pushed(3, now + 900_000));
  expect((await creds.provider()).accessKeyId).toBe('ASIA3');
  expect(host.calls).toBe(1);
});

test('without a push within the wait, the host chain is used with one warning that never shows the keys', async () => {
  const { lines, logger } = recorder();
  const creds = new ForwardedCredentials({
    waitMs: 0,
    logger,
    hostChain: () => Promise.resolve({ accessKeyId: 'HOST', secretAccessKey: 'host' }),
  });
  expect((await creds.provider()).accessKeyId).toBe('HOST');
  expect((await creds.provider()).accessKeyId).toBe('HOST');
  expect(lines.filter((l) => /host's own AWS credential chain/.test(l.msg ?? ''))).toHaveLength(1);
  creds.set(pushed(1, Date.now() + 900_000));
  expect(JSON.stringify(lines)).not.toMatch(/secret-1|token-1/);
});

test('close wakes a waiting request', async () => {
  const creds = new ForwardedCredentials({
    waitMs: 3_600_000,
    hostChain: () => Promise.resolve({ accessKeyId: 'HOST', secretAccessKey: 'host' }),
  });
  const waiting = creds.provider();
  creds.close();
  expect((await waiting).accessKeyId).toBe('HOST');
});
