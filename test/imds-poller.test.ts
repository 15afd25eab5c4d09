/**
 * SpotPoller against the real emulator on 127.0.0.1: one callback per notice, rebalance keeps
 * being watched, every kind of poll failure is logged (rate-limited) and retried, polls never
 * overlap. Latency and CPU are printed, not asserted (numbers belong in bench/).
 */
import { describe, expect, test } from 'vitest';
import type { InstanceAction, RebalanceRecommendation } from '@spotctl/shared';
import {
  ImdsClient,
  INSTANCE_ACTION_PATH,
  REBALANCE_PATH,
  SpotPoller,
  type ImdsGetter,
  type PollClock,
  type SpotPollerOptions,
} from '@spotctl/agent';
import { memoryLogger, startImds, type TestImds } from './helpers/imds.ts';
import { waitFor } from './helpers/read-until.ts';

const ACTION_URL_PATH = '/latest/meta-data/spot/instance-action';
const REBALANCE_URL_PATH = '/latest/meta-data/events/recommendations/rebalance';

interface Seen {
  interruptions: Array<{ action: InstanceAction; noticedAt: number }>;
  rebalances: Array<{ rec: RebalanceRecommendation; noticedAt: number }>;
}

function poller(imds: TestImds, options: Partial<SpotPollerOptions> = {}) {
  const seen: Seen = { interruptions: [], rebalances: [] };
  const log = memoryLogger();
  const p = new SpotPoller({
    endpoint: imds.url,
    pollIntervalMs: 20,
    rebalancePollIntervalMs: 20,
    logger: log.logger,
    onInterruption: (action, noticedAt) => void seen.interruptions.push({ action, noticedAt }),
    onRebalance: (rec, noticedAt) => void seen.rebalances.push({ rec, noticedAt }),
    ...options,
  });
  return { poller: p, seen, log };
}

class ManualClock {
  t = Date.UTC(2026, 10, 22, 9, 58, 0);
  now(): number {
    return this.t;
  }
}

