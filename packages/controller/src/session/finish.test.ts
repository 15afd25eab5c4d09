import { formatLimit, type JobStatus } from '@spotctl/shared';
import { describe, expect, it } from 'vitest';
import { describeEnd } from './finish.ts';

const base: JobStatus = {
  runId: 'r',
  state: 'exited',
  command: ['x'],
  pid: 1,
  startedAt: 1,
  endedAt: 2,
  exitCode: null,
  signal: 'SIGKILL',
  stopReason: null,
  lastSeq: 0,
  error: null,
};

describe('describeEnd', () => {
  it('says why the agent killed the job when its start failed', () => {
    expect(describeEnd({ ...base, stopReason: 'agent-start-failed', error: 'the agent failed to start: Invalid time value' })).toBe(
      'job killed by SIGKILL (agent-start-failed: the agent failed to start: Invalid time value)',
    );
    expect(describeEnd({ ...base, stopReason: 'stop' })).toBe('job killed by SIGKILL (stop)');
    expect(describeEnd({ ...base, state: 'failed-to-start', signal: null, error: 'spawn nope ENOENT' })).toBe(
      'job failed to start: spawn nope ENOENT',
    );
  });
});

describe('max runtime', () => {
  it('says the job was stopped by --max-runtime, with the limit as typed, however the job ended', () => {
    expect(describeEnd({ ...base, signal: 'SIGTERM', stopReason: 'max-runtime' }, 7_200_000)).toBe(
      'job stopped after max runtime 2h (killed by SIGTERM)',
    );
    expect(describeEnd({ ...base, signal: null, exitCode: 0, stopReason: 'max-runtime' }, 90_000)).toBe(
      'job stopped after max runtime 90s (exited with code 0)',
    );
    expect(formatLimit(1500)).toBe('1500 ms');
    expect(formatLimit(300_000)).toBe('5m');
  });
});
