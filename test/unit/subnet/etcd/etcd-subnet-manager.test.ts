/**
 * The etcd subnet manager against an in-memory store with etcd's revision rules: its own lease written back at once
 * when someone overwrites it in place (another PublicIP, junk, a reservation) and left to its new holder only when
 * that holder claimed the key after ours was gone; non-lease keys next to live peers change nothing and are logged
 * once per key.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseIPv4, parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { encodeLeaseAttrs, type Lease, type LeaseAttrs, type LeaseEvent } from '../../../../flanneld/lease/lease.js';
import { formatSubnetKey } from '../../../../flanneld/lease/subnet-key.js';
import { FlannelError, LeaseLostError } from '../../../../flanneld/runtime/errors.js';
import { seededRandom } from '../../../../flanneld/runtime/random.js';
import { EtcdSubnetManager } from '../../../../flanneld/subnet/etcd/etcd-subnet-manager.js';
import { keepLease } from '../../../../flanneld/subnet/lease-keeper.js';
import { ManualClock } from '../../../helpers/manual-clock.js';
import { MemoryLeaseStore } from '../../../helpers/memory-lease-store.js';
import { memoryLog } from '../../../helpers/test-log.js';

const PREFIX = '/coreos.com/network';
const SUBNETS = `${PREFIX}/subnets/`;
const WARN = 40;
const attrs = (ip: string, mac = '0e:00:00:00:00:01'): LeaseAttrs => ({
  publicIP: parseIPv4(ip) as IpAddress,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: mac },
});
const value = (ip: string, mac?: string): string => encodeLeaseAttrs(attrs(ip, mac));

const stops: AbortController[] = [];
afterEach(() => {
  for (const s of stops.splice(0)) s.abort();
});

function setup() {
  const store = new MemoryLeaseStore(PREFIX);
  store.config = JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
  const clock = new ManualClock();
  const { log, lines } = memoryLog();
  const manager = new EtcdSubnetManager({ store, prefix: PREFIX, clock, random: seededRandom(3), log });
  const stop = new AbortController();
  stops.push(stop);
  return { store, clock, log, lines, manager, signal: stop.signal, stop };
}

/** Acquires a lease for 192.0.2.1 and keeps it with the real lease keeper; its outcome is recorded. */
async function keeping() {
  const s = setup();
  const lease = await s.manager.acquireLease({ attrs: attrs('192.0.2.1') }, s.signal);
  const path = SUBNETS + formatSubnetKey(lease);
  const written: Lease[] = [];
  let outcome: unknown;
  const keeper = keepLease(lease, { subnets: s.manager, clock: s.clock, random: seededRandom(1), log: s.log, renewMarginMs: 3_600_000 }, s.signal, (l) =>
    written.push(l),
  ).then(
    () => (outcome = 'stopped'),
    (err: unknown) => (outcome = err),
  );
  await vi.waitFor(() => expect(s.store.openWatches).toBe(1));
  return { ...s, lease, path, written, keeper, outcome: () => outcome };
}

const messages = (lines: readonly { msg: string; level: number }[]): string[] => lines.filter((l) => l.level >= WARN).map((l) => l.msg);

