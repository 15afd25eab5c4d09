import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { CheckpointFailedEvent, InterruptionReport } from '@spotctl/shared';
import { Output } from '../output/output.ts';
import { CHECKPOINT_FAILURE_SUMMARY_MS, describeReport, spotEventPrinter } from './spot-events.ts';

function captured(): { out: Output; lines: () => string[] } {
  const stderr = new PassThrough();
  const chunks: string[] = [];
  stderr.on('data', (d: Buffer) => chunks.push(d.toString()));
  const out = new Output({ stdout: new PassThrough(), stderr });
  return { out, lines: () => chunks.join('').split('\n').filter(Boolean) };
}

const T0 = Date.parse('2026-12-06T01:00:00Z');

function failure(n: number, over: Partial<CheckpointFailedEvent> = {}): CheckpointFailedEvent {
  return {
    type: 'event',
    event: 'checkpoint-failed',
    what: 'upload',
    file: 'state.bin',
    message: `refused #${n}`,
    failures: n,
    failingSince: T0,
    target: 's3://b/p/run/',
    ...over,
  };
}

describe('spotEventPrinter: failing checkpoints', () => {
  it('shows the first failure at once, then a summary at most every 30 s, then the recovery', () => {
    const { out, lines } = captured();
    let now = T0;
    const print = spotEventPrinter(out, { now: () => now });
    print(failure(1));
    expect(lines()).toHaveLength(1);
    expect(lines()[0]).toMatch(
      /checkpoint upload of state\.bin failed: refused #1; retrying\. check that the host can write to s3:\/\/b\/p\/run\//,
    );
    // Failures inside the window are counted, not shown.
    for (let n = 2; n <= 6; n++) {
      now += 5_000;
      print(failure(n, n === 4 ? { what: 'commit', file: null } : { file: n % 2 ? 'a.bin' : 'state.bin' }));
    }
    expect(lines()).toHaveLength(1);
    now = T0 + CHECKPOINT_FAILURE_SUMMARY_MS;
    print(failure(7));
    expect(lines()).toHaveLength(2);
    expect(lines()[1]).toMatch(
      /checkpoints still not getting through: 6 more failures in the last 30\.0 s \(2 files, 1 commits\), 7 since 30\.0 s ago; last error: refused #7\. check that/,
    );
    now += 1_000;
    print(failure(8));
    expect(lines()).toHaveLength(2);
    print({
      type: 'event',
      event: 'checkpoint',
      seq: 3,
      files: 2,
      bytes: 2_097_171,
      uploadedBytes: 2_097_171,
      reason: 'settled',
      durationMs: 1500,
    });
    expect(lines().slice(2)).toEqual([
      'spotctl checkpoints get through again: set #3 committed',
      'spotctl checkpoint #3 committed (settled): 2 files, 2.0 MiB, sent 2.0 MiB in 1.5 s',
    ]);
    // A new outage starts a new count, shown at once again.
    print(failure(1));
    expect(lines()).toHaveLength(5);
  });

  it("leaves the interruption's set to the report, so each set is told once", () => {
    const { out, lines } = captured();
    const print = spotEventPrinter(out, { now: () => T0 });
    print({ type: 'event', event: 'checkpoint', seq: 4, files: 1, bytes: 10, uploadedBytes: 10, reason: 'interruption', durationMs: 5 });
    expect(lines()).toEqual([]);
  });
});

describe('describeReport', () => {
  const base: InterruptionReport = {
    notice: {
      action: 'terminate',
      time: '2026-12-06T01:02:00Z',
      noticedAt: T0,
      deadlineAt: T0 + 120_000,
      graceMs: 90_000,
      pendingBytes: 0,
    },
    sigtermAt: T0,
    jobEndedAt: T0 + 1000,
    killed: false,
    flush: { committedSeq: 5, files: 1, bytes: 2_097_171, uploadedBytes: 2_097_171, durationMs: 800, error: null },
    target: 's3://b/p/run/',
    simulated: false,
  };

  it('tells a new set, an unchanged one and an empty folder apart, in human units', () => {
    expect(describeReport(base)).toMatch(/final checkpoint #5: 1 files, 2\.0 MiB \(sent 2\.0 MiB in 800 ms\) → s3:\/\/b\/p\/run\//);
    expect(describeReport({ ...base, flush: { ...base.flush!, unchanged: true, uploadedBytes: 0 } })).toMatch(
      /final checkpoint: nothing changed since set #5 \(1 files, 2\.0 MiB\)/,
    );
    expect(
      describeReport({ ...base, flush: { ...base.flush!, committedSeq: null, files: 0, bytes: 0, uploadedBytes: 0, unchanged: true } }),
    ).toMatch(/the checkpoint folder was empty: nothing to save/);
  });

  it('never ends as "unknown error": a failure says what failed and what got through', () => {
    const text = describeReport({
      ...base,
      flush: {
        committedSeq: null,
        files: 0,
        bytes: 0,
        uploadedBytes: 0,
        durationMs: 0,
        error: 'the deadline had already passed when the flush began (1500 ms late): nothing was uploaded',
      },
    });
    expect(text).not.toContain('unknown error');
    expect(text).toMatch(/final checkpoint failed after 0 ms: the deadline had already passed .*; no set got through/);
  });
});
