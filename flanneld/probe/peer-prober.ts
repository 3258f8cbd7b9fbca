/**
 * Probes every peer's overlay gateway address with ICMP echo, spread evenly over the interval so the cost stays
 * flat as peers grow (5000 peers every 30 s is one probe every 6 ms, never a burst of 5000). A peer is declared
 * unreachable only after FAILURES_TO_UNREACHABLE consecutive failed probes, so one lost packet does not flap the
 * verdict, and the verdict is logged once per change rather than once per probe.
 */
import type { Logger } from 'pino';
import { formatIp, type IpAddress } from '../ip/address.js';
import { formatCidr, type IpNet } from '../ip/cidr.js';
import type { Clock } from '../runtime/clock.js';
import { errorMessage } from '../runtime/errors.js';
import type { Pinger } from './pinger.js';

export interface ProbeTarget {
  /** Identity across setTargets calls (e.g. the lease's subnet key). */
  readonly key: string;
  /** What is pinged: the peer's gateway address on the overlay (its subnet's network address). */
  readonly address: IpAddress;
  readonly subnet: IpNet;
  readonly publicIP?: IpAddress;
}

export interface ProbeResult {
  readonly target: ProbeTarget;
  /** The debounced verdict: false only after FAILURES_TO_UNREACHABLE failed probes in a row. */
  readonly reachable: boolean;
  /** Present exactly when this probe was answered. */
  readonly rttMs?: number;
  /** Clock time the probe finished. */
  readonly at: number;
}

export interface PeerProberDeps {
  readonly pinger: Pinger;
  readonly clock: Clock;
  readonly log: Logger;
  readonly intervalMs: number;
  /** Default min(2000, intervalMs). */
  readonly timeoutMs?: number;
  readonly onResult?: (result: ProbeResult) => void;
}

export const FAILURES_TO_UNREACHABLE = 2;
const DEFAULT_TIMEOUT_MS = 2000;
/** How long past its own timeout a ping may stay unsettled before the probe counts it as failed anyway. */
const PING_GRACE_MS = 1000;

interface PeerState {
  target: ProbeTarget;
  /** Presumed reachable until proven otherwise, so start-up does not warn about peers not yet probed. */
  reachable: boolean;
  failures: number;
  probing: boolean;
  last: ProbeResult | undefined;
}

type Wait = 'elapsed' | 'woken' | 'aborted';

export class PeerProber {
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  /** Insertion order is probe order within a pass. */
  private readonly peers = new Map<string, PeerState>();
  /** Keys still to probe in the current pass; setTargets adds to and removes from it. */
  private pending = new Set<string>();
  /** Keys the current pass started with plus those added since: its probe rate never exceeds this per interval. */
  private passSize = 0;
  private wake: (() => void) | undefined;
  private running = false;
  private lastPingError = '';

  constructor(private readonly deps: PeerProberDeps) {
    if (!Number.isFinite(deps.intervalMs) || deps.intervalMs <= 0) {
      throw new RangeError(`peer probe interval must be a positive number of ms, got ${deps.intervalMs}`);
    }
    this.intervalMs = deps.intervalMs;
    this.timeoutMs = deps.timeoutMs ?? Math.min(DEFAULT_TIMEOUT_MS, deps.intervalMs);
    if (!Number.isFinite(this.timeoutMs) || this.timeoutMs <= 0) {
      throw new RangeError(`peer probe timeout must be a positive number of ms, got ${this.timeoutMs}`);
    }
  }

  /**
   * Replaces the set of peers. Kept keys keep their state unless their address changed (then it is another host
   * behind the same key); removed keys are forgotten, and a probe of theirs still in flight is discarded; added
   * keys join the current pass, so they are probed within one interval.
   */
  setTargets(targets: readonly ProbeTarget[]): void {
    const next = new Map<string, ProbeTarget | undefined>();
    for (const key of this.peers.keys()) next.set(key, undefined);
    for (const target of targets) next.set(target.key, target);
    this.updateTargets(next);
  }