describe('EtcdSubnetManager: its own lease', () => {
  it.each([
    ['another PublicIP, as `etcdctl put` writes it (no etcd lease)', () => value('192.0.2.66', '0e:00:00:00:00:66'), '0', /"PublicIP":"192\.0\.2\.66"/, 'ttl', 'not ours'],
    ['another PublicIP on some etcd lease', () => value('192.0.2.66'), '555', /"PublicIP":"192\.0\.2\.66"/, 'ttl', 'not ours'],
    // Our own address without a TTL is how an operator turns a lease into a reservation: it stays one.
    ['our PublicIP with other backend data and no TTL', () => value('192.0.2.1', '0e:00:00:00:00:99'), '0', /0e:00:00:00:00:99/, 'reservation', 'ours'],
    ['our PublicIP with other backend data on some etcd lease', () => value('192.0.2.1', '0e:00:00:00:00:99'), '555', /0e:00:00:00:00:99/, 'ttl', 'ours'],
    ['junk that is not a lease', () => '{not json', '0', /lease value is not a lease/, 'ttl', 'not ours'],
    ['a megabyte of junk', () => Buffer.alloc(1024 * 1024, 'x'), '0', /lease value of 1048576 bytes is over the 8192-byte cap; not read/, 'ttl', 'not ours'],
  ])('writes itself back at once over %s, saying what it found', async (_what, foreign, leaseId, found, kept, owner) => {
    const k = await keeping();
    const ours = k.store.raw(k.path)!;
    k.store.put(k.path, foreign(), leaseId);
    await vi.waitFor(() => expect(k.written).toHaveLength(1));
    const now = k.store.raw(k.path)!;
    expect(now.value.toString()).toBe(ours.value.toString());
    if (kept === 'ttl') expect(now.lease).not.toMatch(/^(0|555)$/);
    else expect(now.lease).toBe('0');
    expect(now.create_revision).toBe(ours.create_revision);
    // Only the etcd lease we granted is revoked, never the one someone hung on our key.
    expect(k.store.revoked).toEqual([ours.lease]);
    const changed = k.lines.find((l) => l.msg === 'own lease was changed by someone else');
    expect(String(changed?.['found'])).toMatch(found);
    expect(String(changed?.['found']).length).toBeLessThan(300);
    expect(messages(k.lines)).toEqual([
      'own lease was changed by someone else',
      'own lease vanished or changed in the store; writing it back',
      ...(owner === 'ours' ? [] : ['own lease holds a value this node did not write; writing ours back']),
    ]);
    expect(k.lines.at(-1)).toMatchObject({ msg: 'own lease written back', subnet: formatSubnetKey(k.lease) });
    expect(k.outcome()).toBeUndefined();
  });

  it('is not disturbed when someone puts the very value it wrote', async () => {
    const k = await keeping();
    const ours = k.store.raw(k.path)!;
    k.store.put(k.path, ours.value.toString(), ours.lease);
    await new Promise((r) => setImmediate(r));
    expect(k.written).toHaveLength(0);
    expect(messages(k.lines)).toEqual([]);
  });

  it('claims its key again when it is deleted', async () => {
    const k = await keeping();
    k.store.del(k.path);
    await vi.waitFor(() => expect(k.written).toHaveLength(1));
    expect(k.store.raw(k.path)?.value.toString()).toBe(value('192.0.2.1'));
    expect(messages(k.lines)).toEqual(['own lease is gone from the store', 'own lease vanished or changed in the store; writing it back']);
  });

  it("leaves a key another node created after ours was gone, and says it must lease again (LeaseLostError)", async () => {
    const s = setup();
    const lease = await s.manager.acquireLease({ attrs: attrs('192.0.2.1') }, s.signal);
    const path = SUBNETS + formatSubnetKey(lease);
    s.store.del(path);
    s.store.put(path, value('192.0.2.2'), '900');
    const err = await s.manager.renewLease(lease, s.signal).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LeaseLostError);
    expect((err as Error).message).toMatch(/is now held by 192\.0\.2\.2, whose key was created after this node's was gone/);
    expect(s.store.raw(path)?.value.toString()).toBe(value('192.0.2.2'));
  });

  it('keeps a reservation of its own a reservation when writing its value back', async () => {
    const s = setup();
    const path = `${SUBNETS}10.244.7.0-24`;
    s.store.put(path, '{"PublicIP":"192.0.2.1"}');
    const lease = await s.manager.acquireLease({ attrs: attrs('192.0.2.1') }, s.signal);
    expect(lease.reservation).toBe(true);
    s.store.put(path, '{"PublicIP":"192.0.2.1","BackendType":"udp"}');
    const renewed = await s.manager.renewLease(lease, s.signal);
    expect(renewed.reservation).toBe(true);
    expect(s.store.raw(path)).toMatchObject({ lease: '0' });
    expect(s.store.raw(path)?.value.toString()).toBe(value('192.0.2.1'));
  });

  it('keeps trying (not LeaseLostError) when its key changes faster than it can write it back', async () => {
    const s = setup();
    const lease = await s.manager.acquireLease({ attrs: attrs('192.0.2.1') }, s.signal);
    const path = SUBNETS + formatSubnetKey(lease);
    const get = s.store.get.bind(s.store);
    s.store.get = async (pair) => {
      const read = await get(pair);
      s.store.put(path, value('192.0.2.66'));
      return read;
    };
    const err = await s.manager.renewLease(lease, s.signal).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FlannelError);
    expect(err).not.toBeInstanceOf(LeaseLostError);
    expect((err as Error).message).toBe(`lease ${formatSubnetKey(lease)} kept changing under us while renewing it`);
  });
});

