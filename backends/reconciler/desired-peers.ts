/**
 * The reconciler's desired state: the live peers and the kernel entries each one wants, kept incrementally so a
 * lease event costs the size of that peer's entries, not of the whole set. It also records, per turn, exactly which
 * entries changed (the changes to apply) and which peers changed (for observers and userspace forwarders).
 */
import type { Logger } from 'pino';
import type { Lease } from '../../flanneld/lease/lease.js';
import type { DatapathChange, DatapathEntry, EntryKind } from '../datapath/datapath.js';
import { describeEntry, entryIdentity } from '../datapath/entry-key.js';
import { entrySatisfies, orderChanges } from '../entry-diff.js';
import type { PeerEntries } from '../peer-entries.js';

export type EntryCounts = Readonly<Partial<Record<EntryKind, number>>>;

const same = (a: DatapathEntry, b: DatapathEntry): boolean => entrySatisfies(a, b) && entrySatisfies(b, a);

export class DesiredPeers {
  readonly peers = new Map<string, Lease>();
  /** Desired entries by identity. */
  private readonly desired = new Map<string, DatapathEntry>();
  /** The identities each peer holds, for incremental removal. */
  private readonly byPeer = new Map<string, string[]>();
  /**
   * Which peers want each desired entry: an entry stays while any of them does, so one peer leaving never takes
   * another's entry with it. The first to want an identity owns its value; a later peer wanting other values for it
   * is refused that entry (and named), never allowed to overwrite it.
   */
  private readonly wantedBy = new Map<string, Set<string>>();
  /** Kept with `desired`, so reporting counts per turn costs nothing at thousands of peers. */
  private readonly counts: Partial<Record<EntryKind, number>> = {};
  private changedPeers = new Map<string, Lease | undefined>();
  private readonly pending = new Map<string, DatapathChange>();
  /** Warnings already given, so a lease that keeps arriving does not repeat them. */
  private readonly warned = new Set<string>();

  constructor(
    private readonly entriesFor: (peer: Lease) => PeerEntries,
    private readonly log: Logger,
    /** An identity the peer no longer wants and nobody else does. */
    private readonly released: (id: string, peer: string) => void,
  ) {}

  /** Starts a turn: the changes recorded from here on are this turn's. */
  beginTurn(): void {
    this.pending.clear();
  }

  /** Replaces one peer's desired entries (`lease` undefined: the peer is gone) and records what changed. */
  set(key: string, lease: Lease | undefined): void {
    const old = this.release(key);
    this.changedPeers.set(key, lease);
    if (lease) {
      this.peers.set(key, lease);
      this.byPeer.set(key, this.want(key, lease, old));
    } else {
      this.peers.delete(key);
    }
    for (const [id, entry] of old) if (!this.desired.has(id)) this.pending.set(id, { op: 'delete', entry });
  }

  /** Recomputes every peer's entries (a device was re-created with a new index). */
  replanAll(): void {
    for (const [key, lease] of [...this.peers]) this.set(key, lease);
  }

  /** This turn's changes, in the kernel-safe order. */
  changes(): DatapathChange[] {
    return orderChanges([...this.pending.values()]);
  }

  /** The peers changed since the last call (undefined = gone). */
  takeChangedPeers(): Map<string, Lease | undefined> {
    const changed = this.changedPeers;
    this.changedPeers = new Map();
    return changed;
  }

  wanted(id: string): DatapathEntry | undefined {
    return this.desired.get(id);
  }

  all(): DatapathEntry[] {
    return [...this.desired.values()];
  }

  /** A peer that wants the entry (the first, which owns its value). */
  ownerOf(id: string): string | undefined {
    return this.wantedBy.get(id)?.values().next().value;
  }

  entryCounts(): EntryCounts {
    return this.counts;
  }

  /** Drops the peer's claims; returns the entries nobody wants any more. */
  private release(key: string): Map<string, DatapathEntry> {
    const old = new Map<string, DatapathEntry>();
    for (const id of this.byPeer.get(key) ?? []) {
      const owners = this.wantedBy.get(id);
      owners?.delete(key);
      if (owners && owners.size > 0) continue;
      this.wantedBy.delete(id);
      const entry = this.desired.get(id);
      if (entry) {
        old.set(id, entry);
        this.count(entry.kind, -1);
      }
      this.desired.delete(id);
      this.released(id, key);
    }
    this.byPeer.delete(key);
    return old;
  }

  /** Claims the lease's entries for the peer; `old` are the ones it held before, to tell a change from a repeat. */
  private want(key: string, lease: Lease, old: ReadonlyMap<string, DatapathEntry>): string[] {
    const { entries, skipped } = this.entriesFor(lease);
    for (const reason of skipped) this.warnOnce(reason, () => this.log.warn({ peer: key }, reason));
    const mine: string[] = [];
    for (const e of entries) {
      const id = entryIdentity(e);
      const held = this.desired.get(id);
      if (held && !old.has(id) && !same(e, held)) {
        this.warnOnce(`clash ${key} ${id}`, () =>
          this.log.warn({ peer: key, holder: this.ownerOf(id), entry: describeEntry(e) }, 'peer wants an entry another live peer holds with other values; left as the other peer has it'));
        continue;
      }
      mine.push(id);
      this.wantedBy.set(id, (this.wantedBy.get(id) ?? new Set()).add(key));
      if (!this.desired.has(id)) this.count(e.kind, 1);
      this.desired.set(id, e);
      const was = old.get(id);
      if (!was || !same(e, was)) this.pending.set(id, { op: 'replace', entry: e });
      else if (this.pending.get(id)?.op === 'delete') this.pending.delete(id);
    }
    return mine;
  }

  private count(kind: EntryKind, delta: number): void {
    this.counts[kind] = (this.counts[kind] ?? 0) + delta;
  }

  private warnOnce(key: string, warn: () => void): void {
    if (!this.warned.has(key)) warn();
    this.warned.add(key);
  }
}
