/**
 * The etcd lease policy, over the LeaseStore port: reuse this node's lease (or reservation) when it still fits the
 * network config, else the subnet recorded in the last subnet.env, else a random free one; every claim is a
 * compare-and-swap, retried with a fresh listing while other nodes keep winning. Expiry runs on the injected Clock.
 */
import type { Logger } from 'pino';
import { allocationRanges, parseNetworkConfig } from '../../config/network-config.js';
import type { AllocationRanges, NetworkConfig } from '../../config/network-config-types.js';
import { formatIp, sameIp, type IpAddress } from '../../ip/address.js';
import { formatCidr, overlaps, type IpNet } from '../../ip/cidr.js';
import { encodeLeaseAttrs, type Lease, type LeaseAttrs, type LeaseEvent } from '../../lease/lease.js';
import { LeaseTable } from '../../lease/lease-table.js';
import { formatSubnetKey, type SubnetPair } from '../../lease/subnet-key.js';
import { Backoff, watchBackoff } from '../../runtime/backoff.js';
import type { Clock } from '../../runtime/clock.js';
import { FlannelError, LeaseLostError, NoFreeSubnetError } from '../../runtime/errors.js';
import type { Random } from '../../runtime/random.js';
import { fitsRange, pickFreeSubnet } from '../allocator.js';
import type { LeaseRequest, SubnetManager } from '../subnet-manager.js';
import { LOGGED_REASON_CHARS, clip } from '../store-limits.js';
import { configKey, subnetsPrefix } from './keys.js';
import type { KeyVersion, LeaseSnapshot, LeaseStore, SkippedEntry, StoredLease } from './lease-store.js';
import { SkipLog } from './skip-log.js';

/** Upstream's subnetTTL. */
export const SUBNET_TTL_SECONDS = 24 * 60 * 60;
/** Conflicts that did not come with a fuller store; upstream's raceRetries. */
const MAX_STALLED_CONFLICTS = 10;
/**
 * How long one listing serves the start-up steps (previous lease, first claim attempt, first watch). With
 * thousands of nodes a listing costs tens of milliseconds and megabytes of garbage; claims stay safe because
 * they are compare-and-swap, and a watch from the listing's revision replays everything after it.
 */
const SNAPSHOT_REUSE_MS = 10_000;

export interface EtcdSubnetManagerDeps {
  readonly store: LeaseStore;
  readonly prefix: string;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly ttlSeconds?: number;
  /** The lease watch is connected (true) or failing and retrying (false): liveness for /healthz. */
  readonly onWatchState?: (up: boolean) => void;
}

export class EtcdSubnetManager implements SubnetManager {
  readonly name = 'etcd';
  private readonly ttl: number;
  private recent: { readonly snapshot: LeaseSnapshot; readonly at: number } | undefined;
  /** The version of each key this manager last wrote: tells an overwrite of our key from another node's new claim. */
  private readonly written = new Map<string, KeyVersion>();

  constructor(private readonly deps: EtcdSubnetManagerDeps) {
    this.ttl = deps.ttlSeconds ?? SUBNET_TTL_SECONDS;
  }

  async getNetworkConfig(signal: AbortSignal): Promise<NetworkConfig> {
    const { config, warnings } = await this.readConfig(signal);
    for (const warning of warnings) this.deps.log.warn({ key: configKey(this.deps.prefix) }, warning);
    return config;
  }

  async findPreviousLease(publicIP: IpAddress | undefined, signal: AbortSignal): Promise<Lease | undefined> {
    if (!publicIP) return undefined;
    const snapshot = await this.list(signal, true);
    return findOwn(snapshot.leases, { publicIP, backendType: '' })?.lease;
  }

  async acquireLease(request: LeaseRequest, signal: AbortSignal): Promise<Lease> {
    let stalled = 0;
    let lastCount = -1;
    for (let attempt = 1; ; attempt++) {
      const ranges = allocationRanges((await this.readConfig(signal)).config);
      const snapshot = await this.list(signal, attempt === 1);
      const result = await this.tryAcquire(ranges, snapshot, request, signal);
      if (result !== 'conflict') return result;
      // Each conflict means another node claimed a subnet after our listing; that is progress while the store
      // keeps filling up, so only conflicts without a fuller store count against the retry budget.
      if (snapshot.leases.length <= lastCount) stalled++;
      lastCount = snapshot.leases.length;
      this.deps.log.debug({ attempt }, 'subnet claim lost a race; retrying with a fresh listing');
      if (stalled >= MAX_STALLED_CONFLICTS) {
        throw new FlannelError('ERR_SUBNET_CONFLICT', `gave up claiming a subnet after ${attempt} conflicting attempts`);
      }
    }
  }

