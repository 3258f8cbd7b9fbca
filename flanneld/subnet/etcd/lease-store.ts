/**
 * The storage port under the etcd subnet manager (upstream's Registry idea): leases in domain terms plus the
 * revision facts the policy needs for compare-and-swap. The policy runs unchanged against a fake in unit tests.
 */
import type { Lease } from '../../lease/lease.js';
import type { SubnetPair } from '../../lease/subnet-key.js';

/** Which incarnation of a key was read, and which etcd lease it hangs on: what a compare-and-swap compares. */
export interface KeyVersion {
  readonly modRevision: bigint;
  /** Changes only when the key is deleted and created again, so an overwrite in place keeps it. */
  readonly createRevision: bigint;
  /** The etcd lease attached to the key, "0" for a reservation. */
  readonly storeLeaseId: string;
}

export interface StoredLease extends KeyVersion {
  readonly lease: Lease;
  /** The subnet key (e.g. "10.244.3.0-24"), our identity for the lease. */
  readonly key: string;
}

export type SkipKind = 'non-canonical-key' | 'oversized-value' | 'malformed-value';

/** An entry under the subnets prefix that is not a lease. `reason` is bounded in length; `path` is as stored. */
export interface SkippedEntry {
  readonly path: string;
  readonly kind: SkipKind;
  readonly reason: string;
}

/** A lease key whose value cannot be read (too large, not a lease): still a version to compare-and-swap on. */
export interface UnreadableLease extends SkippedEntry, KeyVersion {}

export interface LeaseSnapshot {
  readonly leases: readonly StoredLease[];
  readonly revision: bigint;
  /** Keys or values under the subnets prefix that are not leases; they are ignored, never treated as deletions. */
  readonly skipped: readonly SkippedEntry[];
}

export type StoreChange =
  | { readonly type: 'put'; readonly stored: StoredLease }
  | { readonly type: 'delete'; readonly key: string };

export type StoreWatchBatch =
  | {
      readonly kind: 'changes';
      readonly changes: readonly StoreChange[];
      /** Puts that are not leases: they change nothing, not even the lease their key held before. */
      readonly skipped: readonly SkippedEntry[];
      /** Paths of non-canonical keys that were deleted: never the deletion of the lease they resemble. */
      readonly clearedPaths: readonly string[];
    }
  /** The watch cannot resume (compaction, cancel, a response over the receive limit): re-list and diff. */
  | { readonly kind: 'resync'; readonly reason: string };

export interface LeaseStore {
  getConfig(signal: AbortSignal): Promise<string | undefined>;
  /** Every lease, read in pages all at one revision (a consistent snapshot). */
  list(signal: AbortSignal): Promise<LeaseSnapshot>;
  /** One key, with the store revision it was read at (to watch from); `unreadable` when it holds no lease. */
  get(
    pair: SubnetPair,
    signal: AbortSignal,
  ): Promise<{ readonly stored?: StoredLease; readonly unreadable?: UnreadableLease; readonly revision: bigint }>;
  /**
   * Creates the key only if it does not exist; ttlSeconds null makes a reservation (no etcd lease). With
   * `noneCreatedAfter` (a listing's revision) it is also 'taken' when any lease was created since that revision: a
   * dual-stack key names both subnets, so a node that picked the same IPv6 subnet with another IPv4 one holds a
   * different key, and only the listing being still current proves that neither half is taken.
   */
  createIfAbsent(lease: Lease, ttlSeconds: number | null, signal: AbortSignal, noneCreatedAfter?: bigint): Promise<StoredLease | 'taken'>;
  /**
   * Rewrites value and TTL only if the key is unchanged since `expected`; 'changed' otherwise. `revoke` is an etcd
   * lease of ours to revoke once the key has moved off it (never one read from the key: that may be anyone's).
   */
  replaceIfUnchanged(
    lease: Lease,
    expected: KeyVersion,
    ttlSeconds: number | null,
    signal: AbortSignal,
    revoke?: string,
  ): Promise<StoredLease | 'changed'>;
  deleteIfUnchanged(expected: StoredLease, signal: AbortSignal): Promise<boolean>;
  /** Changes after `fromRevision` under the subnets prefix, or under one key when `only` is given. */
  watch(fromRevision: bigint, signal: AbortSignal, only?: SubnetPair): AsyncIterable<StoreWatchBatch>;
}
