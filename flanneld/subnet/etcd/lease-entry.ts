/**
 * One etcd key-value under the subnets prefix, read as a lease or as the reason it is not one: the key must be
 * canonical and the value under the size cap before a byte of it is parsed. Reasons are bounded, since a value's
 * parse error may quote the value.
 */
import { decodeLeaseAttrs, type Lease } from '../../lease/lease.js';
import { formatSubnetKey } from '../../lease/subnet-key.js';
import { errorMessage } from '../../runtime/errors.js';
import { LOGGED_REASON_CHARS, clip, oversizeProblem } from '../store-limits.js';
import { readSubnetKeyPath } from './keys.js';
import type { KeyVersion, SkippedEntry, StoredLease, UnreadableLease } from './lease-store.js';

/** The etcd lease id of a key without one: a reservation. */
export const NO_LEASE = '0';

/** The fields of etcd3's IKeyValue this needs. */
export interface RawKeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly mod_revision: string;
  readonly create_revision: string;
  readonly lease: string;
}

export type LeaseEntry =
  | { readonly kind: 'lease'; readonly stored: StoredLease }
  /** A canonical key whose value is not a lease: it still has a version to compare-and-swap on. */
  | { readonly kind: 'unreadable'; readonly unreadable: UnreadableLease }
  | { readonly kind: 'not-a-lease-key'; readonly skipped: SkippedEntry };

export function versionOf(kv: RawKeyValue): KeyVersion {
  return { modRevision: BigInt(kv.mod_revision), createRevision: BigInt(kv.create_revision), storeLeaseId: kv.lease };
}

export function readLeaseEntry(prefix: string, kv: RawKeyValue): LeaseEntry {
  const path = kv.key.toString();
  const key = readSubnetKeyPath(prefix, path);
  if ('problem' in key) return { kind: 'not-a-lease-key', skipped: { path, kind: 'non-canonical-key', reason: key.problem } };
  const version = versionOf(kv);
  const oversize = oversizeProblem('lease value', kv.value.length);
  if (oversize) return { kind: 'unreadable', unreadable: { path, kind: 'oversized-value', reason: oversize, ...version } };
  try {
    const attrs = decodeLeaseAttrs(kv.value.toString());
    return { kind: 'lease', stored: storedLease({ ...key.pair, attrs, reservation: kv.lease === NO_LEASE }, version) };
  } catch (err) {
    const reason = `lease value is not a lease: ${clip(errorMessage(err), LOGGED_REASON_CHARS)}`;
    return { kind: 'unreadable', unreadable: { path, kind: 'malformed-value', reason, ...version } };
  }
}

/** A frozen StoredLease whose `reservation` follows the key's etcd lease, whatever the caller's lease said. */
export function storedLease(lease: Lease, version: KeyVersion): StoredLease {
  const reservation = version.storeLeaseId === NO_LEASE;
  const frozen: Lease = Object.freeze(lease.reservation === reservation ? lease : { ...lease, reservation });
  return Object.freeze({ lease: frozen, key: formatSubnetKey(lease), ...version });
}
