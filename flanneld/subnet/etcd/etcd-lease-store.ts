/**
 * LeaseStore over etcd v3. Claims are compare-and-swap transactions on the key's create/mod revision, so two nodes
 * can never hold one subnet; TTLs are etcd leases (none for reservations). Listing is a paged range read at one
 * revision (paged-range.ts): no per-key TimeToLive round trips as upstream does, which matters with thousands of
 * nodes. Only canonical keys with values under the size cap are leases (lease-entry.ts); the rest is reported as
 * skipped, and a deleted non-canonical key is never the deletion of the lease it resembles.
 */
import { GRPCOutOfRangeError, GRPCResourceExhastedError, type Etcd3, type IWatchResponse } from 'etcd3';
import type { Logger } from 'pino';
import { encodeLeaseAttrs, type Lease } from '../../lease/lease.js';
import { formatSubnetKey, type SubnetPair } from '../../lease/subnet-key.js';
import { AsyncQueue, raceAbort } from '../../runtime/async-queue.js';
import { FlannelError, errorMessage } from '../../runtime/errors.js';
import { configKey, readSubnetKeyPath, subnetKeyPath, subnetsPrefix } from './keys.js';
import { NO_LEASE, readLeaseEntry, storedLease } from './lease-entry.js';
import type {
  KeyVersion,
  LeaseSnapshot,
  LeaseStore,
  SkippedEntry,
  StoreChange,
  StoreWatchBatch,
  StoredLease,
  UnreadableLease,
} from './lease-store.js';
import { PagedReader, prefixEnd, type PageFailure } from './paged-range.js';

export interface EtcdLeaseStoreOptions {
  /** Keys per listing request (default DEFAULT_PAGE_SIZE). */
  readonly pageSize?: number;
  readonly log?: Logger;
}

export class EtcdLeaseStore implements LeaseStore {
  private readonly pages: PagedReader;

  constructor(
    private readonly client: Etcd3,
    private readonly prefix: string,
    options: EtcdLeaseStoreOptions = {},
  ) {
    this.pages = new PagedReader({
      fetch: async (req) => {
        const res = await client.kv.range({
          key: req.key,
          range_end: req.rangeEnd,
          limit: req.limit,
          ...(req.revision !== undefined ? { revision: String(req.revision) } : {}),
        });
        return { kvs: res.kvs, more: res.more, revision: BigInt(res.header.revision) };
      },
      classify: classifyRangeError,
      ...(options.pageSize !== undefined ? { pageSize: options.pageSize } : {}),
      onShrink: (pageSize) =>
        options.log?.warn({ pageSize }, 'a page of leases was over the etcd client receive limit; reading smaller pages from now on'),
    });
  }

  /** Keys per listing request now (smaller after a page was over the receive limit). */
  get pageSize(): number {
    return this.pages.pageSize;
  }

  async getConfig(signal: AbortSignal): Promise<string | undefined> {
    const key = configKey(this.prefix);
    return this.call('get', key, signal, async () => (await this.client.get(key).string()) ?? undefined);
  }

  async list(signal: AbortSignal): Promise<LeaseSnapshot> {
    const prefix = subnetsPrefix(this.prefix);
    const { items, revision } = await this.call('list', prefix, signal, () =>
      this.pages.readAll(prefix, (kv) => readLeaseEntry(this.prefix, kv)),
    );
    const leases: StoredLease[] = [];
    const skipped: SkippedEntry[] = [];
    for (const entry of items) {
      if (entry.kind === 'lease') leases.push(entry.stored);
      else skipped.push(entry.kind === 'unreadable' ? skippedOf(entry.unreadable) : entry.skipped);
    }
    return { leases, skipped, revision };
  }

  async get(pair: SubnetPair, signal: AbortSignal): Promise<{ stored?: StoredLease; unreadable?: UnreadableLease; revision: bigint }> {
    const key = subnetKeyPath(this.prefix, pair);
    const res = await this.call('get', key, signal, () => this.client.get(key).exec());
    const revision = BigInt(res.header.revision);
    const kv = res.kvs[0];
    if (!kv) return { revision };
    const entry = readLeaseEntry(this.prefix, kv);
    if (entry.kind === 'lease') return { stored: entry.stored, revision };
    if (entry.kind === 'unreadable') return { unreadable: entry.unreadable, revision };
    return { revision };
  }

