import { EventEmitter } from 'node:events';
import { UserError } from '@spotctl/shared';
import { describe, expect, it } from 'vitest';
import { Detached, RunSignals } from './run-signals.ts';

function source(): EventEmitter & Pick<NodeJS.Process, 'on' | 'off'> {
  return new EventEmitter() as EventEmitter & Pick<NodeJS.Process, 'on' | 'off'>;
}

describe('RunSignals', () => {
  it('during setup, Ctrl-C cancels (exit 130) and SIGTERM terminates (exit 143)', () => {
    for (const [signal, exitCode] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
    ] as const) {
      const src = source();
      using signals = new RunSignals(src);
      expect(signals.setupSignal.aborted).toBe(false);
      src.emit(signal);
      expect(signals.setupSignal.aborted).toBe(true);
      expect(signals.setupSignal.reason).toBeInstanceOf(UserError);
      expect((signals.setupSignal.reason as UserError).exitCode).toBe(exitCode);
      expect(signals.hungUp).toBe(false);
    }
  });

  it('while following, the first Ctrl-C or SIGTERM asks for a stop and the next forces; setup is not cancelled', () => {
    const src = source();
    using signals = new RunSignals(src);
    const stops: boolean[] = [];
    signals.following((force) => stops.push(force));
    src.emit('SIGTERM');
    src.emit('SIGINT');
    src.emit('SIGINT');
    expect(stops).toEqual([false, true, true]);
    expect(signals.setupSignal.aborted).toBe(false);
  });

  it('SIGHUP detaches at any time and stops nothing', () => {
    const src = source();
    using signals = new RunSignals(src);
    const stops: boolean[] = [];
    signals.following((force) => stops.push(force));
    src.emit('SIGHUP');
    expect(signals.hungUp).toBe(true);
    expect(signals.hangupSignal.reason).toBeInstanceOf(Detached);
    expect(stops).toEqual([]);
    expect(signals.setupSignal.aborted).toBe(false);
  });

  it('in detach mode (attach), Ctrl-C and SIGTERM detach and never stop the job', () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const src = source();
      using signals = new RunSignals(src, { interrupt: 'detach' });
      const stops: boolean[] = [];
      signals.following((force) => stops.push(force));
      src.emit(signal);
      src.emit(signal);
      expect(stops).toEqual([]);
      expect(signals.hungUp).toBe(true);
      expect((signals.hangupSignal.reason as Detached).by).toBe('interrupt');
      expect(signals.setupSignal.aborted).toBe(false);
    }
  });

  it('disposing removes every handler', () => {
    const src = source();
    const signals = new RunSignals(src);
    expect(['SIGINT', 'SIGTERM', 'SIGHUP'].map((s) => src.listenerCount(s))).toEqual([1, 1, 1]);
    signals[Symbol.dispose]();
    expect(['SIGINT', 'SIGTERM', 'SIGHUP'].map((s) => src.listenerCount(s))).toEqual([0, 0, 0]);
  });
});
