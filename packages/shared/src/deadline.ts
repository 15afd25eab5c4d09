/**
 * Deadlines we own. `AbortSignal.any([parent, AbortSignal.timeout(ms)])` looks like the same thing,
 * but on Node 20 a timeout signal reachable only through `AbortSignal.any` can be garbage-collected
 * and then never fires: a flush with such a deadline waits for ever, and on EC2 that is an instance
 * billing for ever. Here the timer handle is ours (the timer list keeps its callback, and so the
 * controller, alive) and is cleared when the deadline is no longer needed.
 */

export interface Deadline extends Disposable {
  /** Aborts with a `TimeoutError` when the time is up, or with the parent's reason when a parent aborts. */
  readonly signal: AbortSignal;
  /** Stops the timer and lets go of the parents; idempotent. The signal stays as it is. */
  clear(): void;
}

/** The same reason `AbortSignal.timeout` gives, so callers that look for `TimeoutError` still work. */
function timeoutReason(ms: number): Error {
  return new DOMException(`deadline of ${ms} ms passed`, 'TimeoutError');
}

/**
 * A signal that aborts after `ms` (clamped to a whole, non-negative number; `Infinity` never times
 * out), or as soon as any of `parents` aborts. Use with `using`, or call `clear()` when done.
 * The timer does not keep the process alive, like `AbortSignal.timeout`.
 */
export function deadline(ms: number, ...parents: ReadonlyArray<AbortSignal | undefined>): Deadline {
  const controller = new AbortController();
  const linked = parents.filter((p): p is AbortSignal => p !== undefined);
  let timer: NodeJS.Timeout | undefined;
  const abortFrom = (parent: AbortSignal) => (): void => {
    cleanup();
    controller.abort(parent.reason);
  };
  const listeners = linked.map((parent) => ({ parent, onAbort: abortFrom(parent) }));
  const cleanup = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    for (const { parent, onAbort } of listeners) parent.removeEventListener('abort', onAbort);
  };
  const already = linked.find((p) => p.aborted);
  if (already) {
    controller.abort(already.reason);
  } else {
    for (const { parent, onAbort } of listeners) parent.addEventListener('abort', onAbort, { once: true });
    // setTimeout wants a finite 32-bit delay: anything past ~24.8 days (or Infinity) means "no timer".
    const delayMs = Number.isNaN(ms) ? 0 : Math.max(0, Math.ceil(ms));
    if (delayMs <= 0x7fffffff) {
      timer = setTimeout(() => {
        timer = undefined;
        cleanup();
        controller.abort(timeoutReason(delayMs));
      }, delayMs);
      timer.unref();
    }
  }
  return { signal: controller.signal, clear: cleanup, [Symbol.dispose]: cleanup };
}