  /**
   * The same for a delta (undefined = the peer left), so a lease event costs the peers it changed, not all of them.
   */
  updateTargets(changes: ReadonlyMap<string, ProbeTarget | undefined>): void {
    let changed = false;
    for (const [key, target] of changes) {
      const state = this.peers.get(key);
      if (state && target && target.address.family === state.target.address.family && target.address.value === state.target.address.value) {
        state.target = target;
        continue;
      }
      if (state) {
        this.peers.delete(key);
        this.pending.delete(key);
        changed = true;
      }
      if (target) {
        this.peers.set(key, { target, reachable: true, failures: 0, probing: false, last: undefined });
        this.pending.add(key);
        this.passSize++;
        changed = true;
      }
    }
    if (changed) this.wake?.();
  }

  /** The latest result per key, for peers probed at least once. */
  state(): ReadonlyMap<string, ProbeResult> {
    const out = new Map<string, ProbeResult>();
    for (const [key, state] of this.peers) if (state.last) out.set(key, state.last);
    return out;
  }

  /**
   * Probes until `signal` aborts, then waits for its probes in flight to be discarded. Settles when `signal`
   * aborts; never rejects (a second concurrent run is refused). Each pass over the targets takes one interval,
   * probes `interval / N` apart; targets added mid-pass are fitted into the rest of it, never closer together
   * than `interval / N` with N counting them, so the pass may run over by up to their share.
   */
  async run(signal: AbortSignal): Promise<void> {
    if (this.running) throw new Error('PeerProber.run is already running');
    this.running = true;
    const probes = new Set<Promise<void>>();
    // When the next probe (or pass) was due, as opposed to when its timer fired: see waitForNextSlot.
    let scheduledAt = this.deps.clock.now();
    try {
      while (!signal.aborted) {
        if (this.peers.size === 0) {
          if ((await this.wait(this.intervalMs, signal)) === 'aborted') return;
          scheduledAt = this.deps.clock.now();
          continue;
        }
        const passEnd = scheduledAt + this.intervalMs;
        this.pending = new Set(this.peers.keys());
        this.passSize = this.pending.size;
        // Bounded: every round removes one key, and keys are only added by setTargets (at most N per call).
        while (this.pending.size > 0) {
          const key = this.pending.values().next().value as string;
          this.pending.delete(key);
          const state = this.peers.get(key);
          if (state && !state.probing) {
            const probe = this.probe(state, signal);
            probes.add(probe);
            void probe.finally(() => probes.delete(probe));
          }
          const next = await this.waitForNextSlot(this.deps.clock.now(), scheduledAt, passEnd, signal);
          if (next === 'aborted') return;
          scheduledAt = next;
        }
      }
    } finally {
      this.wake = undefined;
      this.pending = new Set();
      await Promise.all([...probes]);
      this.running = false;
    }
  }

  /**
   * Sleeps until the next probe is due: the rest of the pass shared by what is left of it (one more slot for the
   * next pass's first probe), but at least interval / (targets seen this pass), so a batch of targets added near
   * the end of a pass is spread out too instead of sent at once. Removals only shorten the gaps: they do not
   * push back the peers still waiting in this pass. Both count from when the last probe was due, not from when
   * its timer actually fired, so timer lateness does not add up over a pass (1 ms late per probe would stretch a
   * 30 s pass of 5000 peers to 35 s); but never closer than half the floor to the last probe actually sent, so
   * after a stalled event loop the schedule resumes instead of firing the missed slots in a burst. Resolves with
   * the time the next probe was due.
   */
  private async waitForNextSlot(probedAt: number, scheduledAt: number, passEnd: number, signal: AbortSignal): Promise<number | 'aborted'> {
    // Bounded: each round either reaches the due time or was woken by a setTargets call.
    for (;;) {
      const evenShare = (passEnd - scheduledAt) / (this.pending.size + 1);
      const floor = this.intervalMs / Math.max(1, this.passSize);
      const due = Math.max(scheduledAt + Math.max(evenShare, floor), probedAt + floor / 2);
      const now = this.deps.clock.now();
      // Already overdue after a re-plan: that slot is now, or the next one would be crammed in behind it.
      if (due <= now) return now;
      const left = due - now;
      const why = await this.wait(left, signal);
      if (why === 'aborted') return why;
      if (why === 'elapsed') return due;
    }
  }

