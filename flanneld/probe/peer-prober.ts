/**
 * Probes every peer's overlay gateway address with ICMP echo, spread evenly over the interval so the cost stays
 * flat as peers grow (5000 peers every 30 s is one probe every 6 ms, never a burst of 5000). The slots that fall
 * within one batch window (default 1 s) go out together on one wake-up: what a probe costs is mostly the wake-ups
 * around it (its timer, its send, its timeout), not the packet, and probes sent together also time out together.
 * A peer is declared unreachable only after FAILURES_TO_UNREACHABLE consecutive failed probes, so one lost packet
 * does not flap the verdict, and the verdict is logged once per change rather than once per probe.
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
  /**
   * Slots due within this many ms of a wake-up are sent on it (default DEFAULT_BATCH_MS, capped at a tenth of the
   * interval); 0 sends every probe at its own slot.
   */
  readonly batchMs?: number;
  readonly onResult?: (result: ProbeResult) => void;
}

export const FAILURES_TO_UNREACHABLE = 2;
const DEFAULT_TIMEOUT_MS = 2000;
/** At 5000 peers every 30 s: 167 probes a second in one burst of ~167 small packets, instead of 167 wake-ups. */
export const DEFAULT_BATCH_MS = 1000;
/** How long past its own timeout a ping may stay unsettled before the probe counts it as failed anyway. */
const PING_GRACE_MS = 1000;

interface PeerState {
  target: ProbeTarget;
  /** Presumed reachable until proven otherwise, so start-up does not warn about peers not yet probed. */
  reachable: boolean;
  failures: number;
  /** Clock time the probe now out was sent; undefined while none is. */
  outSince: number | undefined;
  /** Numbers the probes, so the late answer to a probe given up on is not taken for the next one's. */
  probeSeq: number;
  last: ProbeResult | undefined;
}

type Wait = 'elapsed' | 'woken' | 'aborted';