  /**
   * Extends the lease, or puts it back. A key that another node holds now and created after ours was gone is its
   * claim (LeaseLostError); a value written over our key in place (same create revision: the key never went away) or
   * one that is no lease at all is not a claim, since nodes only ever claim absent keys, so ours is written back.
   */
  async renewLease(lease: Lease, signal: AbortSignal): Promise<Lease> {
    const { store, log } = this.deps;
    const wanted: Lease = withoutExpiry(lease);
    const key = formatSubnetKey(lease);
    const ours = this.written.get(key);
    for (let attempt = 0; attempt < 3; attempt++) {
      const { stored, unreadable } = await store.get(lease, signal);
      const current = stored ?? unreadable;
      if (!current) {
        const created = await store.createIfAbsent(wanted, lease.reservation ? null : this.ttl, signal);
        if (created !== 'taken') return this.own(created);
        continue;
      }
      const owned = stored !== undefined && isOwnedBy(stored.lease, lease.attrs);
      if (stored && !owned && stored.createRevision !== ours?.createRevision) {
        throw new LeaseLostError(
          `lease ${stored.key} is now held by ${describeOwner(stored.lease.attrs)}, whose key was created after this node's ` +
            'was gone; that is a claim, not an overwrite, so flanneld leaves it and must lease another subnet',
        );
      }
      if (!owned) log.warn({ subnet: key, found: describeFound(stored, unreadable) }, 'own lease holds a value this node did not write; writing ours back');
      const ttl = owned && stored.lease.reservation ? null : this.ttl;
      // Only an etcd lease we granted is revoked: the one on the key now may be anyone's, holding other keys too.
      const revoke = ours?.storeLeaseId ?? (owned ? current.storeLeaseId : undefined);
      const replaced = await store.replaceIfUnchanged(wanted, current, ttl, signal, revoke);
      if (replaced !== 'changed') return this.own(replaced);
    }
    // Not LeaseLostError: a key rewritten faster than we can read it is no claim; the keeper retries with backoff.
    throw new FlannelError('ERR_SUBNET_CONFLICT', `lease ${key} kept changing under us while renewing it`);
  }

  /**
   * Yields whenever this node's key is deleted, or holds a value other than the one we wrote (another PublicIP, junk),
   * saying what it found; the lease keeper then restores it through renewLease.
   */
  async *watchOwnLease(lease: Lease, signal: AbortSignal): AsyncIterable<void> {
    const { store, log } = this.deps;
    const subnet = formatSubnetKey(lease);
    const wanted = encodeLeaseAttrs(lease.attrs);
    const foreign = (stored: StoredLease | undefined, unreadable: SkippedEntry | undefined): string | undefined =>
      unreadable ? unreadable.reason : stored && encodeLeaseAttrs(stored.lease.attrs) !== wanted ? describeFound(stored) : undefined;
    const backoff = new Backoff(watchBackoff, this.deps.random);
    while (!signal.aborted) {
      let read: Awaited<ReturnType<LeaseStore['get']>>;
      try {
        read = await store.get(lease, signal);
        backoff.reset();
      } catch (err) {
        if (signal.aborted) return;
        log.warn({ err, subnet }, 'cannot read own lease; retrying');
        await this.deps.clock.sleep(backoff.next(), signal);
        continue;
      }
      if (!read.stored && !read.unreadable) {
        log.warn({ subnet }, 'own lease is gone from the store');
        yield;
        continue;
      }
      const found = foreign(read.stored, read.unreadable);
      if (found !== undefined) {
        log.warn({ subnet, found }, 'own lease was changed by someone else');
        yield;
        continue;
      }
      for await (const batch of store.watch(read.revision + 1n, signal, lease)) {
        if (batch.kind === 'resync') break;
        const deleted = batch.changes.some((c) => c.type === 'delete');
        const changedTo = [
          ...batch.skipped.map((s) => s.reason),
          ...batch.changes.map((c) => (c.type === 'put' ? foreign(c.stored, undefined) : undefined)),
        ].find((f) => f !== undefined);
        if (!deleted && changedTo === undefined) continue;
        if (changedTo !== undefined) log.warn({ subnet, found: changedTo }, 'own lease was changed by someone else');
        else log.warn({ subnet }, 'own lease is gone from the store');
        yield;
      }
    }
  }

