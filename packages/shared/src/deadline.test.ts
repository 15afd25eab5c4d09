import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { deadline } from './deadline.ts';

// A full GC on demand without starting the process with --expose-gc.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/**
 * Resolves 'fired' if the signal made by `make` aborts within `boundMs` while full GCs run in
 * between, 'never' otherwise. Only the returned signal is held: what a caller of
 * `AbortSignal.any([..., AbortSignal.timeout(ms)])` holds too.
 */
async function firesDespiteGc(make: () => AbortSignal, boundMs: number): Promise<'fired' | 'never'> {
  const signal = make();
  return await new Promise((resolve) => {
    const bound = setTimeout(() => resolve('never'), boundMs);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(bound);
        resolve('fired');
      },
      { once: true },
    );
    for (const atMs of [0, 10, 30, 60]) setTimeout(() => gc(), atMs);
  });
}

describe('deadline', () => {
  it('fires after a forced GC when only the signal is held (AbortSignal.any + AbortSignal.timeout does not on Node 20)', async () => {
    const parent = new AbortController();
    const outcome = await firesDespiteGc(() => deadline(100, parent.signal).signal, 3000);
    expect(outcome).toBe('fired');
  });

  it('aborts with a TimeoutError when the time is up', async () => {
    const d = deadline(1);
    await new Promise((resolve) => d.signal.addEventListener('abort', resolve, { once: true }));
    expect((d.signal.reason as Error).name).toBe('TimeoutError');
  });

  it("follows a parent's abort with the parent's reason, and at once when the parent is already aborted", () => {
    const parent = new AbortController();
    const d = deadline(60_000, undefined, parent.signal);
    expect(d.signal.aborted).toBe(false);
    parent.abort(new Error('closed'));
    expect((d.signal.reason as Error).message).toBe('closed');
    const late = deadline(60_000, parent.signal);
    expect(late.signal.aborted).toBe(true);
  });

  it('never fires once cleared, and lets go of its parent', () => {
    const parent = new AbortController();
    {
      using d = deadline(0, parent.signal);
      d.clear();
      parent.abort();
      expect(d.signal.aborted).toBe(false);
    }
  });

  it('treats Infinity as no timer and a negative or NaN time as now', async () => {
    expect(deadline(Number.POSITIVE_INFINITY).signal.aborted).toBe(false);
    for (const ms of [-5, Number.NaN]) {
      const d = deadline(ms);
      await new Promise((resolve) => d.signal.addEventListener('abort', resolve, { once: true }));
      expect(d.signal.aborted).toBe(true);
    }
  });
});
