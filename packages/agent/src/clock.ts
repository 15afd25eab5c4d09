/**
 * Time as the agent's parts see it (idle watchdog, spot poller, checkpoint sync): one clock,
 * injectable so tests drive schedules instead of sleeping. A part asks only for what it uses
 * (`Pick<Clock, ...>`), so a test double implements just that.
 */
export interface Clock {
  now(): number;
  /**
   * A one-shot timer. The system clock's does not keep the process alive on its own (the agent's
   * server does); one-shot timers re-armed after each run never stack up overlapping work.
   */
  setTimeout(callback: () => void, delayMs: number): unknown;
  clearTimeout(handle: unknown): void;
  setInterval(callback: () => void, intervalMs: number): unknown;
  clearInterval(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, delayMs) => {
    const handle = setTimeout(callback, delayMs);
    handle.unref();
    return handle;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
  setInterval: (callback, intervalMs) => setInterval(callback, intervalMs),
  clearInterval: (handle) => clearInterval(handle as NodeJS.Timeout),
};

/** Resolves once `delayMs` of `clock` has passed; rejects with the signal's reason when it aborts first. */
export function sleepOn(clock: Pick<Clock, 'setTimeout' | 'clearTimeout'>, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const abortReason = (): Error => (signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    if (signal?.aborted) return reject(abortReason());
    const onAbort = (): void => {
      clock.clearTimeout(handle);
      reject(abortReason());
    };
    const handle = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
