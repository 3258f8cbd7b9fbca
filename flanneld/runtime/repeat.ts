/**
 * The periodic-check loop the daemon runs for traffic rules and the blackhole route: call `fn` every period on
 * the injected Clock until abort, and log a failure once per distinct message instead of once per period.
 */
import type { Logger } from 'pino';
import type { Clock } from './clock.js';
import { errorMessage } from './errors.js';

export interface RepeatOptions {
  readonly clock: Clock;
  readonly periodMs: number;
  readonly log: Logger;
  /** Log message for a failed round, e.g. "cannot check traffic rules". */
  readonly failure: string;
  /** Run the first round at once instead of after one period. */
  readonly immediately?: boolean;
}

/** Settles when `signal` aborts; never rejects. */
export async function repeatEvery(opts: RepeatOptions, fn: () => Promise<void>, signal: AbortSignal): Promise<void> {
  let lastError = '';
  let first = true;
  while (!signal.aborted) {
    if (!(first && opts.immediately)) {
      try {
        await opts.clock.sleep(opts.periodMs, signal);
      } catch {
        return;
      }
    }
    first = false;
    try {
      await fn();
      lastError = '';
    } catch (err) {
      if (signal.aborted) return;
      if (errorMessage(err) !== lastError) opts.log.error({ err: errorMessage(err) }, opts.failure);
      lastError = errorMessage(err);
    }
  }
}