describe('SpotPoller', () => {
  test('one callback per notice; the instance-action poll stops, the rebalance poll goes on', async () => {
    await using imds = await startImds();
    const { poller: p, seen, log } = poller(imds);
    await using _ = p;
    p.start();
    p.start(); // idempotent
    await waitFor(() => imds.emulator.countFor(ACTION_URL_PATH) >= 3, { what: 'a few 404 polls' });
    expect(seen.interruptions).toEqual([]);

    const scheduled = imds.emulator.scheduleInterruption();
    await waitFor(() => seen.interruptions.length > 0, { what: 'the interruption callback' });
    expect(seen.interruptions[0]?.action).toEqual({ action: 'terminate', time: scheduled.time });
    expect(p.interruption?.action).toEqual({ action: 'terminate', time: scheduled.time });
    const actionPolls = imds.emulator.countFor(ACTION_URL_PATH);

    const rebalancePolls = imds.emulator.countFor(REBALANCE_URL_PATH);
    await waitFor(() => imds.emulator.countFor(REBALANCE_URL_PATH) >= rebalancePolls + 5, { what: 'more rebalance polls' });
    expect(imds.emulator.countFor(ACTION_URL_PATH)).toBe(actionPolls);
    expect(seen.interruptions).toHaveLength(1);
    expect(imds.emulator.requests.tokenPuts).toBe(1);
    expect(log.at('warn').map((e) => e.msg)).toEqual(['spot interruption notice']);
    // pino writes its own `time`: the notice's goes under another key so JSON readers keep both.
    expect(log.at('warn')[0]?.obj).toMatchObject({ action: 'terminate', deadline: scheduled.time });
    expect(log.at('warn')[0]?.obj).not.toHaveProperty('time');
  });

  test('a rebalance recommendation is delivered once per distinct noticeTime', async () => {
    const clock = new ManualClock();
    await using imds = await startImds({ clock });
    const { poller: p, seen } = poller(imds);
    await using _ = p;
    p.start();
    const first = imds.emulator.recommendRebalance();
    await waitFor(() => seen.rebalances.length > 0, { what: 'the rebalance callback' });
    const polls = imds.emulator.countFor(REBALANCE_URL_PATH);
    await waitFor(() => imds.emulator.countFor(REBALANCE_URL_PATH) >= polls + 5, { what: 'more rebalance polls' });
    expect(seen.rebalances.map((r) => r.rec)).toEqual([{ noticeTime: first }]);

    clock.t += 5000;
    const second = imds.emulator.recommendRebalance();
    await waitFor(() => seen.rebalances.length > 1, { what: 'the second rebalance callback' });
    expect(seen.rebalances.map((r) => r.rec)).toEqual([{ noticeTime: first }, { noticeTime: second }]);
    expect(seen.interruptions).toEqual([]);
  });

  test('a stopped metadata service is logged once (rate-limited) and retried until it is back', async () => {
    await using imds = await startImds();
    const { poller: p, seen, log } = poller(imds, { pollIntervalMs: 10, rebalancePollIntervalMs: 10 });
    await using _ = p;
    p.start();
    await waitFor(() => p.stats.instanceActionPolls >= 2, { what: 'polls' });
    await imds.stop();
    const before = p.stats.errors;
    await waitFor(() => p.stats.errors >= before + 20, { what: 'failing polls' });
    const warns = log.at('warn').filter((e) => e.msg === 'metadata poll failed; retrying');
    console.log(warns.map((w) => `${String(w.obj.path)}: ${String(w.obj.err)}`));
    // A poll in flight when the server went away may fail differently (reset) first; after that,
    // one line per path however many refusals follow.
    for (const path of [INSTANCE_ACTION_PATH, REBALANCE_PATH]) {
      const refused = warns.filter((w) => w.obj.path === path && /ECONNREFUSED/.test(String(w.obj.err)));
      expect(refused, path).toHaveLength(1);
      expect(warns.filter((w) => w.obj.path === path).length, path).toBeLessThanOrEqual(2);
    }
    expect(log.at('debug').length).toBeGreaterThanOrEqual(16);

    await imds.restart();
    imds.emulator.scheduleInterruption({ action: 'stop' });
    await waitFor(() => seen.interruptions.length > 0, { what: 'the interruption after the restart' });
    expect(seen.interruptions[0]?.action.action).toBe('stop');
    expect(log.at('info').filter((e) => e.msg === 'metadata poll works again').length).toBeGreaterThanOrEqual(1);
    expect(log.at('error')).toEqual([]);
  });

  test('5xx, bad JSON, a wrong shape and timeouts are each logged and retried', async () => {
    await using imds = await startImds();
    const { poller: p, seen, log } = poller(imds, { pollIntervalMs: 10, rebalancePollIntervalMs: 1000, requestTimeoutMs: 250 });
    await using _ = p;
    const e = imds.emulator;
    e.injectFault({ path: ACTION_URL_PATH, status: 500, times: 2 });
    e.injectFault({ path: ACTION_URL_PATH, status: 200, body: '{"action":"terminate","time":' });
    e.injectFault({ path: ACTION_URL_PATH, status: 200, body: '[]' });
    e.injectFault({ path: ACTION_URL_PATH, status: 200, body: '{"action":"terminate"}' });
    e.injectFault({ path: ACTION_URL_PATH, status: 200, delayMs: 1000, body: '{"action":"terminate","time":"2026-11-22T10:00:00Z"}' });
    e.scheduleInterruption({ action: 'hibernate' });
    p.start();
    await waitFor(() => seen.interruptions.length > 0, { what: 'the interruption after the faults' });
    expect(seen.interruptions.map((i) => i.action.action)).toEqual(['hibernate']);
    const errs = log
      .at('warn')
      .filter((w) => w.msg === 'metadata poll failed; retrying')
      .map((w) => String(w.obj.err));
    // Each distinct failure is logged; the second identical 500 is not. (Contained rather than
    // equal: on a loaded machine an ordinary poll may also time out.)
    expect(errs).toEqual(
      expect.arrayContaining([
        'HTTP 500',
        expect.stringMatching(/not JSON/),
        'body is not a JSON object',
        'instance-action body has no "time"',
        expect.stringMatching(/timed out after 250 ms/),
      ]),
    );
    expect(errs.filter((m) => m === 'HTTP 500')).toHaveLength(1);
    expect(p.stats.errors).toBeGreaterThanOrEqual(6);
  });

  test('a notice with an action this code does not know is handled as terminate', async () => {
    await using imds = await startImds();
    const { poller: p, seen, log } = poller(imds);
    await using _ = p;
    imds.emulator.injectFault({ path: ACTION_URL_PATH, status: 200, body: '{"action":"reboot","time":"2026-11-22T10:00:00Z"}' });
    p.start();
    await waitFor(() => seen.interruptions.length > 0, { what: 'the interruption' });
    expect(seen.interruptions[0]?.action).toEqual({ action: 'terminate', time: '2026-11-22T10:00:00Z' });
    expect(log.at('warn').some((w) => w.obj.action === 'reboot')).toBe(true);
  });

  test('a throwing callback is logged and polling goes on', async () => {
    await using imds = await startImds();
    const {
      poller: p,
      seen,
      log,
    } = poller(imds, {
      onInterruption: () => {
        throw new Error('handler bug');
      },
    });
    await using _ = p;
    p.start();
    imds.emulator.scheduleInterruption();
    await waitFor(() => log.at('error').length > 0, { what: 'the error log' });
    expect(log.at('error')[0]?.obj).toMatchObject({ err: 'handler bug', callback: 'onInterruption' });
    imds.emulator.recommendRebalance();
    await waitFor(() => seen.rebalances.length > 0, { what: 'a rebalance after the throw' });
  });

  test('polls never overlap, even when the service is slower than the interval', async () => {
    await using imds = await startImds();
    await using client = new ImdsClient({ endpoint: imds.url, timeoutMs: 5000 });
    const inFlight = new Map<string, number>();
    const maxInFlight = new Map<string, number>();
    // Our real client, counted: not a mock.
    const counted: ImdsGetter = {
      async get(path, options) {
        inFlight.set(path, (inFlight.get(path) ?? 0) + 1);
        maxInFlight.set(path, Math.max(maxInFlight.get(path) ?? 0, inFlight.get(path) ?? 0));
        try {
          return await client.get(path, options);
        } finally {
          inFlight.set(path, (inFlight.get(path) ?? 1) - 1);
        }
      },
    };
    imds.emulator.injectFault({ path: ACTION_URL_PATH, status: 404, delayMs: 150, times: 3 });
    imds.emulator.injectFault({ path: REBALANCE_URL_PATH, status: 404, delayMs: 150, times: 3 });
    const { poller: p } = poller(imds, { client: counted, pollIntervalMs: 5, rebalancePollIntervalMs: 5 });
    await using _ = p;
    p.start();
    await waitFor(() => p.stats.instanceActionPolls >= 10 && p.stats.rebalancePolls >= 10, { what: 'polls' });
    expect(maxInFlight.get(INSTANCE_ACTION_PATH)).toBe(1);
    expect(maxInFlight.get(REBALANCE_PATH)).toBe(1);
    await p.close();
    // A shared client is not the poller's to close.
    expect((await client.get('meta-data/instance-id')).status).toBe(200);
  });

  test('with an injected clock: the next poll is armed only after the previous one finished, close() disarms', async () => {
    await using imds = await startImds();
    const timers = new Map<number, { callback: () => void; delayMs: number }>();
    let nextId = 1;
    const clock: PollClock = {
      now: () => 1_000_000,
      setTimeout: (callback, delayMs) => {
        timers.set(nextId, { callback, delayMs });
        return nextId++;
      },
      clearTimeout: (handle) => void timers.delete(handle as number),
    };
    const fire = (): void => {
      const due = [...timers.entries()];
      timers.clear();
      for (const [, t] of due) t.callback();
    };
    const { poller: p } = poller(imds, { clock, pollIntervalMs: 1000, rebalancePollIntervalMs: 5000 });
    p.start();
    expect([...timers.values()].map((t) => t.delayMs)).toEqual([0, 0]);
    fire();
    // Both polls are in flight: nothing is armed until they finish.
    expect(timers.size).toBe(0);
    await waitFor(() => timers.size === 2, { what: 'both polls re-armed' });
    expect([...timers.values()].map((t) => t.delayMs).sort((a, b) => a - b)).toEqual([1000, 5000]);
    expect(p.stats).toEqual({ instanceActionPolls: 1, rebalancePolls: 1, errors: 0 });
    await p.close();
    expect(timers.size).toBe(0);
  });

  test('close() aborts a hung poll and resolves', async () => {
    await using imds = await startImds();
    imds.emulator.injectFault({ path: ACTION_URL_PATH, status: 404, delayMs: 30_000 });
    const { poller: p, log } = poller(imds, { requestTimeoutMs: 60_000, rebalancePollIntervalMs: 60_000 });
    p.start();
    await waitFor(() => imds.emulator.requests.gets >= 1, { what: 'the hung poll' });
    await p.close();
    await p.close();
    // An aborted poll is not a failure to report.
    expect(log.at('warn')).toEqual([]);
  });
});