describe('EtcdSubnetManager: keys that are not leases', () => {
  async function watching() {
    const s = setup();
    s.store.put(`${SUBNETS}10.244.5.0-24`, value('192.0.2.5', '0e:00:00:00:00:05'), '77');
    const batches: LeaseEvent[][] = [];
    void (async () => {
      for await (const batch of s.manager.watchLeases(s.signal)) batches.push([...batch]);
    })().catch(() => undefined);
    await vi.waitFor(() => expect(batches).toHaveLength(1));
    await vi.waitFor(() => expect(s.store.openWatches).toBe(1));
    const flat = (): string[] => batches.flat().map((e) => `${e.type} ${formatSubnetKey(e.lease)}`);
    return { ...s, batches, flat };
  }

  it.each(['10.244.5.7-24', 'junk10.244.5.0-24', 'x/10.244.5.0-24'])(
    'an alias %s of a live peer neither replaces it when put nor removes it when deleted',
    async (alias) => {
      const w = await watching();
      w.store.put(SUBNETS + alias, value('192.0.2.66', '0e:00:00:00:00:66'));
      w.store.put(SUBNETS + alias, value('192.0.2.67', '0e:00:00:00:00:67'));
      w.store.del(SUBNETS + alias);
      w.store.put(`${SUBNETS}10.244.6.0-24`, value('192.0.2.6', '0e:00:00:00:00:06'));
      await vi.waitFor(() => expect(w.batches).toHaveLength(2));
      expect(w.flat()).toEqual(['added 10.244.5.0-24', 'added 10.244.6.0-24']);
      const skipped = w.lines.filter((l) => l.msg === 'skipping an entry under subnets/ that is not a lease');
      expect(skipped).toHaveLength(1);
      expect(skipped[0]).toMatchObject({ key: SUBNETS + alias, problem: 'non-canonical-key' });
    },
  );

  it('40 rewrites of one key with 1 MB of junk: one log line, and the lease it held stays', async () => {
    const w = await watching();
    for (let i = 0; i < 40; i++) w.store.put(`${SUBNETS}10.244.5.0-24`, Buffer.alloc(1024 * 1024, String(i % 10)));
    w.store.put(`${SUBNETS}10.244.6.0-24`, value('192.0.2.6', '0e:00:00:00:00:06'));
    await vi.waitFor(() => expect(w.batches).toHaveLength(2));
    expect(w.flat()).toEqual(['added 10.244.5.0-24', 'added 10.244.6.0-24']);
    const warned = w.lines.filter((l) => l.level >= WARN);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ problem: 'oversized-value', reason: 'lease value of 1048576 bytes is over the 8192-byte cap; not read' });
    expect(JSON.stringify(w.lines).length).toBeLessThan(4000);
  });

  it('a re-list does not log the same skipped keys again, and forgets deleted ones', async () => {
    const w = await watching();
    w.store.put(`${SUBNETS}junk`, '{}');
    w.store.put(`${SUBNETS}10.244.5.7-24`, '{}');
    await vi.waitFor(() => expect(w.lines.filter((l) => l.level >= WARN)).toHaveLength(2));
    w.store.del(`${SUBNETS}junk`);
    w.store.forceResync();
    await vi.waitFor(() => expect(w.clock.pending).toBe(1));
    w.clock.advance(10_000);
    await vi.waitFor(() => expect(w.store.openWatches).toBe(1));
    w.store.put(`${SUBNETS}junk`, '{}');
    await vi.waitFor(() => expect(w.lines.filter((l) => l.level >= WARN)).toHaveLength(3));
    expect(w.flat()).toEqual(['added 10.244.5.0-24']);
  });
});

describe('EtcdSubnetManager: dual-stack claims', () => {
  it('does not take an IPv6 subnet that a node racing it claimed under another IPv4 subnet', async () => {
    const store = new MemoryLeaseStore(PREFIX);
    store.config = JSON.stringify({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:a::/48', Backend: { Type: 'vxlan' } });
    const clock = new ManualClock();
    const { log } = memoryLog();
    /** Picks the listed candidates in this order (index into the free list), then the first. */
    const picks = (...order: number[]) => ({ int: () => order.shift() ?? 0 });
    const dualAttrs = (v4: string, v6: string): LeaseAttrs => ({ ...attrs(v4), publicIPv6: parseIp(v6) as IpAddress });
    const other = new EtcdSubnetManager({ store, prefix: PREFIX, clock, random: picks(1, 0), log });
    let raced = false;
    // The other node claims between our listing and our create: another IPv4 subnet, the IPv6 one we picked.
    const racing = new Proxy(store, {
      get(target, prop) {
        if (prop === 'createIfAbsent') {
          return async (...args: Parameters<MemoryLeaseStore['createIfAbsent']>) => {
            if (!raced) {
              raced = true;
              await other.acquireLease({ attrs: dualAttrs('192.0.2.2', '2001:db8:2::2') }, new AbortController().signal);
            }
            return target.createIfAbsent(...args);
          };
        }
        const v = Reflect.get(target, prop) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const manager = new EtcdSubnetManager({ store: racing, prefix: PREFIX, clock, random: picks(0, 0, 0, 0), log });
    const ours = await manager.acquireLease({ attrs: dualAttrs('192.0.2.1', '2001:db8:2::1') }, new AbortController().signal);
    const leases = (await store.list()).leases.map((l) => l.lease);
    expect(leases).toHaveLength(2);
    const theirs = leases.find((l) => l.attrs.publicIP && l.attrs.publicIP.value !== ours.attrs.publicIP?.value) as Lease;
    expect(formatSubnetKey(ours)).not.toBe(formatSubnetKey(theirs));
    expect(ours.ipv6Subnet?.ip).not.toBe(theirs.ipv6Subnet?.ip);
    expect(ours.subnet?.ip).not.toBe(theirs.subnet?.ip);
  });
});
