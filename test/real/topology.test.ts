/**
 * The multi-host topology helper on a real kernel: an underlay where hosts reach each other (also across the hub
 * router), pods that reach their own host but not other hosts' pods before any overlay exists, link counters,
 * etcd on the hub, and no namespace of this run left behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EtcdServer } from '../helpers/etcd-server.js';
import { NetnsRun, removeStaleNamespaces, sh } from '../helpers/netns.js';
import { killStaleTrackedProcesses } from '../helpers/processes.js';
import {
  addPod,
  buildTopology,
  HUB_ETCD_ENDPOINT,
  ipJson,
  linkStats,
  ping,
  pingMatrix,
  startEtcdOnHub,
  type Pod,
  type Topology,
} from '../helpers/topology.js';

const run = new NetnsRun('topo');
let topo: Topology;
let etcd: EtcdServer | undefined;
const pods: Pod[] = [];

const pairName = (f: { from: { ip: string }; to: { ip: string } }): string => `${f.from.ip}->${f.to.ip}`;

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  topo = await buildTopology(run, { hosts: 3, routedHosts: 1 });
});

afterAll(async () => {
  await etcd?.stop();
  await run.cleanup();
});

describe('test topology', () => {
  it('lays out hosts on both underlay segments', () => {
    expect(topo.hosts.map((h) => [h.name, h.ip, h.gateway])).toEqual([
      ['h1', '192.0.2.1', '192.0.2.254'],
      ['h2', '192.0.2.2', '192.0.2.254'],
      ['h3', '192.0.2.3', '192.0.2.254'],
      ['h4', '198.51.100.4', '198.51.100.254'],
    ]);
    expect(topo.hosts.every((h) => h.ns.name.startsWith(run.prefix))).toBe(true);
    expect(() => topo.host('h9')).toThrow(/no host h9/);
  });

  it('hosts on the underlay ping each other', async () => {
    const underlay = topo.hosts.filter((h) => h.underlay === '192.0.2.0/24');
    expect(underlay).toHaveLength(3);
    expect((await pingMatrix(underlay)).map(pairName)).toEqual([]);
  });

  it('pods reach their host but not pods on other hosts before an overlay exists', async () => {
    const [h1, h2] = [topo.host('h1'), topo.host('h2')];
    // In parallel on purpose: two pods race to create h1's cni0.
    pods.push(
      ...(await Promise.all([
        addPod(h1, 'a', '10.244.1.0/24', 1),
        addPod(h1, 'b', '10.244.1.0/24', 2),
        addPod(h2, 'a', '10.244.2.0/24', 1),
      ])),
    );
    const [a1, b1, a2] = pods as [Pod, Pod, Pod];
    expect([a1.ip, b1.ip, a2.ip, a1.gateway]).toEqual(['10.244.1.2', '10.244.1.3', '10.244.2.2', '10.244.1.1']);
    expect((await ping(a1.ns, '10.244.1.1')).ok).toBe(true);
    expect((await ping(a1.ns, h1.ip)).ok).toBe(true);

    const failures = await pingMatrix(pods);
    expect(failures.map(pairName)).toEqual([
      '10.244.1.2->10.244.2.2',
      '10.244.1.3->10.244.2.2',
      '10.244.2.2->10.244.1.2',
      '10.244.2.2->10.244.1.3',
    ]);
    expect(failures[0]?.output).toMatch(/0 received|Unreachable/);
  });

  it('refuses pod addresses outside 10.244.0.0/16 and a second pod subnet on one bridge', async () => {
    const h3 = topo.host('h3');
    await expect(addPod(h3, 'x', '10.1.0.0/24', 1)).rejects.toThrow(/inside 10\.244\.0\.0\/16/);
    await expect(addPod(h3, 'x', '10.244.3.0/24', 254)).rejects.toThrow(/index/);
    await expect(addPod(topo.host('h1'), 'c', '10.244.9.0/24', 3)).rejects.toThrow(/cni0 on h1 already has 10\.244\.1\.1\/24/);
  });

  it('linkStats counters grow with pings and are undefined for a missing device', async () => {
    const [h1, h2] = [topo.host('h1'), topo.host('h2')];
    const before = await linkStats(h1.ns, 'eth0');
    const result = await ping(h1.ns, h2.ip, { count: 3 });
    const after = await linkStats(h1.ns, 'eth0');
    expect(result).toMatchObject({ ok: true, transmitted: 3, received: 3 });
    expect(before).toBeDefined();
    expect(after!.txPackets - before!.txPackets).toBeGreaterThanOrEqual(3);
    expect(after!.rxPackets - before!.rxPackets).toBeGreaterThanOrEqual(3);
    expect(after!.txBytes).toBeGreaterThan(before!.txBytes);
    expect(await linkStats(h1.ns, 'nosuchdev0')).toBeUndefined();
  });

  it('reaches the routed host through the hub, not over a directly connected subnet', async () => {
    const [h1, h4] = [topo.host('h1'), topo.host('h4')];
    expect((await ping(h1.ns, h4.ip)).ok).toBe(true);
    expect((await ping(h4.ns, h1.ip)).ok).toBe(true);
    const [route] = await ipJson(h1.ns, 'route', 'get', h4.ip);
    expect(route).toMatchObject({ dst: h4.ip, gateway: '192.0.2.254', dev: 'eth0' });
    const connected = (await ipJson(h1.ns, 'route', 'show', 'scope', 'link')).map((r) => r['dst']);
    expect(connected).toContain('192.0.2.0/24');
    expect(connected.filter((d) => String(d).startsWith('198.51.100.'))).toEqual([]);
    const [back] = await ipJson(h4.ns, 'route', 'get', h1.ip);
    expect(back).toMatchObject({ gateway: '198.51.100.254' });
  });

  it('serves etcd on the hub to hosts on both segments', async () => {
    etcd = await startEtcdOnHub(topo);
    expect(etcd.endpoint).toBe(HUB_ETCD_ENDPOINT);
    expect(topo.etcdEndpoint).toBe(HUB_ETCD_ENDPOINT);
    await topo.host('h1').ns.exec('etcdctl', [`--endpoints=${topo.etcdEndpoint}`, 'put', '/topology/probe', 'from-h1']);
    const got = await topo.host('h4').ns.exec('etcdctl', [`--endpoints=${topo.etcdEndpoint}`, 'get', '--print-value-only', '/topology/probe']);
    expect(got.trim()).toBe('from-h1');
  });

  it('leaves no namespace of this run behind', async () => {
    await etcd?.stop();
    etcd = undefined;
    await run.cleanup();
    const names = (await sh('ip', ['netns', 'list'])).split('\n').map((l) => l.split(' ')[0] ?? '');
    expect(names.filter((n) => n.startsWith(run.prefix))).toEqual([]);
  });
});
