/**
 * An in-memory LeaseStore with etcd's revision semantics (a global revision, each key's create and mod revision, the
 * etcd lease it hangs on) and its read rules (lease-entry.ts, the same as the etcd store's), so the etcd subnet
 * manager's policy can be unit-tested on a manual clock. Tests write to it as any node could: `put` and `del` with
 * raw paths and values.
 */
import { encodeLeaseAttrs, type Lease } from '../../flanneld/lease/lease.js';
import type { SubnetPair } from '../../flanneld/lease/subnet-key.js';
import { AsyncQueue } from '../../flanneld/runtime/async-queue.js';
import { readSubnetKeyPath, subnetKeyPath, subnetsPrefix } from '../../flanneld/subnet/etcd/keys.js';
import { NO_LEASE, readLeaseEntry, type RawKeyValue } from '../../flanneld/subnet/etcd/lease-entry.js';
import type {
  KeyVersion,
  LeaseSnapshot,
  LeaseStore,
  SkippedEntry,
  StoreChange,
  StoreWatchBatch,
  StoredLease,
  UnreadableLease,
} from '../../flanneld/subnet/etcd/lease-store.js';

interface Event {
  readonly type: 'put' | 'delete';
  readonly kv: RawKeyValue;
}

export class MemoryLeaseStore implements LeaseStore {
  private revision = 1n;
  private nextLeaseId = 1000;
  private readonly kvs = new Map<string, RawKeyValue>();
  private readonly history: Event[] = [];
  private readonly watchers = new Set<{ readonly path?: string; readonly queue: AsyncQueue<StoreWatchBatch> }>();
  /** etcd leases granted and not revoked. */
  readonly grantedLeases = new Set<string>();
  readonly revoked: string[] = [];
  config: string | undefined;

  constructor(private readonly prefix: string) {}

  /** A raw put, as `etcdctl put` (no etcd lease: "0") or with `lease`. */
  put(path: string, value: string | Buffer, lease = NO_LEASE): void {
    this.revision++;
    const old = this.kvs.get(path);
    const kv: RawKeyValue = {
      key: Buffer.from(path),
      value: Buffer.from(value),
      mod_revision: String(this.revision),
      create_revision: old ? old.create_revision : String(this.revision),
      lease,
    };
    this.kvs.set(path, kv);
    this.emit({ type: 'put', kv });
  }

  del(path: string): void {
    const old = this.kvs.get(path);
    if (!old) return;
    this.revision++;
    this.kvs.delete(path);
    this.emit({ type: 'delete', kv: { ...old, value: Buffer.alloc(0), mod_revision: String(this.revision) } });
  }

  raw(path: string): RawKeyValue | undefined {
    return this.kvs.get(path);
  }

  pathOf(pair: SubnetPair): string {
    return subnetKeyPath(this.prefix, pair);
  }

  async getConfig(): Promise<string | undefined> {
    return this.config;
  }

  async list(): Promise<LeaseSnapshot> {
    const leases: StoredLease[] = [];
    const skipped: SkippedEntry[] = [];
    for (const kv of [...this.kvs.values()].sort((a, b) => Buffer.compare(a.key, b.key))) {
      if (!kv.key.toString().startsWith(subnetsPrefix(this.prefix))) continue;
      const entry = readLeaseEntry(this.prefix, kv);
      if (entry.kind === 'lease') leases.push(entry.stored);
      else skipped.push(entry.kind === 'unreadable' ? entry.unreadable : entry.skipped);
    }
    return { leases, skipped, revision: this.revision };
  }

  async get(pair: SubnetPair): Promise<{ stored?: StoredLease; unreadable?: UnreadableLease; revision: bigint }> {
    const kv = this.kvs.get(this.pathOf(pair));
    if (!kv) return { revision: this.revision };
    const entry = readLeaseEntry(this.prefix, kv);
    if (entry.kind === 'lease') return { stored: entry.stored, revision: this.revision };
    if (entry.kind === 'unreadable') return { unreadable: entry.unreadable, revision: this.revision };
    return { revision: this.revision };
  }

