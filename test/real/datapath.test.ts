/**
 * The rtnetlink datapath against a real kernel, inside a namespace: VXLAN device creation and replacement,
 * address management, batched entries matching what iproute2 shows, dumps, and deletion notifications.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseIPv4 } from '../../flanneld/ip/address.js';
import { parseCidr } from '../../flanneld/ip/cidr.js';
import type { DatapathChange, DatapathEntry, DatapathEvent, DatapathScope, VxlanLinkSpec } from '../../backends/datapath/datapath.js';
import { inScope } from '../../backends/entry-diff.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { startRemoteDatapath, type RemoteDatapath } from '../helpers/remote-datapath.js';

const run = new NetnsRun('dp');
let ns: Netns;
let dp: RemoteDatapath;
let eth0: number;

const ip4 = (t: string) => parseIPv4(t)!;
const net = (t: string) => parseCidr(t)!;
const spec = (over: Partial<VxlanLinkSpec> = {}): VxlanLinkSpec => ({
  name: 'flannel.1', vni: 1, port: 0, local: ip4('192.0.2.1'), underlayIndex: eth0, mtu: 1450,
  learning: false, gbp: false, mac: '0e:2a:00:00:00:01', ...over,
});

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  ns = await run.create('h1');
  await ns.ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
  await ns.ip('addr', 'add', '192.0.2.1/24', 'dev', 'eth0');
  await ns.ip('link', 'set', 'eth0', 'up');
  await ns.ip('link', 'set', 'eth1', 'up');
  dp = await startRemoteDatapath(ns.name);
  eth0 = (await dp.link('eth0'))!.index;
});

afterAll(async () => {
  await dp?.close();
  await run.cleanup();
});

describe('NetlinkDatapath in a namespace', () => {
  it('creates the VXLAN device with upstream parameters and reads it back', async () => {
    const link = await dp.ensureVxlan(spec());
    expect(link).toMatchObject({ name: 'flannel.1', mtu: 1450, mac: '0e:2a:00:00:00:01', up: true, kind: 'vxlan' });
    expect(link.vxlan).toMatchObject({ vni: 1, port: 8472, underlayIndex: eth0, learning: false, gbp: false });
    const shown = await ns.ip('-d', 'link', 'show', 'flannel.1');
    expect(shown).toMatch(/vxlan id 1 local 192\.0\.2\.1 dev eth0 srcport 0 0 dstport 8472 nolearning/);
    // Same parameters: kept (same index); different MTU: replaced.
    expect((await dp.ensureVxlan(spec())).index).toBe(link.index);
    const replaced = await dp.ensureVxlan(spec({ mtu: 1400 }));
    expect(replaced.index).not.toBe(link.index);
    expect(replaced.mtu).toBe(1400);
    await dp.ensureVxlan(spec());
  });

  it('keeps exactly one address inside the network and leaves others alone', async () => {
    const link = (await dp.link('flannel.1'))!;
    await ns.ip('addr', 'add', '10.244.9.0/32', 'dev', 'flannel.1');
    await ns.ip('addr', 'add', '169.254.7.7/16', 'dev', 'flannel.1');
    await dp.ensureAddress(link.index, { linkIndex: link.index, cidr: net('10.244.3.0/32'), address: ip4('10.244.3.0') }, net('10.244.0.0/16'));
    const shown = await ns.ip('-4', 'addr', 'show', 'flannel.1');
    expect(shown).toMatch(/inet 10\.244\.3\.0\/32/);
    expect(shown).not.toMatch(/10\.244\.9\.0/);
    expect(shown).toMatch(/169\.254\.7\.7/);
  });

  it('applies neighbour, FDB and route entries in one batch, as iproute2 shows them', async () => {
    const idx = (await dp.link('flannel.1'))!.index;
    const entries: DatapathEntry[] = [
      { kind: 'neigh', linkIndex: idx, ip: ip4('10.244.2.0'), mac: '0e:2a:00:00:00:02' },
      { kind: 'fdb', linkIndex: idx, mac: '0e:2a:00:00:00:02', dst: ip4('192.0.2.2') },
      { kind: 'route', dst: net('10.244.2.0/24'), via: ip4('10.244.2.0'), linkIndex: idx, onlink: true },
      { kind: 'route', dst: net('10.244.4.0/24'), via: ip4('192.0.2.4') },
    ];
    const report = await dp.apply(entries.map((entry) => ({ op: 'replace', entry })));
    expect(report.failures).toEqual([]);
    expect(await ns.ip('neigh', 'show', 'dev', 'flannel.1')).toMatch(/10\.244\.2\.0 lladdr 0e:2a:00:00:00:02 PERMANENT/);
    expect(await ns.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).toMatch(/0e:2a:00:00:00:02 dst 192\.0\.2\.2 self permanent/);
    const routes = await ns.ip('route', 'show');
    // Every route we program carries our own protocol number, which is how we tell ours from anyone else's.
    expect(routes).toMatch(/10\.244\.2\.0\/24 via 10\.244\.2\.0 dev flannel\.1 proto 70 onlink/);
    expect(routes).toMatch(/10\.244\.4\.0\/24 via 192\.0\.2\.4 dev eth0 proto 70/);

    const scope: DatapathScope = { routeNetworks: [net('10.244.0.0/16')], excludeRoutes: [net('10.244.3.0/24')], neighLinks: [idx] };
    const dumped = await dp.dump(scope);
    expect(dumped).toHaveLength(4);
    expect(dumped).toContainEqual({ kind: 'route', dst: net('10.244.4.0/24'), via: ip4('192.0.2.4'), linkIndex: eth0 });
  });

  it('reports each failing entry and applies the rest of the batch', async () => {
    const idx = (await dp.link('flannel.1'))!.index;
    const changes: DatapathChange[] = [
      { op: 'replace', entry: { kind: 'route', dst: net('10.244.5.0/24'), via: ip4('198.51.100.9') } },
      { op: 'delete', entry: { kind: 'route', dst: net('10.244.77.0/24') } },
      { op: 'replace', entry: { kind: 'neigh', linkIndex: idx, ip: ip4('10.244.6.0'), mac: '0e:2a:00:00:00:06' } },
    ];
    const report = await dp.apply(changes);
    expect(report.applied).toBe(1);
    expect(report.failures.map((f) => f.errno).sort()).toEqual(['ENETUNREACH', 'ESRCH']);
    expect(await ns.ip('neigh', 'show', 'dev', 'flannel.1')).toMatch(/10\.244\.6\.0/);
  });

  it('applies 15000 entries in one call', async () => {
    const idx = (await dp.link('flannel.1'))!.index;
    const changes: DatapathChange[] = [];
    for (let i = 0; i < 5000; i++) {
      const third = 10 + (i >> 8);
      const subnet = `10.${third}.${i & 255}.0`;
      const mac = `0e:2b:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
      changes.push(
        { op: 'replace', entry: { kind: 'neigh', linkIndex: idx, ip: ip4(subnet), mac } },
        { op: 'replace', entry: { kind: 'fdb', linkIndex: idx, mac, dst: ip4(`192.0.2.${(i % 200) + 10}`) } },
        { op: 'replace', entry: { kind: 'route', dst: net(`${subnet}/24`), via: ip4(subnet), linkIndex: idx, onlink: true } },
      );
    }
    const report = await dp.apply(changes);
    expect(report.failures).toEqual([]);
    const dumped = await dp.dump({ routeNetworks: [net('10.0.0.0/8')], excludeRoutes: [], neighLinks: [idx] });
    expect(dumped.length).toBeGreaterThanOrEqual(15000);
    const cleanup = await dp.apply(changes.map((c) => ({ op: 'delete' as const, entry: c.entry })).reverse());
    expect(cleanup.failures).toEqual([]);
  });

  it('adds a blackhole route once, and never over an existing route for the subnet', async () => {
    await dp.ensureBlackhole(net('10.244.99.0/24'));
    await dp.ensureBlackhole(net('10.244.99.0/24'));
    expect((await ns.ip('route', 'show', 'type', 'blackhole')).trim()).toBe('blackhole 10.244.99.0/24');
    await ns.ip('route', 'add', '10.244.98.0/24', 'dev', 'eth0');
    await dp.ensureBlackhole(net('10.244.98.0/24'));
    expect((await ns.ip('route', 'show', '10.244.98.0/24')).trim()).toBe('10.244.98.0/24 dev eth0 scope link');
  });

  it('notifies deletions made behind its back', async () => {
    const idx = (await dp.link('flannel.1'))!.index;
    const scope: DatapathScope = { routeNetworks: [net('10.244.0.0/16')], excludeRoutes: [], neighLinks: [idx] };
    const seen: DatapathEvent[] = [];
    const stop = new AbortController();
    void (async () => {
      for await (const e of dp.events(stop.signal)) if (e.type !== 'entry-deleted' || inScope(e.entry, scope)) seen.push(e);
    })();
    await new Promise((r) => setTimeout(r, 200));
    await ns.ip('route', 'del', '10.244.2.0/24');
    await ns.ip('neigh', 'del', '10.244.2.0', 'dev', 'flannel.1');
    await ns.exec('bridge', ['fdb', 'del', '0e:2a:00:00:00:02', 'dev', 'flannel.1', 'dst', '192.0.2.2', 'self']);
    await ns.ip('link', 'del', 'flannel.1');
    await waitFor('4 events', () => (seen.filter((e) => e.type !== 'overrun').length >= 4 ? true : undefined), 5000);
    const kinds = seen.map((e) => (e.type === 'entry-deleted' ? e.entry.kind : e.type));
    expect(kinds).toEqual(expect.arrayContaining(['route', 'neigh', 'fdb', 'link-deleted']));
    stop.abort();
  });
});
