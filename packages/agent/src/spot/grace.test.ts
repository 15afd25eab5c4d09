import { describe, expect, test } from 'vitest';
import { DEFAULT_NOTICE_LEAD_MS, deadlineFromNotice, estimateUploadMs, interruptionGraceMs, MIN_UPLOAD_MS, parseIsoTime } from './grace.ts';

const NOW = Date.UTC(2026, 10, 22, 9, 58, 0);
const DEADLINE = Date.UTC(2026, 10, 22, 10, 0, 0); // two minutes later

describe('interruptionGraceMs', () => {
  test('the configured grace when the deadline leaves room for it', () => {
    expect(interruptionGraceMs({ configuredGraceMs: 30_000, deadlineAt: DEADLINE, now: NOW, estimatedUploadMs: 5000 })).toBe(30_000);
  });

  test('budgeted against the deadline: upload and safety margin come off first', () => {
    // 120 s - 20 s upload - 10 s margin = 90 s < 100 s configured.
    expect(interruptionGraceMs({ configuredGraceMs: 100_000, deadlineAt: DEADLINE, now: NOW, estimatedUploadMs: 20_000 })).toBe(90_000);
    expect(
      interruptionGraceMs({
        configuredGraceMs: 100_000,
        deadlineAt: DEADLINE,
        now: NOW,
        estimatedUploadMs: 20_000,
        safetyMarginMs: 30_000,
      }),
    ).toBe(70_000);
  });

  test('a notice seen late leaves less: the budget runs from the deadline, not from noticing', () => {
    const late = NOW + 45_000;
    expect(interruptionGraceMs({ configuredGraceMs: 90_000, deadlineAt: DEADLINE, now: late, estimatedUploadMs: 1000 })).toBe(64_000);
  });

  test('never negative: a deadline already past, or no time left after the upload', () => {
    expect(interruptionGraceMs({ configuredGraceMs: 90_000, deadlineAt: NOW - 1000, now: NOW, estimatedUploadMs: 0 })).toBe(0);
    expect(interruptionGraceMs({ configuredGraceMs: 90_000, deadlineAt: DEADLINE, now: NOW, estimatedUploadMs: 200_000 })).toBe(0);
    // Hibernation: the deadline is the notice time itself.
    expect(interruptionGraceMs({ configuredGraceMs: 90_000, deadlineAt: NOW, now: NOW, estimatedUploadMs: 0 })).toBe(0);
  });

  test('whole milliseconds, and 0 (not a forever timer) for nonsense input', () => {
    expect(interruptionGraceMs({ configuredGraceMs: 90_000, deadlineAt: DEADLINE + 0.7, now: NOW, estimatedUploadMs: 100_000.2 })).toBe(
      10_000,
    );
    expect(interruptionGraceMs({ configuredGraceMs: Number.NaN, deadlineAt: DEADLINE, now: NOW, estimatedUploadMs: 0 })).toBe(0);
    expect(interruptionGraceMs({ configuredGraceMs: 90_000, deadlineAt: Number.NaN, now: NOW, estimatedUploadMs: 0 })).toBe(0);
    expect(interruptionGraceMs({ configuredGraceMs: Infinity, deadlineAt: Infinity, now: NOW, estimatedUploadMs: 0 })).toBe(0);
  });
});

describe('estimateUploadMs', () => {
  test('nothing pending costs nothing', () => {
    expect(estimateUploadMs(0)).toBe(0);
    expect(estimateUploadMs(-5)).toBe(0);
  });

  test('a floor for small uploads, throughput for large ones', () => {
    expect(estimateUploadMs(1)).toBe(MIN_UPLOAD_MS);
    expect(estimateUploadMs(5_000_000_000)).toBe(100_000); // 5 GB at 50 MB/s
    expect(estimateUploadMs(5_000_000_000, 100_000_000)).toBe(50_000);
    // A nonsense rate falls back to the default rather than dividing by zero.
    expect(estimateUploadMs(5_000_000_000, 0)).toBe(100_000);
  });
});

describe('deadlineFromNotice / parseIsoTime', () => {
  test.each([
    ['2026-11-22T10:00:00Z', DEADLINE],
    ['2026-11-22T10:00:00.250Z', DEADLINE + 250],
    ['2026-11-22t10:00:00z', DEADLINE],
    ['2026-11-22 10:00:00Z', DEADLINE],
    ['  2026-11-22T10:00:00Z\n', DEADLINE],
    ['2026-11-22T11:00:00+01:00', DEADLINE],
    ['2026-11-22T05:00:00-0500', DEADLINE],
    ['2026-11-22T10:00:00+00', DEADLINE],
    // No zone: IMDS means UTC (Date.parse would read local time).
    ['2026-11-22T10:00:00', DEADLINE],
    ['2026-11-22T10:00Z', DEADLINE],
    ['2016-12-31T23:59:60Z', Date.UTC(2016, 11, 31, 23, 59, 59, 999)],
  ])('%j', (text, expected) => {
    expect(parseIsoTime(text)).toBe(expected);
    expect(deadlineFromNotice(text, NOW)).toEqual({ deadlineAt: expected, parsed: true });
  });

  test.each([
    '',
    'soon',
    '2026-13-01T00:00:00Z',
    '2026-02-30T00:00:00Z',
    '2026-11-22T24:00:00Z',
    '2026-11-22T10:00:00+25:00',
    '1700000000',
  ])('unreadable %j → two minutes from when it was noticed', (text) => {
    expect(parseIsoTime(text)).toBeUndefined();
    expect(deadlineFromNotice(text, NOW)).toEqual({ deadlineAt: NOW + DEFAULT_NOTICE_LEAD_MS, parsed: false });
  });
});