  async *watchLeases(signal: AbortSignal): AsyncIterable<readonly LeaseEvent[]> {
    const table = new LeaseTable();
    const skipLog = new SkipLog(this.deps.log);
    const backoff = new Backoff(watchBackoff, this.deps.random);
    let first = true;
    while (!signal.aborted) {
      let snapshot;
      try {
        snapshot = await this.list(signal, first);
        this.recent = undefined;
        backoff.reset();
        this.deps.onWatchState?.(true);
      } catch (err) {
        if (signal.aborted) return;
        this.deps.onWatchState?.(false);
        this.deps.log.warn({ err }, 'cannot list leases; retrying');
        await this.deps.clock.sleep(backoff.next(), signal);
        continue;
      }
      skipLog.replaceAll(snapshot.skipped);
      const events = table.replaceAll(snapshot.leases.map((s) => s.lease));
      if (first || events.length > 0) yield events;
      first = false;
      for await (const batch of this.deps.store.watch(snapshot.revision + 1n, signal)) {
        if (batch.kind === 'resync') {
          this.deps.log.info({ reason: batch.reason }, 'lease watch cannot resume; re-listing');
          break;
        }
        skipLog.report(batch.skipped);
        for (const path of batch.clearedPaths) skipLog.forget(path);
        const delta: LeaseEvent[] = [];
        for (const change of batch.changes) {
          if (change.type === 'delete') skipLog.forget(subnetsPrefix(this.deps.prefix) + change.key);
          const event = change.type === 'put' ? table.put(change.stored.lease) : table.remove(change.key);
          if (event) delta.push(event);
        }
        if (delta.length > 0) yield delta;
      }
      if (!signal.aborted) await this.deps.clock.sleep(backoff.next(), signal);
    }
  }

  /** A fresh listing, or with `reuse` the one taken moments ago by an earlier start-up step. */
  private async list(signal: AbortSignal, reuse: boolean): Promise<LeaseSnapshot> {
    const recent = this.recent;
    if (reuse && recent && this.deps.clock.now() - recent.at < SNAPSHOT_REUSE_MS) return recent.snapshot;
    const snapshot = await this.deps.store.list(signal);
    this.recent = { snapshot, at: this.deps.clock.now() };
    return snapshot;
  }

  private async readConfig(signal: AbortSignal): Promise<{ config: NetworkConfig; warnings: string[] }> {
    const key = configKey(this.deps.prefix);
    const text = await this.deps.store.getConfig(signal);
    if (text === undefined) {
      throw new FlannelError(
        'ERR_CONFIG_NOT_FOUND',
        // verbatim upstream: flannel pkg/subnet/etcd/registry.go, both sentences (we add the key)
        `flannel config not found in etcd store at ${key}. Did you create your config using etcdv3 API?`,
      );
    }
    const parsed = parseNetworkConfig(text);
    allocationRanges(parsed.config);
    return parsed;
  }

  private async tryAcquire(
    ranges: AllocationRanges,
    snapshot: LeaseSnapshot,
    request: LeaseRequest,
    signal: AbortSignal,
  ): Promise<Lease | 'conflict'> {
    const { store, log } = this.deps;
    const leases = snapshot.leases;
    let taken = leases;
    const mine = findOwn(leases, request.attrs);
    if (mine) {
      if (fitsRanges(ranges, mine.lease)) {
        const wanted: Lease = { ...pairOf(mine.lease), attrs: request.attrs, reservation: mine.lease.reservation };
        const replaced = await store.replaceIfUnchanged(wanted, mine, mine.lease.reservation ? null : this.ttl, signal, mine.storeLeaseId);
        return replaced === 'changed' ? 'conflict' : this.own(replaced);
      }
      if (mine.lease.reservation) {
        throw new FlannelError(
          'ERR_CONFIG_INVALID',
          `reservation ${mine.key} for this node does not fit the network config (SubnetLen/SubnetMin/SubnetMax)`,
        );
      }
      log.info({ subnet: mine.key }, 'previous lease does not fit the network config; releasing it');
      if (!(await store.deleteIfUnchanged(mine, signal))) return 'conflict';
      taken = leases.filter((l) => l !== mine);
    }
    const pair = this.choose(ranges, taken, request.previous);
    // The key proves one half of a dual-stack pair free; the listing being still current proves the other.
    const listedAt = pair.subnet && pair.ipv6Subnet ? snapshot.revision : undefined;
    const created = await store.createIfAbsent({ ...pair, attrs: request.attrs, reservation: false }, this.ttl, signal, listedAt);
    return created === 'taken' ? 'conflict' : this.own(created);
  }

