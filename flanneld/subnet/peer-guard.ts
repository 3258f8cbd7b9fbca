/**
 * The gate between the shared store and the backends: every peer lease is checked (peer-checks.ts, plus overlap
 * with other live peers and reuse of another peer's VtepMAC) before a backend sees it. A refused peer is logged
 * once with its key and reason, counted, listed by `flanneld status`, and forgotten when it goes away; a peer that
 * was refused only because another one held its subnet or MAC is let in once that one is gone. Nothing a refused
 * lease says ever reaches the kernel, and it never touches readiness: it is someone else's entry, not our fault.
 */
import type { Logger } from 'pino';
import { formatCidr } from '../ip/cidr.js';
import type { Lease, LeaseEvent } from '../lease/lease.js';
import { bounded, checkPeerLease, publishedMacs, type PeerRules, type Refusal, type RefusalReason } from '../lease/peer-checks.js';
import { formatSubnetKey } from '../lease/subnet-key.js';
import { SubnetIndex } from '../lease/subnet-index.js';

export interface PeerGuardObserver {
  /** A peer was refused (or refused for a new reason). */
  refused?(reason: RefusalReason): void;
  /** The set of refused peers changed; read it, do not keep it. */
  refusedChanged?(refused: ReadonlyMap<string, Refusal>): void;
}

/** One spelling per MAC (case and separator as written vary), so a MAC is indexed and looked up alike. */
const macKey = (mac: unknown): string => String(mac).toLowerCase().replaceAll('-', ':');

/** Refusals another peer's departure can lift; the rest hold as long as the lease says the same. */
const LIFTABLE: ReadonlySet<RefusalReason> = new Set(['overlaps-peer', 'duplicate-vtep-mac']);

export class PeerGuard {
  private readonly accepted = new Map<string, Lease>();
  private readonly refusedPeers = new Map<string, { lease: Lease; refusal: Refusal }>();
  private readonly subnets = new SubnetIndex<string>();
  private readonly macs = new Map<string, string>();
  private readonly ownKey: string;

  constructor(private readonly rules: PeerRules, private readonly log: Logger, private readonly observer: PeerGuardObserver = {}) {
    this.ownKey = formatSubnetKey(rules.own);
  }

  refused(): ReadonlyMap<string, Refusal> {
    return new Map([...this.refusedPeers].map(([k, v]) => [k, v.refusal]));
  }

  /** The events a backend may see for this batch from the store. */
  filter(events: readonly LeaseEvent[]): LeaseEvent[] {
    const out: LeaseEvent[] = [];
    let freed = false;
    const refusedBefore = this.refusedPeers.size;
    let refusalsChanged = false;
    for (const event of events) {
      const key = formatSubnetKey(event.lease);
      if (key === this.ownKey) continue;
      const previous = this.accepted.get(key);
      if (previous) {
        this.unindex(key, previous);
        this.accepted.delete(key);
        freed = true;
      }
      if (event.type === 'removed') {
        if (previous) out.push({ type: 'removed', lease: previous });
        if (this.refusedPeers.delete(key)) refusalsChanged = true;
        continue;
      }
      const refusal = this.check(key, event.lease);
      if (refusal) {
        if (previous) out.push({ type: 'removed', lease: previous });
        refusalsChanged = this.recordRefusal(key, event.lease, refusal) || refusalsChanged;
      } else {
        if (this.refusedPeers.delete(key)) {
          refusalsChanged = true;
          this.log.info({ peer: key }, 'peer lease accepted now');
        }
        this.accept(key, event.lease);
        out.push(event);
      }
    }
    if (freed) refusalsChanged = this.retryLiftable(out) || refusalsChanged;
    if (refusalsChanged || refusedBefore !== this.refusedPeers.size) this.observer.refusedChanged?.(this.refused());
    return out;
  }

  private check(key: string, lease: Lease): Refusal | undefined {
    const alone = checkPeerLease(lease, this.rules);
    if (alone) return alone;
    for (const net of [lease.subnet, lease.ipv6Subnet]) {
      const hit = net && this.subnets.overlapping(net);
      if (net && hit) return { reason: 'overlaps-peer', detail: `subnet ${formatCidr(net)} overlaps ${formatCidr(hit.net)} of the live peer ${hit.value}` };
    }
    for (const mac of publishedMacs(lease)) {
      const holder = this.macs.get(macKey(mac));
      if (holder && holder !== key) return { reason: 'duplicate-vtep-mac', detail: `VtepMAC ${String(mac)} is already the live peer ${holder}'s` };
    }
    return undefined;
  }

  private accept(key: string, lease: Lease): void {
    this.accepted.set(key, lease);
    for (const net of [lease.subnet, lease.ipv6Subnet]) if (net) this.subnets.add(net, key);
    for (const mac of publishedMacs(lease)) this.macs.set(macKey(mac), key);
  }

  private unindex(key: string, lease: Lease): void {
    for (const net of [lease.subnet, lease.ipv6Subnet]) if (net) this.subnets.delete(net);
    for (const mac of publishedMacs(lease)) {
      const m = macKey(mac);
      if (this.macs.get(m) === key) this.macs.delete(m);
    }
  }

  /** Logs a refusal once per key and reason; returns whether it is new. */
  private recordRefusal(key: string, lease: Lease, refusal: Refusal): boolean {
    const known = this.refusedPeers.get(key);
    this.refusedPeers.set(key, { lease, refusal });
    if (known && known.refusal.reason === refusal.reason && known.refusal.detail === refusal.detail) return false;
    this.log.warn({ peer: bounded(key, 80), reason: refusal.reason }, `peer lease refused: ${refusal.detail}`);
    this.observer.refused?.(refusal.reason);
    return true;
  }

  /** Peers refused because of one that has left may be let in now. */
  private retryLiftable(out: LeaseEvent[]): boolean {
    let changed = false;
    for (const [key, { lease, refusal }] of [...this.refusedPeers]) {
      if (!LIFTABLE.has(refusal.reason)) continue;
      const again = this.check(key, lease);
      if (again) {
        changed = this.recordRefusal(key, lease, again) || changed;
        continue;
      }
      this.refusedPeers.delete(key);
      this.log.info({ peer: key }, 'peer lease accepted now');
      this.accept(key, lease);
      out.push({ type: 'added', lease });
      changed = true;
    }
    return changed;
  }
}

/**
 * The store's lease stream as the guard lets it through. A batch the guard empties is still passed on: the first one
 * is the snapshot the reconciler waits for before it cleans up.
 */
export async function* guardedLeases(source: AsyncIterable<readonly LeaseEvent[]>, guard: PeerGuard): AsyncIterable<readonly LeaseEvent[]> {
  for await (const batch of source) yield guard.filter(batch);
}