  /** A Clock sleep that setTargets can cut short, so a change in the target set re-plans the schedule. */
  private async wait(ms: number, signal: AbortSignal): Promise<Wait> {
    if (signal.aborted) return 'aborted';
    const sleep = new AbortController();
    let woken = false;
    const stop = (): void => sleep.abort();
    signal.addEventListener('abort', stop, { once: true });
    this.wake = () => {
      woken = true;
      sleep.abort();
    };
    try {
      await this.deps.clock.sleep(ms, sleep.signal);
      return 'elapsed';
    } catch {
      return signal.aborted ? 'aborted' : woken ? 'woken' : 'elapsed';
    } finally {
      this.wake = undefined;
      signal.removeEventListener('abort', stop);
    }
  }

  /** Never rejects: a failure of the pinger itself is logged (once per distinct message) and leaves state alone. */
  private async probe(state: PeerState, signal: AbortSignal): Promise<void> {
    state.probing = true;
    // A pinger that never settles must not wedge this peer: the guard ends the probe as a failure.
    const guard = new AbortController();
    const stop = (): void => guard.abort();
    signal.addEventListener('abort', stop, { once: true });
    let rttMs: number | undefined;
    try {
      rttMs = await Promise.race([
        this.deps.pinger.ping(state.target.address, this.timeoutMs),
        this.deps.clock.sleep(this.timeoutMs + PING_GRACE_MS, guard.signal).then(
          () => undefined,
          () => undefined,
        ),
      ]);
      this.lastPingError = '';
    } catch (err) {
      const message = errorMessage(err);
      if (message !== this.lastPingError && !signal.aborted) this.deps.log.warn({ err: message }, 'cannot send peer probes');
      this.lastPingError = message;
      return;
    } finally {
      state.probing = false;
      // A plain reason: abort() without one builds a DOMException (with a stack trace) on every probe.
      guard.abort('probe settled');
      signal.removeEventListener('abort', stop);
    }
    if (signal.aborted || this.peers.get(state.target.key) !== state) return;
    this.record(state, rttMs);
  }

  private record(state: PeerState, rttMs: number | undefined): void {
    const { log, clock, onResult } = this.deps;
    const target = state.target;
    const where = (): Record<string, unknown> => ({
      subnet: formatCidr(target.subnet),
      publicIP: target.publicIP ? formatIp(target.publicIP) : undefined,
      address: formatIp(target.address),
    });
    if (rttMs !== undefined) {
      state.failures = 0;
      if (!state.reachable) log.info({ ...where(), rttMs: Math.round(rttMs * 1000) / 1000 }, 'peer reachable again over the overlay');
      state.reachable = true;
    } else {
      state.failures = Math.min(state.failures + 1, FAILURES_TO_UNREACHABLE);
      if (state.reachable && state.failures >= FAILURES_TO_UNREACHABLE) {
        log.warn({ ...where(), failedProbes: state.failures }, 'peer unreachable over the overlay');
        state.reachable = false;
      }
    }
    const at = clock.now();
    const result: ProbeResult =
      rttMs === undefined ? { target, reachable: state.reachable, at } : { target, reachable: state.reachable, rttMs, at };
    state.last = result;
    if (!onResult) return;
    try {
      onResult(result);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'peer probe result consumer failed');
    }
  }
}
