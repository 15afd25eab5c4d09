/**
 * Time as the spot poller sees it; injectable so tests drive the schedule instead of sleeping.
 * One-shot timers (not intervals): the next poll is armed only once the previous one finished,
 * so a slow metadata service can never stack up overlapping polls.
 */
export interface PollClock {
  now(): number;
  setTimeout(callback: () => void, delayMs: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemPollClock: PollClock = {
  now: () => Date.now(),
  setTimeout: (callback, delayMs) => {
    const handle = setTimeout(callback, delayMs);
    // The poller never keeps a process alive on its own: the agent's server does.
    handle.unref();
    return handle;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
