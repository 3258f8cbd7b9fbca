/**
 * Time is injected so that lease renewal, backoff and resync loops can be driven by tests
 * (24 h TTLs pass in milliseconds) instead of waiting on wall time.
 */

/** Milliseconds since the epoch, and an abortable sleep on the same time line. */
export interface Clock {
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason (an AbortError) when it aborts first. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

export function isAbortError(err: unknown): boolean {
  return err instanceof Error && err.name === 'AbortError';
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep(ms, signal) {
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        reject(abortError(signal));
        return;
      }
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(abortError(signal));
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, Math.max(0, ms));
      signal.addEventListener('abort', onAbort, { once: true });
    });
  },
};
