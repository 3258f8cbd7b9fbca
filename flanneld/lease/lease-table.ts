/**
 * The set of known leases, keyed by subnet key, turning full snapshots and store deltas into the smallest batch of
 * added/removed events: a re-list after compaction or reconnect emits only what really changed, and a put that
 * only renews a lease (same value, new TTL) emits nothing. Removals carry the last known lease, attrs included.
 */
import { sameAttrs, type Lease, type LeaseEvent } from './lease.js';
import { formatSubnetKey } from './subnet-key.js';

export class LeaseTable {
  private readonly leases = new Map<string, Lease>();

  get size(): number {
    return this.leases.size;
  }

  values(): IterableIterator<Lease> {
    return this.leases.values();
  }

  /** Replaces everything with a snapshot; returns the difference as events. */
  replaceAll(snapshot: readonly Lease[]): LeaseEvent[] {
    const events: LeaseEvent[] = [];
    const seen = new Set<string>();
    for (const lease of snapshot) {
      const key = formatSubnetKey(lease);
      seen.add(key);
      const event = this.put(lease);
      if (event) events.push(event);
    }
    for (const [key, lease] of this.leases) {
      if (!seen.has(key)) {
        this.leases.delete(key);
        events.push({ type: 'removed', lease });
      }
    }
    return events;
  }

  put(lease: Lease): LeaseEvent | undefined {
    const key = formatSubnetKey(lease);
    const known = this.leases.get(key);
    this.leases.set(key, lease);
    if (known && sameAttrs(known.attrs, lease.attrs)) return undefined;
    return { type: 'added', lease };
  }

  remove(key: string): LeaseEvent | undefined {
    const known = this.leases.get(key);
    if (!known) return undefined;
    this.leases.delete(key);
    return { type: 'removed', lease: known };
  }
}
