import type { Random } from './random.js';

export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  /** Fraction of each delay that is randomised, so many nodes do not retry in lockstep. */
  readonly jitter: number;
}

/** Upstream flannel's watch backoff: 100 ms doubling to 5 s. */
export const watchBackoff: BackoffOptions = { initialMs: 100, maxMs: 5000, jitter: 0.2 };

/** Exponential backoff state: `next()` gives the delay to wait, `reset()` after a success. */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly options: BackoffOptions,
    private readonly random: Random,
  ) {}

  next(): number {
    const base = Math.min(this.options.maxMs, this.options.initialMs * 2 ** this.attempt);
    if (base < this.options.maxMs) this.attempt++;
    const spread = Math.floor(base * this.options.jitter);
    return base - spread + (spread > 0 ? this.random.int(2 * spread + 1) : 0);
  }

  reset(): void {
    this.attempt = 0;
  }
}
