/**
 * 25,000 leases in a real etcd (~5.5 MB of values, past gRPC's default 4 MiB receive limit): the subnet manager lists
 * them all at start and again after a forced re-list (compaction under its watch), in pages of 1000 at one revision;
 * one unpaged range with the default limit fails at gRPC's default receive limit; a page over the receive limit (junk
 * values of tens of KiB) makes the pages smaller instead of failing every listing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3, IRangeRequest, IRequestOp } from 'etcd3';
import { parseIPv4 } from '../../flanneld/ip/address.js';
import type { LeaseEvent } from '../../flanneld/lease/lease.js';
import { formatSubnetKey } from '../../flanneld/lease/subnet-key.js';
import { seededRandom } from '../../flanneld/runtime/random.js';
import { systemClock } from '../../flanneld/runtime/clock.js';
import { createEtcdClient, planEtcdClient } from '../../flanneld/subnet/etcd/etcd-client.js';
import { EtcdLeaseStore } from '../../flanneld/subnet/etcd/etcd-lease-store.js';
import { EtcdSubnetManager } from '../../flanneld/subnet/etcd/etcd-subnet-manager.js';
import type { LeaseStore } from '../../flanneld/subnet/etcd/lease-store.js';
import { peerLeases } from '../bench/peer-leases.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd-server.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { memoryLog, testLog } from '../helpers/test-log.js';

const LEASES = 25_000;
const DEFAULT_GRPC_LIMIT = 4 * 1024 * 1024;
let etcd: EtcdServer;
let client: Etcd3;

const newClient = (maxReceiveBytes?: number): Etcd3 =>
  createEtcdClient(
    planEtcdClient({ endpoints: [etcd.endpoint], keyFile: '', certFile: '', caFile: '', username: '', password: '', ...(maxReceiveBytes ? { maxReceiveBytes } : {}) }),
  );

/** Puts in transactions of 128 (etcd's default --max-txn-ops), 8 in flight. */
async function putAll(kvs: readonly (readonly [string, string])[]): Promise<void> {
  const ops: IRequestOp[] = kvs.map(([key, value]) => ({ request_put: { key: Buffer.from(key), value: Buffer.from(value) } }));
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next; i < ops.length; i = next) {
      next += 128;
      await client.kv.txn({ compare: [], success: ops.slice(i, i + 128), failure: [] });
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

/** The network's leases as the bench writes them, under `prefix`. */
function leasesUnder(prefix: string, count: number): [string, string][] {
  return peerLeases(count).map((p) => [p.key.replace('/coreos.com/network', prefix), p.value]);
}

async function network(prefix: string, count: number): Promise<number> {
  await client.put(`${prefix}/config`).value(JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
  const started = Date.now();
  await putAll(leasesUnder(prefix, count));
  return Date.now() - started;
}

/** Records every range request the store makes through `etcd`. */
function recordRanges(etcd3: Etcd3): IRangeRequest[] {
  const seen: IRangeRequest[] = [];
  const range = etcd3.kv.range.bind(etcd3.kv);
  etcd3.kv.range = (req, options) => {
    seen.push(req);
    return range(req, options);
  };
  return seen;
}

function manager(store: LeaseStore, prefix: string, log = testLog()): EtcdSubnetManager {
  return new EtcdSubnetManager({ store, prefix, clock: systemClock, random: seededRandom(5), log });
}

let prefix: string;
let seedMs: number;

beforeAll(async () => {
  killStaleTrackedProcesses();
  etcd = await startEtcd();
  client = newClient();
  prefix = `/scale-${process.pid}/network`;
  seedMs = await network(prefix, LEASES);
}, 120_000);

afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

describe('25,000 leases in etcd', () => {
  it('are more than one range response can carry under gRPC’s default receive limit', async () => {
    const small = newClient(DEFAULT_GRPC_LIMIT);
    try {
      // Paged, even the default limit is enough…
      const listed = await new EtcdLeaseStore(small, prefix).list(new AbortController().signal);
      expect(listed.leases).toHaveLength(LEASES);
      // …while one range of them all is refused by the client (and, after etcd3's retries, opens its circuit breaker).
      await expect(small.getAll().prefix(`${prefix}/subnets/`).keys()).resolves.toHaveLength(LEASES);
      await expect(small.getAll().prefix(`${prefix}/subnets/`).exec()).rejects.toThrow(/RESOURCE_EXHAUSTED|larger than max/);
    } finally {
      small.close();
    }
  });

  it('are all listed at start and after a forced re-list, in pages of 1000 at one revision', async () => {
    const own = newClient();
    const ranges = recordRanges(own);
    const real = new EtcdLeaseStore(own, prefix);
    let compacted = false;
    const key = (i: number): string => leasesUnder(prefix, i + 1)[i]![0];
    // Between the first listing and its watch, the store moves on and compacts past the listed revision: the watch
    // cannot resume and the manager must list all 25,000 again.
    const store: LeaseStore = Object.assign(Object.create(real) as LeaseStore, {
      watch: (from: bigint, signal: AbortSignal, only?: Parameters<LeaseStore['watch']>[2]) => {
        const gap = compacted
          ? Promise.resolve()
          : (async () => {
              compacted = true;
              await client.delete().key(key(7));
              await client.put(`${prefix}/subnets/10.250.0.0-24`).value('{"PublicIP":"192.0.2.250","PublicIPv6":null,"BackendType":"vxlan"}');
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
    const batches: (readonly LeaseEvent[])[] = [];
    const started = Date.now();
    let firstMs = 0;
    const done = (async () => {
      for await (const batch of manager(store, prefix).watchLeases(stop.signal)) {
        if (batches.length === 0) firstMs = Date.now() - started;
        batches.push(batch);
      }
    })().catch(() => undefined);
    try {
      await waitFor('the first listing', () => batches[0], 30_000);
      expect(batches[0]).toHaveLength(LEASES);
      await waitFor('the re-list after compaction', () => batches[1], 30_000);
      const relistMs = Date.now() - started - firstMs;
      expect(batches[1]!.map((e) => `${e.type} ${formatSubnetKey(e.lease)}`).sort()).toEqual(['added 10.250.0.0/24', `removed ${key(7).split('/').pop()}`].map((s) => s.replace('/', '-')).sort());
      const lists = ranges.filter((r) => r.limit !== undefined);
      expect(lists.length).toBe(2 * (LEASES / 1000));
      expect(lists.every((r) => Number(r.limit) === 1000)).toBe(true);
      // Every page after the first of a listing is pinned to that listing's revision.
      const firstListing = lists.slice(0, LEASES / 1000);
      expect(new Set(firstListing.slice(1).map((r) => String(r.revision))).size).toBe(1);
      console.log(`25,000 leases: written in ${seedMs} ms, first listing ${firstMs} ms, re-list ${relistMs} ms`);
    } finally {
      stop.abort();
      await done;
      own.close();
    }
  });

  it('do not keep a restarted node from claiming a subnet', async () => {
    const keys = async (): Promise<string[]> => client.getAll().prefix(`${prefix}/subnets/`).keys();
    const before = new Set(await keys());
    const lease = await manager(new EtcdLeaseStore(client, prefix), prefix).acquireLease(
      { attrs: { publicIP: parseIPv4('198.51.100.7')!, backendType: 'vxlan' } },
      new AbortController().signal,
    );
    const path = `${prefix}/subnets/${formatSubnetKey(lease)}`;
    expect(before.has(path)).toBe(false);
    expect((await keys()).length).toBe(before.size + 1);
  });

  it('a page over the receive limit makes the pages smaller; values over the cap are skipped, logged once each', async () => {
    const junkPrefix = `/scale-junk-${process.pid}/network`;
    await network(junkPrefix, 2000);
    // 30 values of 40 KiB spread over the range: a page of 1000 holds ~15 of them (600 KiB), over a 512 KiB limit.
    const junk = leasesUnder(junkPrefix, 2000).filter((_, i) => i % 67 === 3).map(([k]) => [k, 'j'.repeat(40 * 1024)] as [string, string]);
    await putAll(junk);
    const small = newClient(512 * 1024);
    const { log, lines } = memoryLog();
    const store = new EtcdLeaseStore(small, junkPrefix, { log });
    const stop = new AbortController();
    const batches: (readonly LeaseEvent[])[] = [];
    const done = (async () => {
      for await (const batch of manager(store, junkPrefix, log).watchLeases(stop.signal)) batches.push(batch);
    })().catch(() => undefined);
    try {
      await waitFor('the first listing', () => batches[0], 30_000);
      expect(batches[0]).toHaveLength(2000 - junk.length);
      expect(store.pageSize).toBe(100);
      expect(lines.filter((l) => l.msg === 'skipping an entry under subnets/ that is not a lease')).toHaveLength(junk.length);
      expect(lines.some((l) => l.msg.includes('reading smaller pages from now on'))).toBe(true);
    } finally {
      stop.abort();
      await done;
      small.close();
    }
  });
});
