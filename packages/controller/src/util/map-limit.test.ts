import { describe, expect, it } from 'vitest';
import { mapLimit } from './map-limit.ts';

/** A promise settled from outside, so the test decides when each call finishes. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('mapLimit', () => {
  it('keeps input order whatever order the calls finish in', async () => {
    const gates = [deferred(), deferred(), deferred()];
    const result = mapLimit([10, 20, 30], 3, async (n, i) => {
      await gates[i]!.promise;
      return n + i;
    });
    for (const g of [...gates].reverse()) g.resolve();
    expect(await result).toEqual([10, 21, 32]);
  });

  it('never has more than `limit` calls in flight, and starts the next as one finishes', async () => {
    const gates = Array.from({ length: 5 }, deferred);
    const started: number[] = [];
    let inFlight = 0;
    let most = 0;
    const result = mapLimit([0, 1, 2, 3, 4], 2, async (n) => {
      started.push(n);
      most = Math.max(most, ++inFlight);
      await gates[n]!.promise;
      inFlight--;
      return n;
    });
    await Promise.resolve();
    expect(started).toEqual([0, 1]);
    for (const g of gates) {
      g.resolve();
      await g.promise;
    }
    expect(await result).toEqual([0, 1, 2, 3, 4]);
    expect(most).toBe(2);
  });

  it('an empty list gives [] without calling fn; a rejection rejects the whole', async () => {
    let calls = 0;
    expect(await mapLimit([], 4, async () => ++calls)).toEqual([]);
    expect(calls).toBe(0);
    await expect(
      mapLimit([1, 2], 2, async (n) => {
        if (n === 2) throw new Error('two');
        return n;
      }),
    ).rejects.toThrow('two');
  });
});