export class PeerProber {
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly batchMs: number;
  /** Peers with a probe out, oldest first (Set keeps insertion order), so the guard sweep stops at the first young one. */
  private readonly outstanding = new Set<PeerState>();
  private runSignal: AbortSignal | undefined;
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
    const batchMs = deps.batchMs ?? DEFAULT_BATCH_MS;
    if (!Number.isFinite(batchMs) || batchMs < 0) throw new RangeError(`peer probe batch must be a non-negative number of ms, got ${batchMs}`);
    this.batchMs = Math.min(batchMs, this.intervalMs / 10);
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
        this.outstanding.delete(state);
        changed = true;
      }
      if (target) {
        this.peers.set(key, { target, reachable: true, failures: 0, outSince: undefined, probeSeq: 0, last: undefined });
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
   * Probes until `signal` aborts, then drops its probes in flight (their answers are discarded). Settles when
   * `signal` aborts; never rejects (a second concurrent run is refused). Each pass over the targets takes one
   * interval, probes `interval / N` apart (sent in batches, see batchMs); targets added mid-pass are fitted into the
   * rest of it, never closer together than `interval / N` with N counting them, so the pass may run over by up to
   * their share.
   */
  async run(signal: AbortSignal): Promise<void> {
    if (this.running) throw new Error('PeerProber.run is already running');
    this.running = true;
    this.runSignal = signal;
    // When the next probe (or pass) was due, as opposed to when its timer fired: see waitForNextSlot.
    let scheduledAt = this.deps.clock.now();
    // Slots before this go out without sleeping: they belong to the batch of the last wake-up.
    let batchEnd = scheduledAt + this.batchMs;
    try {
      while (!signal.aborted) {
        if (this.peers.size === 0) {
          if ((await this.wait(this.intervalMs, signal)) === 'aborted') return;
          scheduledAt = this.deps.clock.now();
          batchEnd = scheduledAt + this.batchMs;
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
          this.giveUpOnStaleProbes();
          if (state && state.outSince === undefined) this.probe(state);
          // A probe sent ahead of its slot, with its batch, counts as sent at its slot.
          const sentAt = Math.max(this.deps.clock.now(), scheduledAt);
          const next = await this.waitForNextSlot(sentAt, scheduledAt, passEnd, batchEnd, signal);
          if (next === 'aborted') return;
          scheduledAt = next.at;
          if (next.woke) batchEnd = next.at + this.batchMs;
        }
      }
    } finally {
      this.wake = undefined;
      this.pending = new Set();
      for (const state of this.outstanding) state.outSince = undefined;
      this.outstanding.clear();
      this.runSignal = undefined;
      this.running = false;
    }
  }

  /**
   * Resolves with the time the next probe is due, and whether it came by waking (a new batch starts there) or
   * falls before the end of the current batch (`batchEnd`), to be sent at once. Due: the rest of the pass shared by what is
   * left of it (one more slot for the next pass's first probe), but at least interval / (targets seen this pass),
   * so a batch of targets added near the end of a pass is spread out too instead of sent at once. Removals only
   * shorten the gaps: they do not push back the peers still waiting in this pass. Both count from when the last
   * probe was due, not from when its timer actually fired, so timer lateness does not add up over a pass (1 ms late
   * per probe would stretch a 30 s pass of 5000 peers to 35 s); but never closer than half the floor to the last
   * probe sent, so after a stalled event loop the schedule resumes instead of firing the missed slots in a burst.
   * While it sleeps it also wakes to give up on probes the pinger has not settled in time.
   */
  private async waitForNextSlot(
    sentAt: number,
    scheduledAt: number,
    passEnd: number,
    batchEnd: number,
    signal: AbortSignal,
  ): Promise<{ at: number; woke: boolean } | 'aborted'> {
    // Bounded: each round reaches the due time, was woken by a setTargets call, or gave up on a stale probe (at
    // most one round per probe out).
    for (;;) {
      const evenShare = (passEnd - scheduledAt) / (this.pending.size + 1);
      const floor = this.intervalMs / Math.max(1, this.passSize);
      const due = Math.max(scheduledAt + Math.max(evenShare, floor), sentAt + floor / 2);
      const now = this.deps.clock.now();
      // Already overdue after a re-plan: that slot is now, or the next one would be crammed in behind it.
      if (due <= now) return { at: now, woke: true };
      if (due < batchEnd) return { at: due, woke: false };
      const staleAt = this.staleDeadline();
      const until = staleAt !== undefined && staleAt < due ? staleAt : due;
      const why = await this.wait(until - now, signal);
      if (why === 'aborted') return why;
      if (why === 'elapsed' && until === due) return { at: due, woke: true };
      this.giveUpOnStaleProbes();
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

  /**
   * Sends one probe; its answer is recorded when it comes. A failure of the pinger itself is logged (once per
   * distinct message) and leaves the verdicts alone. No timer of its own: the pinger times out on its own, and a
   * pinger that never settles is caught by giveUpOnStaleProbes.
   */
  private probe(state: PeerState): void {
    const seq = ++state.probeSeq;
    state.outSince = this.deps.clock.now();
    this.outstanding.add(state);
    const settled = (): boolean => {
      if (state.probeSeq !== seq || state.outSince === undefined) return false;
      state.outSince = undefined;
      this.outstanding.delete(state);
      return this.runSignal !== undefined && !this.runSignal.aborted && this.peers.get(state.target.key) === state;
    };
    let ping: Promise<number | undefined>;
    try {
      ping = this.deps.pinger.ping(state.target.address, this.timeoutMs);
    } catch (err) {
      ping = Promise.reject(err);
    }
    ping.then(
      (rttMs) => {
        this.lastPingError = '';
        if (settled()) this.record(state, rttMs);
      },
      (err: unknown) => {
        if (!settled()) return;
        const message = errorMessage(err);
        if (message !== this.lastPingError) this.deps.log.warn({ err: message }, 'cannot send peer probes');
        this.lastPingError = message;
      },
    );
  }

  /** When the oldest probe out is to be given up on, if any is out. */
  private staleDeadline(): number | undefined {
    const oldest = this.outstanding.values().next().value as PeerState | undefined;
    return oldest?.outSince === undefined ? undefined : oldest.outSince + this.timeoutMs + PING_GRACE_MS;
  }

  /** A probe the pinger has not settled a grace period past its timeout counts as failed, so it cannot wedge its peer. */
  private giveUpOnStaleProbes(): void {
    const limit = this.deps.clock.now() - this.timeoutMs - PING_GRACE_MS;
    // Bounded by the probes out; oldest first, so it stops at the first one still within its time.
    for (const state of this.outstanding) {
      if (state.outSince === undefined || state.outSince > limit) break;
      state.outSince = undefined;
      this.outstanding.delete(state);
      if (this.peers.get(state.target.key) === state) this.record(state, undefined);
    }
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