describe('SpotPoller measurements (printed, not asserted)', () => {
  test('notice → detection latency with the default 1 s poll', async () => {
    const trials = 6;
    const results = await Promise.all(
      Array.from({ length: trials }, async (_, i) => {
        await using imds = await startImds();
        const { poller: p, seen } = poller(imds, { pollIntervalMs: 1000, rebalancePollIntervalMs: 5000 });
        await using _p = p;
        p.start();
        // Spread the notice over the poll phase: 1.0 s … 1.83 s after the start.
        const { noticeAt } = imds.emulator.scheduleInterruption({ inMs: 1000 + Math.round((i * 1000) / trials) });
        await waitFor(() => seen.interruptions.length > 0, { what: 'the interruption', timeoutMs: 10_000, intervalMs: 5 });
        const noticedAt = seen.interruptions[0]?.noticedAt ?? NaN;
        return { latencyMs: noticedAt - noticeAt, servedAfterMs: (imds.emulator.noticeServedAt ?? NaN) - noticeAt };
      }),
    );
    const latencies = results.map((r) => r.latencyMs).sort((a, b) => a - b);
    const mean = latencies.reduce((s, v) => s + v, 0) / latencies.length;
    console.log(
      `[imds] notice → onInterruption with pollIntervalMs 1000 over ${trials} trials: ` +
        `min ${latencies[0]} ms, mean ${mean.toFixed(0)} ms, max ${latencies.at(-1)} ms ` +
        `(served→callback overhead ≤ ${Math.max(...results.map((r) => r.latencyMs - r.servedAfterMs))} ms)`,
    );
    expect(results.every((r) => Number.isFinite(r.latencyMs))).toBe(true);
  });

  test('CPU per poll', async () => {
    await using imds = await startImds();
    const { poller: p } = poller(imds, { pollIntervalMs: 2, rebalancePollIntervalMs: 1000 });
    await using _ = p;
    const cpu = process.cpuUsage();
    const started = performance.now();
    p.start();
    await waitFor(() => p.stats.instanceActionPolls >= 400, { what: '400 polls', intervalMs: 10 });
    const used = process.cpuUsage(cpu);
    const polls = p.stats.instanceActionPolls;
    const perPollUs = (used.user + used.system) / polls;
    console.log(
      `[imds] ${polls} polls in ${(performance.now() - started).toFixed(0)} ms: ${perPollUs.toFixed(0)} µs CPU per poll ` +
        `(client and emulator together, one process) → ~${(perPollUs / 10_000).toFixed(3)} % of a core at 1 poll/s`,
    );
    expect(imds.emulator.requests.tokenPuts).toBe(1);
  });
});
