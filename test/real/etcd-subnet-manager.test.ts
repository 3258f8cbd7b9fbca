/**
 * The etcd subnet manager against a real etcd: racing claims, renewal and expiry on a ManualClock, reuse after a
 * restart, reservations, and lease watches that survive compaction and an etcd restart without losing or
 * duplicating an event.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { parseIPv4, parseIp, type IpAddress } from '../../flanneld/ip/address.js';
import { formatCidr } from '../../flanneld/ip/cidr.js';
import type { Lease, LeaseEvent } from '../../flanneld/lease/lease.js';
import { formatSubnetKey } from '../../flanneld/lease/subnet-key.js';
import { NoFreeSubnetError } from '../../flanneld/runtime/errors.js';
import { seededRandom } from '../../flanneld/runtime/random.js';
import { systemClock, type Clock } from '../../flanneld/runtime/clock.js';
import { createEtcdClient, planEtcdClient } from '../../flanneld/subnet/etcd/etcd-client.js';
import { EtcdLeaseStore } from '../../flanneld/subnet/etcd/etcd-lease-store.js';
import { EtcdSubnetManager } from '../../flanneld/subnet/etcd/etcd-subnet-manager.js';
import type { LeaseStore } from '../../flanneld/subnet/etcd/lease-store.js';
import { keepLease } from '../../flanneld/subnet/lease-keeper.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd-server.js';
import { ManualClock } from '../helpers/manual-clock.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { testLog } from '../helpers/test-log.js';

let etcd: EtcdServer;
let client: Etcd3;
let prefixCounter = 0;

function newClient(): Etcd3 {
  return createEtcdClient(
    planEtcdClient({ endpoints: [etcd.endpoint], keyFile: '', certFile: '', caFile: '', username: '', password: '' }),
  );
}

async function freshNetwork(config: object): Promise<string> {
  const prefix = `/test-${process.pid}-${++prefixCounter}/network`;
  await client.put(`${prefix}/config`).value(JSON.stringify(config));
  return prefix;
}

function manager(prefix: string, opts: { clock?: Clock; seed?: number; store?: LeaseStore; etcd?: Etcd3 } = {}): EtcdSubnetManager {
  return new EtcdSubnetManager({
    store: opts.store ?? new EtcdLeaseStore(opts.etcd ?? client, prefix),
    prefix,
    clock: opts.clock ?? systemClock,
    random: seededRandom(opts.seed ?? 1),
    log: testLog(),
  });
}

const attrs = (ip: string) => ({ publicIP: parseIPv4(ip)!, backendType: 'alloc' });
const keys = async (prefix: string): Promise<string[]> =>
  (await client.getAll().prefix(`${prefix}/subnets/`).keys()).map((k) => k.slice(`${prefix}/subnets/`.length)).sort();

/** Pulls batches from a lease watch in the background. */
function collect(iterable: AsyncIterable<readonly LeaseEvent[]>) {
  const batches: (readonly LeaseEvent[])[] = [];
  const done = (async () => {
    for await (const batch of iterable) batches.push(batch);
  })().catch(() => undefined);
  const flat = () => batches.flat().map((e) => `${e.type} ${formatSubnetKey(e.lease)}`);
  return { batches, flat, done };
}

beforeAll(async () => {
  killStaleTrackedProcesses();
  etcd = await startEtcd();
  client = newClient();
});

afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

