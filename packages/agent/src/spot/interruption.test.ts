import { describe, expect, it } from 'vitest';
import type { FlushResult, InterruptionReport } from '@spotctl/shared';
import { InterruptionHandler, type InterruptionHandlerOptions } from './interruption.ts';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const NOW = Date.parse('2026-11-22T10:00:00Z');
const flushed: FlushResult = { committedSeq: 7, files: 1, bytes: 10, uploadedBytes: 10, durationMs: 5, error: null };

function handler(over: Partial<InterruptionHandlerOptions> = {}) {
  const calls: { stop: number[]; reports: InterruptionReport[]; flushes: string[] } = { stop: [], reports: [], flushes: [] };
  const h = new InterruptionHandler({
    graceMs: 90_000,
    stopJob: (g) => calls.stop.push(g),
    signalJob: () => undefined,
    jobEnded: async () => ({ endedAt: NOW + 50, killed: false }),
    isJobActive: () => true,
    checkpoints: {
      pendingBytes: () => 0,
      lastSetBytes: () => 0,
      flush: async (reason) => (calls.flushes.push(reason), flushed),
      describe: () => 's3://b/p/run/',
    },
    simulated: false,
    onNotice: () => undefined,
    onRebalanceEvent: () => undefined,
    onReport: (r) => calls.reports.push(r),
    logger: quiet,
    now: () => NOW,
    ...over,
  });
  return { h, calls };
}

describe('InterruptionHandler', () => {
  it('grants the configured grace when the deadline allows it, then flushes and reports', async () => {
    const { h, calls } = handler();
    h.onInterruption({ action: 'terminate', time: '2026-11-22T10:02:00Z' }, NOW);
    const report = await h.handling;
    expect(calls.stop).toEqual([90_000]);
    expect(calls.flushes).toEqual(['interruption']);
    expect(report?.flush?.committedSeq).toBe(7);
    expect(report?.notice.deadlineAt).toBe(NOW + 120_000);
  });

  it('budgets the grace for a save the size of the last set, against the notice time', async () => {
    // 5 GB at the assumed 50 MB/s is 100 s of upload: 120 s − 100 s − 10 s margin leaves 10 s.
    const { h, calls } = handler({
      checkpoints: { pendingBytes: () => 0, lastSetBytes: () => 5_000_000_000, flush: async () => flushed, describe: () => 'x' },
    });
    h.onInterruption({ action: 'terminate', time: '2026-11-22T10:02:00Z' }, NOW);
    await h.handling;
    expect(calls.stop).toEqual([10_000]);
  });

  it('a rebalance flushes (not final) and hands its outcome on, so "nothing changed" can be said', async () => {
    const unchanged: FlushResult = { ...flushed, uploadedBytes: 0, unchanged: true };
    let flushedWith: { final?: boolean } | undefined;
    const outcome = new Promise<FlushResult>((resolve) => {
      const { h } = handler({
        checkpoints: {
          pendingBytes: () => 0,
          lastSetBytes: () => 0,
          flush: async (_reason, o) => ((flushedWith = o), unchanged),
          describe: () => 'x',
        },
        onRebalanceFlushed: resolve,
      });
      h.onRebalance({ noticeTime: '2026-11-22T09:59:00Z' });
    });
    expect(await outcome).toEqual(unchanged);
    expect(flushedWith).toEqual({ final: false });
  });

  it('acts on the first notice only', async () => {
    const { h, calls } = handler();
    h.onInterruption({ action: 'terminate', time: '2026-11-22T10:02:00Z' }, NOW);
    h.onInterruption({ action: 'stop', time: '2026-11-22T10:03:00Z' }, NOW + 1000);
    await h.handling;
    expect(calls.stop).toHaveLength(1);
    expect(calls.reports).toHaveLength(1);
  });

  it('flushes before the deadline even when the job never ends', async () => {
    const { h, calls } = handler({ jobEnded: () => new Promise(() => undefined), now: () => Date.now() });
    // A deadline 10.2 s away: the flush must start about 0.2 s from now, not wait for the job.
    const time = new Date(Date.now() + 10_200).toISOString();
    h.onInterruption({ action: 'terminate', time }, Date.now());
    const report = await h.handling;
    expect(report?.jobEndedAt).toBeNull();
    expect(calls.flushes).toEqual(['interruption']);
  });
});