  async createIfAbsent(lease: Lease, ttlSeconds: number | null, signal: AbortSignal, noneCreatedAfter?: bigint): Promise<StoredLease | 'taken'> {
    const key = subnetKeyPath(this.prefix, lease);
    return this.call('create', key, signal, async () => {
      const storeLeaseId = await this.grant(ttlSeconds);
      const subnets = Buffer.from(subnetsPrefix(this.prefix));
      // A range compare holds when every key in the range passes it (an empty range compares as create revision 0).
      const unchanged = noneCreatedAfter === undefined
        ? []
        : [{ key: subnets, range_end: prefixEnd(subnets), target: 'Create' as const, result: 'Less' as const, create_revision: String(noneCreatedAfter + 1n) }];
      const res = await this.client.kv.txn({
        compare: [{ key: Buffer.from(key), target: 'Create', result: 'Equal', create_revision: '0' }, ...unchanged],
        success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(encodeLeaseAttrs(lease.attrs)), lease: storeLeaseId } }],
        failure: [],
      });
      if (!res.succeeded) {
        await this.revokeQuietly(storeLeaseId);
        return 'taken' as const;
      }
      const revision = BigInt(res.header.revision);
      return storedLease(lease, { modRevision: revision, createRevision: revision, storeLeaseId });
    });
  }

  async replaceIfUnchanged(
    lease: Lease,
    expected: KeyVersion,
    ttlSeconds: number | null,
    signal: AbortSignal,
    revoke?: string,
  ): Promise<StoredLease | 'changed'> {
    const key = subnetKeyPath(this.prefix, lease);
    return this.call('replace', key, signal, async () => {
      const storeLeaseId = await this.grant(ttlSeconds);
      const res = await this.client.kv.txn({
        compare: [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: String(expected.modRevision) }],
        success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(encodeLeaseAttrs(lease.attrs)), lease: storeLeaseId } }],
        failure: [],
      });
      if (!res.succeeded) {
        await this.revokeQuietly(storeLeaseId);
        return 'changed' as const;
      }
      // The key now hangs on the new etcd lease; the old one of ours would only linger until its TTL.
      if (revoke !== undefined && revoke !== storeLeaseId) await this.revokeQuietly(revoke);
      return storedLease(lease, { modRevision: BigInt(res.header.revision), createRevision: expected.createRevision, storeLeaseId });
    });
  }

  async deleteIfUnchanged(expected: StoredLease, signal: AbortSignal): Promise<boolean> {
    const key = subnetKeyPath(this.prefix, expected.lease);
    return this.call('delete', key, signal, async () => {
      const res = await this.client.kv.txn({
        compare: [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: String(expected.modRevision) }],
        success: [{ request_delete_range: { key: Buffer.from(key) } }],
        failure: [],
      });
      return res.succeeded;
    });
  }

  watch(fromRevision: bigint, signal: AbortSignal, only?: SubnetPair): AsyncIterable<StoreWatchBatch> {
    const queue = new AsyncQueue<StoreWatchBatch>();
    const builder = only
      ? this.client.watch().key(subnetKeyPath(this.prefix, only))
      : this.client.watch().prefix(subnetsPrefix(this.prefix));
    // watcher() attaches at once; create() would only hand the watcher over after the first connect.
    const watcher = builder.startRevision(String(fromRevision)).watcher();
    watcher.on('data', (res: IWatchResponse) => {
      const changes: StoreChange[] = [];
      const skipped: SkippedEntry[] = [];
      const clearedPaths: string[] = [];
      for (const ev of res.events) {
        if (ev.type === 'Delete') {
          const path = ev.kv.key.toString();
          const key = readSubnetKeyPath(this.prefix, path);
          if ('pair' in key) changes.push({ type: 'delete', key: formatSubnetKey(key.pair) });
          else clearedPaths.push(path);
          continue;
        }
        const entry = readLeaseEntry(this.prefix, ev.kv);
        if (entry.kind === 'lease') changes.push({ type: 'put', stored: entry.stored });
        else skipped.push(entry.kind === 'unreadable' ? skippedOf(entry.unreadable) : entry.skipped);
      }
      if (changes.length > 0 || skipped.length > 0 || clearedPaths.length > 0) queue.push({ kind: 'changes', changes, skipped, clearedPaths });
    });
    const resync = (err: unknown): void => {
      queue.push({ kind: 'resync', reason: errorMessage(err) });
      queue.end();
    };
    watcher.on('error', resync);
    // etcd3 resumes a dropped stream from the last revision by itself; a response over the receive limit would
    // come back the same way forever, so that one ends the watch and the caller re-lists in pages.
    watcher.on('disconnected', (err: Error) => {
      if (classifyRangeError(err) === 'too-large') resync(err);
    });
    const stop = (): void => {
      queue.end();
      watcher.cancel().catch(() => undefined);
    };
    signal.addEventListener('abort', stop, { once: true });
    const iterator = queue[Symbol.asyncIterator]();
    return {
      [Symbol.asyncIterator]: () => ({
        next: () => iterator.next(),
        return: async () => {
          signal.removeEventListener('abort', stop);
          stop();
          return { value: undefined, done: true };
        },
      }),
    };
  }

  private async grant(ttlSeconds: number | null): Promise<string> {
    if (ttlSeconds === null) return NO_LEASE;
    const res = await this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 });
    return String(res.ID);
  }

  private async revokeQuietly(id: string): Promise<void> {
    if (id === NO_LEASE) return;
    await this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined);
  }

  private async call<T>(op: string, key: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    try {
      return await raceAbort(fn(), signal);
    } catch (err) {
      if (signal.aborted) throw err;
      throw new FlannelError('ERR_STORE_UNAVAILABLE', `etcd ${op} ${key}: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/** Only the skip facts: an unreadable lease's version fields are for compare-and-swap, not for listings. */
function skippedOf(entry: UnreadableLease): SkippedEntry {
  return { path: entry.path, kind: entry.kind, reason: entry.reason };
}

export function classifyRangeError(err: unknown): PageFailure {
  const message = errorMessage(err);
  if (err instanceof GRPCOutOfRangeError || message.includes('required revision has been compacted')) return 'compacted';
  if (err instanceof GRPCResourceExhastedError || /RESOURCE_EXHAUSTED|larger than max/.test(message)) return 'too-large';
  return 'other';
}
