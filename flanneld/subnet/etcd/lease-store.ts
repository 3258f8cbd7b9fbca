/**
 * The storage port under the etcd subnet manager (upstream's Registry idea): leases in domain terms plus the
 * revision facts the policy needs for compare-and-swap. The policy runs unchanged against a fake in unit tests.
 */
import type { Lease } from '../../lease/lease.js';
import type { SubnetPair } from '../../lease/subnet-key.js';

export interface StoredLease {
  readonly lease: Lease;
  /** The subnet key (e.g. "10.244.3.0-24"), our identity for the lease. */
  readonly key: string;
  readonly modRevision: bigint;
  /** The etcd lease attached to the key, "0" for a reservation. */
  readonly storeLeaseId: string;
}

export interface SkippedEntry {
  readonly path: string;
  readonly reason: string;
}

export interface LeaseSnapshot {
  readonly leases: readonly StoredLease[];
  readonly revision: bigint;
  /** Keys or values under the subnets prefix that did not parse; they are ignored, never treated as deletions. */
  readonly skipped: readonly SkippedEntry[];
}

export type StoreChange =
  | { readonly type: 'put'; readonly stored: StoredLease }
  | { readonly type: 'delete'; readonly key: string };

export type StoreWatchBatch =
  | { readonly kind: 'changes'; readonly changes: readonly StoreChange[]; readonly skipped: readonly SkippedEntry[] }
  /** The watch cannot resume (compaction, cancel): re-list and diff. */
  | { readonly kind: 'resync'; readonly reason: string };

export interface LeaseStore {
  getConfig(signal: AbortSignal): Promise<string | undefined>;
  /** All leases in one range request. */
  list(signal: AbortSignal): Promise<LeaseSnapshot>;
  /** One key, with the store revision it was read at (to watch from). */
  get(pair: SubnetPair, signal: AbortSignal): Promise<{ readonly stored?: StoredLease; readonly revision: bigint }>;
  /** Creates the key only if it does not exist; ttlSeconds null makes a reservation (no etcd lease). */
  createIfAbsent(lease: Lease, ttlSeconds: number | null, signal: AbortSignal): Promise<StoredLease | 'taken'>;
  /** Rewrites value and TTL only if the key is unchanged since `expected`; 'changed' otherwise. */
  replaceIfUnchanged(
    lease: Lease,
    expected: StoredLease,
    ttlSeconds: number | null,
    signal: AbortSignal,
  ): Promise<StoredLease | 'changed'>;
  deleteIfUnchanged(expected: StoredLease, signal: AbortSignal): Promise<boolean>;
  /** Changes after `fromRevision` under the subnets prefix, or under one key when `only` is given. */
  watch(fromRevision: bigint, signal: AbortSignal, only?: SubnetPair): AsyncIterable<StoreWatchBatch>;
}