  private choose(ranges: AllocationRanges, taken: readonly StoredLease[], previous?: SubnetPair): SubnetPair {
    const pick = (family: 'subnet' | 'ipv6Subnet', range = family === 'subnet' ? ranges.v4 : ranges.v6): IpNet | undefined => {
      if (!range) return undefined;
      const held = taken.map((s) => s.lease[family]).filter((n): n is IpNet => n !== undefined);
      const prev = previous?.[family];
      if (prev && fitsRange(range, prev) && !held.some((n) => overlaps(n, prev))) return prev;
      const chosen = pickFreeSubnet(range, held, this.deps.random);
      if (!chosen) {
        throw new NoFreeSubnetError(
          `no free subnet: every /${range.subnetLen} of ${formatCidr(range.network)} from ` +
            `${formatIp(range.subnetMin)} to ${formatIp(range.subnetMax)} is leased (${held.length} leases)`,
        );
      }
      return chosen;
    };
    const subnet = pick('subnet');
    const ipv6Subnet = pick('ipv6Subnet');
    return { ...(subnet ? { subnet } : {}), ...(ipv6Subnet ? { ipv6Subnet } : {}) };
  }

  private own(stored: StoredLease): Lease {
    this.written.set(stored.key, { modRevision: stored.modRevision, createRevision: stored.createRevision, storeLeaseId: stored.storeLeaseId });
    const lease = withoutExpiry(stored.lease);
    if (lease.reservation) return lease;
    return Object.freeze({ ...lease, expiresAt: this.deps.clock.now() + this.ttl * 1000 });
  }
}

function pairOf(lease: SubnetPair): SubnetPair {
  return { ...(lease.subnet ? { subnet: lease.subnet } : {}), ...(lease.ipv6Subnet ? { ipv6Subnet: lease.ipv6Subnet } : {}) };
}

function withoutExpiry(lease: Lease): Lease {
  return Object.freeze({ ...pairOf(lease), attrs: lease.attrs, reservation: lease.reservation });
}

/** Leases follow the node's public IP, as upstream (IPv4 when the node has one, else IPv6); reservations first. */
function findOwn(leases: readonly StoredLease[], attrs: LeaseAttrs): StoredLease | undefined {
  const mine = leases.filter((s) => isOwnedBy(s.lease, attrs));
  return mine.find((s) => s.lease.reservation) ?? mine[0];
}

function isOwnedBy(lease: Lease, attrs: LeaseAttrs): boolean {
  if (attrs.publicIP) return sameIp(lease.attrs.publicIP, attrs.publicIP);
  return attrs.publicIPv6 !== undefined && sameIp(lease.attrs.publicIPv6, attrs.publicIPv6);
}

/** What a key holds, for a log line: the lease value (bounded) or why it is none. */
function describeFound(stored: StoredLease | undefined, unreadable?: SkippedEntry): string {
  if (unreadable) return unreadable.reason;
  if (!stored) return 'nothing';
  const value = clip(encodeLeaseAttrs(stored.lease.attrs), LOGGED_REASON_CHARS);
  return stored.lease.reservation ? `${value} (no TTL)` : value;
}

function describeOwner(attrs: LeaseAttrs): string {
  const ip = attrs.publicIP ?? attrs.publicIPv6;
  return ip ? formatIp(ip) : 'another node';
}

function fitsRanges(ranges: AllocationRanges, lease: SubnetPair): boolean {
  const fits = (range: AllocationRanges['v4'], net: IpNet | undefined): boolean =>
    range ? net !== undefined && fitsRange(range, net) : net === undefined;
  return fits(ranges.v4, lease.subnet) && fits(ranges.v6, lease.ipv6Subnet);
}