describe('EtcdSubnetManager on real etcd', () => {
  it('gives 40 racing managers exactly 16 distinct subnets; the rest get "no free subnet"', async () => {
    const prefix = await freshNetwork({ Network: '10.10.0.0/24', SubnetLen: 28, SubnetMin: '10.10.0.0', SubnetMax: '10.10.0.240' });
    const clients = Array.from({ length: 4 }, () => newClient());
    const signal = new AbortController().signal;
    const results = await Promise.allSettled(
      Array.from({ length: 40 }, (_, i) =>
        manager(prefix, { seed: i + 1, etcd: clients[i % 4]! }).acquireLease({ attrs: attrs(`192.0.2.${i + 1}`) }, signal),
      ),
    );
    for (const c of clients) c.close();
    const won = results.filter((r): r is PromiseFulfilledResult<Lease> => r.status === 'fulfilled').map((r) => formatSubnetKey(r.value));
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    expect(won).toHaveLength(16);
    expect(new Set(won).size).toBe(16);
    expect(lost).toHaveLength(24);
    for (const err of lost) {
      expect(err).toBeInstanceOf(NoFreeSubnetError);
      expect((err as Error).message).toMatch(/no free subnet/);
    }
    expect(await keys(prefix)).toEqual([...won].sort());
  });

  it('gives 30 dual-stack managers racing for 8 IPv6 subnets (and plenty of IPv4 ones) 8 leases, no IPv6 subnet twice', async () => {
    // Keys name both halves, so only the range compare on the listing's revision keeps two IPv6 halves apart.
    const prefix = await freshNetwork({
      Network: '10.30.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:30::/48', IPv6SubnetLen: 64,
      IPv6SubnetMin: '2001:db8:30::', IPv6SubnetMax: '2001:db8:30:7::',
    });
    const clients = Array.from({ length: 4 }, () => newClient());
    const signal = new AbortController().signal;
    const results = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) =>
        manager(prefix, { seed: i + 1, etcd: clients[i % 4]! }).acquireLease({ attrs: { ...attrs(`192.0.2.${i + 1}`), publicIPv6: parseIp(`2001:db8:2::${i + 1}`) as IpAddress } }, signal),
      ),
    );
    for (const c of clients) c.close();
    const won = results.filter((r): r is PromiseFulfilledResult<Lease> => r.status === 'fulfilled').map((r) => r.value);
    expect(won).toHaveLength(8);
    expect(new Set(won.map((l) => formatCidr(l.ipv6Subnet!))).size).toBe(8);
    expect(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof NoFreeSubnetError)).toBe(true);
  });

  it('writes upstream lease JSON under an etcd lease with the 24 h TTL', async () => {
    const prefix = await freshNetwork({ Network: '10.20.0.0/16' });
    const lease = await manager(prefix).acquireLease({ attrs: attrs('192.0.2.7') }, new AbortController().signal);
    const res = await client.get(`${prefix}/subnets/${formatSubnetKey(lease)}`).exec();
    const kv = res.kvs[0]!;
    expect(kv.value.toString()).toBe('{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendType":"alloc"}');
    const ttl = await client.leaseClient.leaseTimeToLive({ ID: kv.lease, keys: false });
    expect(Number(ttl.grantedTTL)).toBe(86400);
    expect(lease.subnet?.prefixLen).toBe(24);
  });

  it('renews before expiry on the injected clock, and re-claims a lease that expired', async () => {
    const prefix = await freshNetwork({ Network: '10.30.0.0/16' });
    const clock = new ManualClock();
    const mgr = manager(prefix, { clock });
    const stop = new AbortController();
    const lease = await mgr.acquireLease({ attrs: attrs('192.0.2.8') }, stop.signal);
    const path = `${prefix}/subnets/${formatSubnetKey(lease)}`;
    const leaseId = async () => (await client.get(path).exec()).kvs[0]?.lease;
    const first = await leaseId();
    const renewals: Lease[] = [];
    const keeper = keepLease(lease, { subnets: mgr, clock, random: seededRandom(1), log: testLog(), renewMarginMs: 60 * 60_000 }, stop.signal, (l) => renewals.push(l));

    // 22 h 59 min: not yet due (margin 1 h).
    await waitFor('keeper to sleep', () => (clock.pending > 0 ? true : undefined));
    clock.advance(22 * 3600_000 + 59 * 60_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(await leaseId()).toBe(first);
    clock.advance(60_000);
    await waitFor('renewal', async () => ((await leaseId()) !== first ? true : undefined));
    expect(renewals).toHaveLength(1);
    expect(renewals[0]!.expiresAt).toBe(clock.now() + 86400_000);

    // Expiry is etcd revoking the key's lease: the keeper puts the same subnet back at once.
    const second = (await leaseId())!;
    await client.leaseClient.leaseRevoke({ ID: second });
    await waitFor('re-claim after expiry', async () => {
      const id = await leaseId();
      return id !== undefined && id !== second ? true : undefined;
    });
    expect(await keys(prefix)).toEqual([formatSubnetKey(lease)]);
    stop.abort();
    await keeper;
  });

  it('reuses the same subnet after a restart, from the store or from subnet.env', async () => {
    const prefix = await freshNetwork({ Network: '10.40.0.0/16' });
    const signal = new AbortController().signal;
    const first = await manager(prefix, { seed: 1 }).acquireLease({ attrs: attrs('192.0.2.9') }, signal);
    const again = await manager(prefix, { seed: 99 }).acquireLease({ attrs: attrs('192.0.2.9') }, signal);
    expect(formatSubnetKey(again)).toBe(formatSubnetKey(first));
    expect(await keys(prefix)).toHaveLength(1);

    // The key is gone (e.g. it expired while the node was down): subnet.env's FLANNEL_SUBNET is used again.
    await client.delete().key(`${prefix}/subnets/${formatSubnetKey(first)}`);
    const fromFile = await manager(prefix, { seed: 5 }).acquireLease(
      { attrs: attrs('192.0.2.9'), previous: { subnet: first.subnet! } },
      signal,
    );
    expect(formatSubnetKey(fromFile)).toBe(formatSubnetKey(first));
  });

  it('honours a reservation: its node gets it without a TTL and no other node ever takes it', async () => {
    const prefix = await freshNetwork({ Network: '10.50.0.0/24', SubnetLen: 26, SubnetMin: '10.50.0.0', SubnetMax: '10.50.0.64' });
    await client.put(`${prefix}/subnets/10.50.0.0-26`).value('{"PublicIP":"192.0.2.50","PublicIPv6":null}');
    const signal = new AbortController().signal;
    const other = await manager(prefix).acquireLease({ attrs: attrs('192.0.2.51') }, signal);
    expect(formatCidr(other.subnet!)).toBe('10.50.0.64/26');
    await expect(manager(prefix).acquireLease({ attrs: attrs('192.0.2.52') }, signal)).rejects.toBeInstanceOf(NoFreeSubnetError);
    const owner = await manager(prefix).acquireLease({ attrs: attrs('192.0.2.50') }, signal);
    expect(formatCidr(owner.subnet!)).toBe('10.50.0.0/26');
    expect(owner.reservation).toBe(true);
    const kv = (await client.get(`${prefix}/subnets/10.50.0.0-26`).exec()).kvs[0]!;
    expect(kv.lease).toBe('0');
    expect(kv.value.toString()).toBe('{"PublicIP":"192.0.2.50","PublicIPv6":null,"BackendType":"alloc"}');
  });

  it('watches leases across a compaction without losing or duplicating an event', async () => {
    const prefix = await freshNetwork({ Network: '10.60.0.0/16' });
    const put = (net: string, ip: string) => client.put(`${prefix}/subnets/${net}`).value(`{"PublicIP":"${ip}","PublicIPv6":null,"BackendType":"alloc"}`);
    await put('10.60.1.0-24', '192.0.2.1');
    await put('10.60.2.0-24', '192.0.2.2');
    const real = new EtcdLeaseStore(client, prefix);
    let compacted = false;
    // Between the listing and the watch, the store moves on and compacts past the listed revision, as when a
    // watcher falls behind; the watch must notice and re-list.
    const store: LeaseStore = Object.assign(Object.create(real) as LeaseStore, {
      watch: (from: bigint, signal: AbortSignal, only?: Parameters<LeaseStore['watch']>[2]) => {
        const gap = compacted
          ? Promise.resolve()
          : (async () => {
              compacted = true;
              await client.delete().key(`${prefix}/subnets/10.60.1.0-24`);
              await put('10.60.3.0-24', '192.0.2.3');
              await put('10.60.2.0-24', '192.0.2.2');
              const rev = (await client.get('x').exec()).header.revision;
              await client.kv.compact({ revision: rev, physical: true });
            })();
        return (async function* () {
          await gap;
          yield* real.watch(from, signal, only);
        })();
      },
    });
    const stop = new AbortController();
    const seen = collect(manager(prefix, { store }).watchLeases(stop.signal));
    await waitFor('re-list after compaction', () => (seen.flat().length >= 4 ? true : undefined));
    await put('10.60.4.0-24', '192.0.2.4');
    await waitFor('event after resync', () => (seen.flat().length >= 5 ? true : undefined));
    await new Promise((r) => setTimeout(r, 300));
    stop.abort();
    await seen.done;
    expect(compacted).toBe(true);
    expect(seen.flat()).toEqual([
      'added 10.60.1.0-24',
      'added 10.60.2.0-24',
      'added 10.60.3.0-24',
      'removed 10.60.1.0-24',
      'added 10.60.4.0-24',
    ]);
  });

  it('skips malformed keys and values with a warning and never removes other leases for them', async () => {
    const prefix = await freshNetwork({ Network: '10.70.0.0/16' });
    await client.put(`${prefix}/subnets/10.70.1.0-24`).value('{"PublicIP":"192.0.2.1","BackendType":"alloc"}');
    const stop = new AbortController();
    const seen = collect(manager(prefix).watchLeases(stop.signal));
    await waitFor('first batch', () => (seen.batches.length > 0 ? true : undefined));
    await client.put(`${prefix}/subnets/garbage`).value('{}');
    await client.put(`${prefix}/subnets/10.70.2.0-24`).value('{not json');
    await client.put(`${prefix}/subnets/10.70.3.0-24`).value('{"PublicIP":"192.0.2.3","BackendType":"alloc"}');
    await waitFor('valid lease after junk', () => (seen.flat().length >= 2 ? true : undefined));
    stop.abort();
    await seen.done;
    expect(seen.flat()).toEqual(['added 10.70.1.0-24', 'added 10.70.3.0-24']);
  });

  it('resumes a lease watch after etcd restarts', async () => {
    const prefix = await freshNetwork({ Network: '10.80.0.0/16' });
    const own = newClient();
    const stop = new AbortController();
    const seen = collect(manager(prefix, { etcd: own }).watchLeases(stop.signal));
    await waitFor('first batch', () => (seen.batches.length > 0 ? true : undefined));
    await etcd.restart();
    await client.put(`${prefix}/subnets/10.80.5.0-24`).value('{"PublicIP":"192.0.2.5","BackendType":"alloc"}');
    await waitFor('event after etcd restart', () => (seen.flat().length >= 1 ? true : undefined), 30_000);
    stop.abort();
    await seen.done;
    own.close();
    expect(seen.flat()).toEqual(['added 10.80.5.0-24']);
  });
});
