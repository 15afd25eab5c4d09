import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { IdleWatchdog, type IdleWatchdogOptions, type ShutdownReason, type WatchdogClock } from './idle-watchdog.ts';

/** A clock that only moves when told to; intervals fire as time passes them. */
class FakeClock implements WatchdogClock {
  #now = 1_700_000_000_000;
  #nextId = 1;
  readonly #timers = new Map<number, { callback: () => void; intervalMs: number; dueAt: number; once: boolean }>();

  now(): number {
    return this.#now;
  }

  setInterval(callback: () => void, intervalMs: number): unknown {
    const id = this.#nextId++;
    this.#timers.set(id, { callback, intervalMs, dueAt: this.#now + intervalMs, once: false });
    return id;
  }

  setTimeout(callback: () => void, delayMs: number): unknown {
    const id = this.#nextId++;
    this.#timers.set(id, { callback, intervalMs: delayMs, dueAt: this.#now + delayMs, once: true });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  clearInterval(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  get activeTimers(): number {
    return this.#timers.size;
  }

  advance(ms: number): void {
    const end = this.#now + ms;
    for (;;) {
      const due = [...this.#timers.entries()].filter(([, t]) => t.dueAt <= end).sort((a, b) => a[1].dueAt - b[1].dueAt)[0];
      if (!due) break;
      const [id, timer] = due;
      this.#now = timer.dueAt;
      if (timer.once) this.#timers.delete(id);
      timer.dueAt += timer.intervalMs;
      timer.callback();
    }
    this.#now = end;
  }
}

const logger = pino({ level: 'silent' });
let dir: string;
let heartbeatPath: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spotctl-watchdog-'));
  heartbeatPath = path.join(dir, 'heartbeat');
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

interface World {
  clock: FakeClock;
  watchdog: IdleWatchdog;
  fired: ShutdownReason[];
  maxRuntimeCalls: number;
  job: { active: boolean; startedAt: number | null };
  clients: number;
}

function world(options: Partial<IdleWatchdogOptions> = {}): World {
  const clock = new FakeClock();
  const w: World = {
    clock,
    fired: [],
    maxRuntimeCalls: 0,
    job: { active: false, startedAt: null },
    clients: 0,
    watchdog: undefined as unknown as IdleWatchdog,
  };
  w.watchdog = new IdleWatchdog({
    idleTimeoutMs: 10_000,
    heartbeatPath,
    clock,
    logger,
    isJobActive: () => w.job.active,
    jobStartedAt: () => w.job.startedAt,
    clientCount: () => w.clients,
    onMaxRuntime: () => {
      w.maxRuntimeCalls += 1;
    },
    onShutdown: (reason) => w.fired.push(reason),
    ...options,
  });
  return w;
}

/** Sets the heartbeat file's mtime to the fake clock's now, as `touch` would. */
function touchHeartbeat(clock: FakeClock): void {
  fs.writeFileSync(heartbeatPath, '');
  const seconds = clock.now() / 1000;
  fs.utimesSync(heartbeatPath, seconds, seconds);
}

describe('IdleWatchdog', () => {
  test('checks every min(5 s, idleTimeout/4)', () => {
    expect(world({ idleTimeoutMs: 300_000 }).watchdog.checkIntervalMs).toBe(5000);
    expect(world({ idleTimeoutMs: 1500 }).watchdog.checkIntervalMs).toBe(375);
  });

  test('fires once after the idle timeout, not before', () => {
    const w = world();
    w.watchdog.start();
    w.clock.advance(10_000);
    expect(w.fired).toEqual([]);
    w.clock.advance(2500);
    expect(w.fired).toEqual(['idle']);
    // Fired once, and its timer is gone.
    w.clock.advance(60_000);
    w.watchdog.check();
    expect(w.fired).toEqual(['idle']);
    expect(w.clock.activeTimers).toBe(0);
  });

  test('a running job keeps it alive; the idle period starts when the job ends', () => {
    const w = world();
    w.job = { active: true, startedAt: w.clock.now() };
    w.watchdog.start();
    w.clock.advance(60_000);
    expect(w.fired).toEqual([]);
    w.clock.advance(1234);
    w.job.active = false;
    w.watchdog.markActive();
    w.clock.advance(10_000);
    expect(w.fired).toEqual([]);
    w.clock.advance(2500);
    expect(w.fired).toEqual(['idle']);
  });

  test('a connected client keeps it alive', () => {
    const w = world();
    w.clients = 1;
    w.watchdog.start();
    w.clock.advance(120_000);
    expect(w.fired).toEqual([]);
    w.clients = 0;
    w.watchdog.markActive();
    w.clock.advance(9000);
    expect(w.fired).toEqual([]);
    // The next check after the 10 s mark (checks run every 2.5 s).
    w.clock.advance(4000);
    expect(w.fired).toEqual(['idle']);
  });

  test('touching the heartbeat file keeps it alive; it fires idleTimeout after the last touch', () => {
    const w = world();
    w.watchdog.start();
    for (let i = 0; i < 20; i++) {
      w.clock.advance(3000);
      touchHeartbeat(w.clock);
    }
    expect(w.fired).toEqual([]);
    const lastTouch = w.clock.now();
    w.clock.advance(10_000);
    expect(w.fired).toEqual([]);
    w.clock.advance(5000);
    expect(w.fired).toEqual(['idle']);
    expect(w.clock.now() - lastTouch).toBeGreaterThan(10_000);
  });

  test('an old heartbeat or one far in the future does not count', () => {
    const w = world();
    fs.writeFileSync(heartbeatPath, '');
    const past = (w.clock.now() - 3_600_000) / 1000;
    fs.utimesSync(heartbeatPath, past, past);
    w.watchdog.start();
    w.clock.advance(15_000);
    expect(w.fired).toEqual(['idle']);

    const w2 = world();
    const future = (w2.clock.now() + 86_400_000) / 1000;
    fs.utimesSync(heartbeatPath, future, future);
    w2.watchdog.start();
    w2.clock.advance(15_000);
    expect(w2.fired).toEqual(['idle']);
  });

  test('max runtime stops the job once, then shuts down when the job has ended', () => {
    const w = world({ maxRuntimeMs: 30_000 });
    w.job = { active: true, startedAt: w.clock.now() };
    w.watchdog.start();
    w.clock.advance(29_000);
    expect(w.maxRuntimeCalls).toBe(0);
    w.clock.advance(5000);
    expect(w.maxRuntimeCalls).toBe(1);
    // Still stopping (grace period), and a client is watching: no shutdown yet, no second stop.
    w.clients = 1;
    w.clock.advance(20_000);
    expect(w.maxRuntimeCalls).toBe(1);
    expect(w.fired).toEqual([]);
    w.job.active = false;
    w.watchdog.check();
    expect(w.fired).toEqual(['max-runtime']);
  });

  test('max runtime acts at its deadline, not at the next 5 s check', () => {
    const w = world({ maxRuntimeMs: 12_345, idleTimeoutMs: 300_000 });
    expect(w.watchdog.checkIntervalMs).toBe(5000);
    w.job = { active: true, startedAt: w.clock.now() };
    w.watchdog.start();
    w.clock.advance(12_344);
    expect(w.maxRuntimeCalls).toBe(0);
    w.clock.advance(1);
    expect(w.maxRuntimeCalls).toBe(1);
  });

  test('a job that starts after the watchdog gets its deadline armed at the next check', () => {
    const w = world({ maxRuntimeMs: 7_500, idleTimeoutMs: 300_000 });
    w.job = { active: true, startedAt: null };
    w.watchdog.start();
    w.clock.advance(1000);
    w.job.startedAt = w.clock.now();
    w.watchdog.check();
    w.clock.advance(7_499);
    expect(w.maxRuntimeCalls).toBe(0);
    w.clock.advance(1);
    expect(w.maxRuntimeCalls).toBe(1);
  });

  test('close stops the checks', () => {
    const w = world();
    w.watchdog.start();
    w.watchdog.close();
    w.clock.advance(60_000);
    expect(w.fired).toEqual([]);
    expect(w.clock.activeTimers).toBe(0);
  });
});
