import { describe, expect, it } from 'vitest';
import { parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import type { AddressInfo, DatapathEntry, DatapathEvent, DatapathScope, VxlanLinkSpec } from '../../../backends/datapath/datapath.js';
import { describeEntry, entryIdentity } from '../../../backends/datapath/entry-key.js';
import { FakeDatapath } from '../../helpers/fake-datapath.js';

const ip = (text: string): IpAddress => parseIp(text)!;
const net = (text: string): IpNet => parseCidr(text)!;
const MAC = '0e:2a:00:00:00:02';

function setup(): { dp: FakeDatapath; eth0: number; spec: VxlanLinkSpec } {
  const dp = new FakeDatapath();
  const eth0 = dp.addLink({ name: 'eth0', mtu: 1500 }).index;
  const spec: VxlanLinkSpec = {
    name: 'flannel.1', vni: 1, port: 0, local: ip('192.168.1.11'), underlayIndex: eth0, mtu: 1450, learning: false, gbp: false, mac: '0e:2a:00:00:00:01',
  };
  return { dp, eth0, spec };
}

const macOf = (n: number): string => `0e:2a:00:00:00:${n.toString(16).padStart(2, '0')}`;
const peer = (link: number, n = 2): DatapathEntry[] => [
  { kind: 'neigh', linkIndex: link, ip: ip(`10.244.${n}.0`), mac: macOf(n) },
  { kind: 'fdb', linkIndex: link, mac: macOf(n), dst: ip(`192.168.1.${n}`) },
  { kind: 'route', dst: net(`10.244.${n}.0/24`), via: ip(`10.244.${n}.0`), linkIndex: link, onlink: true },
];
const replace = (entries: DatapathEntry[]) => entries.map((entry) => ({ op: 'replace' as const, entry }));
const remove = (entries: DatapathEntry[]) => entries.map((entry) => ({ op: 'delete' as const, entry }));
const scopeOf = (link: number): DatapathScope => ({ routeNetworks: [net('10.244.0.0/16')], excludeRoutes: [net('10.244.1.0/24')], neighLinks: [link] });

async function take(events: AsyncIterable<DatapathEvent>, n: number): Promise<DatapathEvent[]> {
  const out: DatapathEvent[] = [];
  for await (const e of events) {
    out.push(e);
    if (out.length === n) break;
  }
  return out;
}

describe('FakeDatapath links', () => {
  it('creates a vxlan device with the next index, keeping the MAC, and reuses an identical one', async () => {
    const { dp, eth0, spec } = setup();
    const link = await dp.ensureVxlan(spec);
    expect(link).toMatchObject({ index: eth0 + 1, name: 'flannel.1', mac: spec.mac, mtu: 1450, up: true, kind: 'vxlan' });
    expect(link.vxlan).toEqual({ vni: 1, port: 0, local: spec.local, underlayIndex: eth0, learning: false, gbp: false });
    expect(await dp.ensureVxlan(spec)).toBe(link);
    expect(await dp.link('flannel.1')).toBe(link);
    expect(await dp.link('nope')).toBeUndefined();
    expect(dp.vxlanCreations).toBe(1);
  });

  it.each([
    ['vni', { vni: 2 }],
    ['port', { port: 4789 }],
    ['mtu', { mtu: 1400 }],
    ['learning', { learning: true }],
    ['gbp', { gbp: true }],
    ['local', { local: ip('192.168.1.99') }],
    ['mac', { mac: '0e:2a:00:00:00:99' }],
  ])('re-creates the device when %s differs, dropping its entries', async (_name, change) => {
    const { dp, spec } = setup();
    const old = await dp.ensureVxlan(spec);
    await dp.apply(replace(peer(old.index)));
    const fresh = await dp.ensureVxlan({ ...spec, ...change });
    expect(fresh.index).toBe(old.index + 1);
    expect(dp.links.map((l) => l.name)).toEqual(['eth0', 'flannel.1']);
    expect(dp.entries).toEqual([]);
    expect(dp.vxlanCreations).toBe(2);
  });

  it('deletes a link with its entries and addresses, and refuses a missing one', async () => {
    const { dp, eth0, spec } = setup();
    const link = await dp.ensureVxlan(spec);
    const hostRoute: DatapathEntry = { kind: 'route', dst: net('10.244.9.0/24'), via: ip('192.168.1.9'), linkIndex: eth0 };
    await dp.apply(replace([...peer(link.index), hostRoute]));
    dp.addAddress({ linkIndex: link.index, cidr: net('10.244.1.0/32'), address: ip('10.244.1.0') });
    await dp.deleteLink(link.index);
    expect(dp.entries).toEqual([hostRoute]);
    expect(await dp.addresses(link.index)).toEqual([]);
    await expect(dp.deleteLink(link.index)).rejects.toThrow(/ENODEV/);
  });
});

describe('FakeDatapath addresses', () => {
  it('makes the wanted address the only one of its family inside the network', async () => {
    const { dp, spec } = setup();
    const { index } = await dp.ensureVxlan(spec);
    const addr = (a: string, cidr: string): AddressInfo => ({ linkIndex: index, cidr: net(cidr), address: ip(a) });
    dp.addAddress(addr('10.244.7.0', '10.244.7.0/32'));
    dp.addAddress(addr('172.16.0.1', '172.16.0.1/32'));
    dp.addAddress(addr('fd00::1', 'fd00::1/128'));
    await dp.ensureAddress(index, addr('10.244.1.0', '10.244.1.0/32'), net('10.244.0.0/16'));
    await dp.ensureAddress(index, addr('10.244.1.0', '10.244.1.0/32'), net('10.244.0.0/16'));
    expect((await dp.addresses(index)).map((a) => a.cidr)).toEqual([net('172.16.0.1/32'), net('fd00::1/128'), net('10.244.1.0/32')]);
    await expect(dp.ensureAddress(99, addr('10.244.1.0', '10.244.1.0/32'), net('10.244.0.0/16'))).rejects.toThrow(/ENODEV/);
  });
});

describe('FakeDatapath apply', () => {
  it('honours replace and delete and counts calls and changes', async () => {
    const { dp, spec } = setup();
    const { index } = await dp.ensureVxlan(spec);
    expect(await dp.apply(replace([...peer(index, 2), ...peer(index, 3)]))).toEqual({ applied: 6, failures: [] });
    const moved: DatapathEntry = { kind: 'neigh', linkIndex: index, ip: ip('10.244.2.0'), mac: '0e:2a:00:00:00:77' };
    await dp.apply(replace([moved]));
    expect(dp.entry(entryIdentity(moved))).toEqual(moved);
    expect(await dp.apply(remove(peer(index, 3)))).toEqual({ applied: 3, failures: [] });
    expect(dp.entries.map(describeEntry)).toEqual([
      'neigh 10.244.2.0 lladdr 0e:2a:00:00:00:77 dev#2',
      `fdb ${MAC} dst 192.168.1.2 dev#2`,
      'route 10.244.2.0/24 via 10.244.2.0 dev#2 onlink',
    ]);
    expect(dp.entry(`fdb ${index} ${macOf(3)}`)).toBeUndefined();
    expect([dp.applyCalls, dp.changeCount, dp.batches.map((b) => b.length)]).toEqual([3, 10, [6, 1, 3]]);
  });

  it('answers like the kernel for missing entries and devices, without stopping the batch', async () => {
    const { dp, spec } = setup();
    const { index } = await dp.ensureVxlan(spec);
    const [n, f, r] = peer(index) as [DatapathEntry, DatapathEntry, DatapathEntry];
    dp.put(n, f, r);
    const wrongVia: DatapathEntry = { kind: 'route', dst: net('10.244.2.0/24'), via: ip('10.244.2.1') };
    const otherMac: DatapathEntry = { kind: 'neigh', linkIndex: index, ip: ip('10.244.2.0'), mac: '0e:00:00:00:00:00' };
    const report = await dp.apply([
      { op: 'delete', entry: wrongVia },
      { op: 'delete', entry: { kind: 'fdb', linkIndex: index, mac: MAC, dst: ip('192.168.1.99') } },
      { op: 'delete', entry: otherMac },
      { op: 'delete', entry: { kind: 'fdb', linkIndex: index, mac: '0e:00:00:00:00:00', dst: ip('192.168.1.2') } },
      { op: 'replace', entry: { kind: 'neigh', linkIndex: 42, ip: ip('10.244.3.0'), mac: MAC } },
      { op: 'delete', entry: { kind: 'route', dst: net('10.244.2.0/24') } },
    ]);
    expect(report.applied).toBe(2);
    expect(report.failures.map((x) => x.errno)).toEqual(['ESRCH', 'ENOENT', 'ENOENT', 'ENODEV']);
    expect(report.failures[0]?.message).toBe('delete route 10.244.2.0/24 via 10.244.2.1: ESRCH');
    expect(dp.entries).toEqual([f]);
  });

  it('fails chosen entries with the chosen errno, per op and a number of times', async () => {
    const { dp, spec } = setup();
    const { index } = await dp.ensureVxlan(spec);
    const entries = peer(index);
    const routeId = entryIdentity(entries[2]!);
    dp.failEntry(routeId, 'ENETUNREACH', { times: 1 });
    dp.failEntry(entryIdentity(entries[0]!), 'EPERM', { op: 'delete' });
    const first = await dp.apply(replace(entries));
    expect(first.failures).toEqual([{ change: { op: 'replace', entry: entries[2] }, errno: 'ENETUNREACH', message: expect.stringContaining('ENETUNREACH') }]);
    expect(dp.entry(routeId)).toBeUndefined();
    expect((await dp.apply(replace(entries))).failures).toEqual([]);
    expect((await dp.apply(remove(entries))).failures.map((x) => x.errno)).toEqual(['EPERM']);
    dp.clearFailures();
    expect((await dp.apply(remove(entries.slice(0, 1)))).failures).toEqual([]);
  });
});

describe('FakeDatapath dump and events', () => {
  it('dumps only the scope: routes inside the networks minus excluded ones, neigh/fdb on its links', async () => {
    const { dp, eth0, spec } = setup();
    const { index } = await dp.ensureVxlan(spec);
    const own: DatapathEntry = { kind: 'route', dst: net('10.244.1.0/24'), linkIndex: eth0 };
    const foreign: DatapathEntry = { kind: 'route', dst: net('0.0.0.0/0'), via: ip('192.168.1.1'), linkIndex: eth0 };
    const otherNeigh: DatapathEntry = { kind: 'neigh', linkIndex: eth0, ip: ip('192.168.1.1'), mac: MAC };
    dp.put(...peer(index), own, foreign, otherNeigh);
    expect(await dp.dump(scopeOf(index))).toEqual(peer(index));
    expect(await dp.dump({ routeNetworks: [], excludeRoutes: [], neighLinks: [] })).toEqual([]);
  });

  it('reports every deletion behind our back to each subscription', async () => {
    const { dp, spec } = setup();
    const { index } = await dp.ensureVxlan(spec);
    dp.put(...peer(index), { kind: 'route', dst: net('10.96.0.0/12'), linkIndex: 1 });
    const ctl = new AbortController();
    const events = dp.events(ctl.signal);
    expect(dp.eventSubscribers).toBe(1);
    const other = dp.deleteEntryBehindOurBack('route 10.96.0.0/12');
    const gone = dp.deleteEntryBehindOurBack(entryIdentity(peer(index)[2]!));
    dp.emit({ type: 'overrun' });
    dp.deleteLinkBehindOurBack('flannel.1');
    expect(dp.entries).toEqual([]);
    expect(await dp.link('flannel.1')).toBeUndefined();
    expect(await take(events, 4)).toEqual([
      { type: 'entry-deleted', entry: other },
      { type: 'entry-deleted', entry: gone },
      { type: 'overrun' },
      { type: 'link-deleted', index, name: 'flannel.1' },
    ]);
    expect(dp.eventSubscribers).toBe(0);
    ctl.abort();
  });

  it('does not echo changes made through the datapath itself', async () => {
    const { dp, spec } = setup();
    const ctl = new AbortController();
    const { index } = await dp.ensureVxlan(spec);
    const events = dp.events(ctl.signal);
    await dp.apply(replace(peer(index)));
    await dp.apply(remove(peer(index)));
    await dp.ensureVxlan({ ...spec, mtu: 1400 });
    dp.emit({ type: 'overrun' });
    expect(await take(events, 1)).toEqual([{ type: 'overrun' }]);
    ctl.abort();
  });

  it('ends the stream when the signal aborts, and never opens one on an aborted signal', async () => {
    const { dp } = setup();
    const ctl = new AbortController();
    const events = dp.events(ctl.signal);
    const collected = take(events, 10);
    dp.emit({ type: 'overrun' });
    ctl.abort();
    expect(await collected).toEqual([{ type: 'overrun' }]);
    expect(dp.eventSubscribers).toBe(0);
    expect(await take(dp.events(ctl.signal), 1)).toEqual([]);
    expect(dp.eventSubscribers).toBe(0);
  });

  it('throws when asked to delete something that is not there behind our back', () => {
    const { dp } = setup();
    expect(() => dp.deleteEntryBehindOurBack('route 10.244.2.0/24')).toThrow(/no entry/);
    expect(() => dp.deleteLinkBehindOurBack('flannel.1')).toThrow(/no link/);
  });
});