  async createIfAbsent(lease: Lease, ttlSeconds: number | null, _signal?: AbortSignal, noneCreatedAfter?: bigint): Promise<StoredLease | 'taken'> {
    const path = this.pathOf(lease);
    if (this.kvs.has(path)) return 'taken';
    if (noneCreatedAfter !== undefined && [...this.kvs.values()].some((kv) => BigInt(kv.create_revision) > noneCreatedAfter)) return 'taken';
    this.put(path, encodeLeaseAttrs(lease.attrs), this.grant(ttlSeconds));
    return this.storedAt(path);
  }

  async replaceIfUnchanged(lease: Lease, expected: KeyVersion, ttlSeconds: number | null, _signal: AbortSignal, revoke?: string): Promise<StoredLease | 'changed'> {
    const path = this.pathOf(lease);
    const kv = this.kvs.get(path);
    if (!kv || BigInt(kv.mod_revision) !== expected.modRevision) return 'changed';
    const id = this.grant(ttlSeconds);
    this.put(path, encodeLeaseAttrs(lease.attrs), id);
    if (revoke !== undefined && revoke !== id && revoke !== NO_LEASE) this.revoke(revoke);
    return this.storedAt(path);
  }

  async deleteIfUnchanged(expected: StoredLease): Promise<boolean> {
    const path = this.pathOf(expected.lease);
    const kv = this.kvs.get(path);
    if (!kv || BigInt(kv.mod_revision) !== expected.modRevision) return false;
    this.del(path);
    return true;
  }

  watch(fromRevision: bigint, signal: AbortSignal, only?: SubnetPair): AsyncIterable<StoreWatchBatch> {
    const queue = new AsyncQueue<StoreWatchBatch>();
    const watcher = { ...(only ? { path: this.pathOf(only) } : {}), queue };
    // Nothing is ever compacted here: a watch from the past replays what it missed, as etcd's does.
    for (const event of this.history) if (BigInt(event.kv.mod_revision) >= fromRevision) this.deliver(watcher, event);
    this.watchers.add(watcher);
    const stop = (): void => {
      this.watchers.delete(watcher);
      queue.end();
    };
    signal.addEventListener('abort', stop, { once: true });
    return queue;
  }

  /** Ends every open watch as a compaction would: the callers re-list. */
  forceResync(): void {
    for (const w of [...this.watchers]) {
      w.queue.push({ kind: 'resync', reason: 'required revision has been compacted' });
      w.queue.end();
      this.watchers.delete(w);
    }
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  private grant(ttlSeconds: number | null): string {
    if (ttlSeconds === null) return NO_LEASE;
    const id = String(this.nextLeaseId++);
    this.grantedLeases.add(id);
    return id;
  }

  private revoke(id: string): void {
    this.revoked.push(id);
    this.grantedLeases.delete(id);
    for (const [path, kv] of [...this.kvs]) if (kv.lease === id) this.del(path);
  }

  private storedAt(path: string): StoredLease {
    const entry = readLeaseEntry(this.prefix, this.kvs.get(path)!);
    if (entry.kind !== 'lease') throw new Error(`MemoryLeaseStore: ${path} holds no lease`);
    return entry.stored;
  }

  private emit(event: Event): void {
    this.history.push(event);
    for (const w of this.watchers) this.deliver(w, event);
  }

  private deliver(w: { readonly path?: string; readonly queue: AsyncQueue<StoreWatchBatch> }, event: Event): void {
    const path = event.kv.key.toString();
    if (!path.startsWith(subnetsPrefix(this.prefix)) || (w.path !== undefined && w.path !== path)) return;
    const changes: StoreChange[] = [];
    const skipped: SkippedEntry[] = [];
    const clearedPaths: string[] = [];
    if (event.type === 'delete') {
      const key = readSubnetKeyPath(this.prefix, path);
      if ('pair' in key) changes.push({ type: 'delete', key: path.slice(subnetsPrefix(this.prefix).length) });
      else clearedPaths.push(path);
    } else {
      const entry = readLeaseEntry(this.prefix, event.kv);
      if (entry.kind === 'lease') changes.push({ type: 'put', stored: entry.stored });
      else skipped.push(entry.kind === 'unreadable' ? entry.unreadable : entry.skipped);
    }
    w.queue.push({ kind: 'changes', changes, skipped, clearedPaths });
  }
}
