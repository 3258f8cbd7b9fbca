/**
 * Liveness of the daemon's loops for /healthz: each loop beats when it completes a round, and one that has not
 * beaten for more than twice its period is stalled, with a reason naming it. Time comes from the injected Clock,
 * so stalls are tested without waiting.
 */
import type { Clock } from '../runtime/clock.js';

export const DAEMON_LOOPS = ['lease-keeper', 'lease-watcher', 'datapath-reconciler', 'traffic-rules'] as const;
export type LoopName = (typeof DAEMON_LOOPS)[number];

interface LoopState {
  periodMs: number;
  lastBeat: number;
  /** For connection-like loops (a watch): alive for as long as it is connected. */
  up?: boolean;
}

export class LoopMonitor {
  private readonly loops = new Map<LoopName, LoopState>();
  /** Helper processes the daemon supervises (wireguard-go) that are down now, with how they went. */
  private readonly downProcesses = new Map<string, string>();

  constructor(private readonly clock: Clock) {}

  /** Starts watching a loop; registering again changes its period and counts as a beat. */
  register(name: LoopName, periodMs: number): void {
    this.loops.set(name, { periodMs, lastBeat: this.clock.now() });
  }

  /** A loop that waits on purpose for longer (a lease renewal hours away) stops being watched until it registers again. */
  unregister(name: LoopName): void {
    this.loops.delete(name);
  }

  beat(name: LoopName): void {
    const loop = this.loops.get(name);
    if (loop) loop.lastBeat = this.clock.now();
  }

  /**
   * A watch connected (up), or failed and about to retry (down). A retry is progress too: a store that is away makes
   * the daemon wait, not a restart help, so only a watch that neither holds a connection nor retries is stalled.
   */
  setUp(name: LoopName, up: boolean): void {
    const loop = this.loops.get(name);
    if (!loop) return;
    loop.up = up;
    loop.lastBeat = this.clock.now();
  }

  /**
   * A supervised process went down (`reason`) or is back (undefined). Down fails /healthz at once, not after two
   * periods: the device it carries is gone until the restart succeeds.
   */
  processDown(name: string, reason: string | undefined): void {
    if (reason === undefined) this.downProcesses.delete(name);
    else this.downProcesses.set(name, reason);
  }

  /** One sentence per stalled loop or process that is down; empty when all are alive. */
  stalled(): string[] {
    const now = this.clock.now();
    const out: string[] = [];
    for (const [name, loop] of this.loops) {
      const silent = loop.up ? 0 : now - loop.lastBeat;
      if (silent > 2 * loop.periodMs) out.push(`${name} stalled: no progress for ${Math.round(silent / 1000)} s (period ${Math.round(loop.periodMs / 1000)} s)`);
    }
    for (const [name, reason] of this.downProcesses) out.push(`${name} down: ${reason}`);
    return out;
  }
}
