/**
 * Dual-stack and IPv6-only overlays in namespaces: three hosts on an underlay with IPv4 + IPv6 (or IPv6 only, from
 * 2001:db8::/32), etcd on the hub, the real flanneld on every host and a pod per host with an address of each
 * family. Every pod reaches every other pod over each family the overlay carries, with vxlan and host-gw.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { clusterPerTest } from '../helpers/cluster-per-test.js';
import { FLANNELD_BIN } from '../helpers/flanneld-process.js';
import { NetnsRun, type Netns } from '../helpers/netns.js';
import { waitFor } from '../helpers/processes.js';
import { linkStats, ping, pingMatrix, type Pod } from '../helpers/topology.js';

const V6_NETWORK = '2001:db8:a::/48';
const HEALTH_PORT = 8472;

const startPerTest = clusterPerTest();

function describeFailures(failures: { from: Pod; to: { ip: string } }[]): string[] {
  return failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`);
}

const v6Endpoints = (pods: readonly Pod[]): Pod[] => pods.map((p) => ({ ...p, ip: p.ip6 as string }));

describe.each([
  { name: 'vxlan', backend: { Type: 'vxlan' } },
  { name: 'vxlan + DirectRouting', backend: { Type: 'vxlan', DirectRouting: true } },
  { name: 'host-gw', backend: { Type: 'host-gw' } },
])('dual-stack overlay with $name', ({ backend }) => {
  it('lets every pod reach every other pod over IPv4 and IPv6', async () => {
    const cluster = await startPerTest('ds', {
      hosts: 3,
      stack: 'dual',
      config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6_NETWORK, Backend: backend },
    });
    expect(cluster.pods.every((p) => p.ip6 !== undefined)).toBe(true);
    expect(describeFailures(await pingMatrix(cluster.pods, { count: 2 }))).toEqual([]);
    expect(describeFailures(await pingMatrix(v6Endpoints(cluster.pods), { count: 2 }))).toEqual([]);
    // Each family takes its own path: the encapsulated one through flannel-v6.1, the others via the peer's address.
    const h1 = cluster.topology.host('h1').ns;
    const route6 = (await h1.ip('-6', 'route', 'show', cluster.subnetsOf('h2')[1]!)).trim();
    if (backend.Type === 'vxlan' && !('DirectRouting' in backend)) expect(route6).toMatch(/ dev flannel-v6\.1 /);
    else expect(route6).toMatch(/via 2001:db8:2::2 dev eth0/);
  });
});

describe.each([
  { name: 'vxlan', backend: { Type: 'vxlan' } },
  { name: 'host-gw', backend: { Type: 'host-gw' } },
])('IPv6-only overlay with $name', ({ backend }) => {
  it('lets every pod reach every other pod over IPv6 on an IPv6-only underlay', async () => {
    const cluster = await startPerTest('v6', {
      hosts: 3,
      stack: 'v6',
      config: { EnableIPv4: false, EnableIPv6: true, IPv6Network: V6_NETWORK, Backend: backend },
      flanneldArgs: ['--healthz-ip=127.0.0.1', `--healthz-port=${HEALTH_PORT}`, '--peer-probe-interval=1'],
    });
    expect(describeFailures(await pingMatrix(cluster.pods, { count: 2 }))).toEqual([]);

    // Peers are probed over IPv6 through the overlay, and `flanneld status` lists them by their IPv6 subnet.
    const h1 = cluster.topology.host('h1').ns;
    const status = async (): Promise<string> => h1.exec(process.execPath, [FLANNELD_BIN, 'status', `--healthz-port=${HEALTH_PORT}`]).catch(() => '');
    await waitFor('both peers probed reachable', async () => ((await status()).match(/\| 2001:db8:a:[0-9a-f]+::\/64 \| 2001:db8:2::[23] \| .* \| reachable \| \d+\.\d\d ms \|/g)?.length === 2 ? true : undefined), 10_000, 200);

    // No IPv4 anywhere: the lease key carries upstream's 0.0.0.0-0 placeholder, subnet.env has only the v6 pair.
    const [v6] = cluster.subnetsOf('h2') as [string];
    expect(v6).toMatch(/^2001:db8:a:[0-9a-f]+::\/64$/);
    const keys = (await cluster.etcdctl('get', '--prefix', '/coreos.com/network/subnets/', '--keys-only')).split('\n').filter(Boolean).sort();
    expect(keys).toContain(`/coreos.com/network/subnets/0.0.0.0-0&${v6.replace('/', '-')}`);
    expect(keys).toHaveLength(3);
    const value = JSON.parse((await cluster.etcdctl('get', `/coreos.com/network/subnets/0.0.0.0-0&${v6.replace('/', '-')}`, '--print-value-only')).trim()) as Record<string, unknown>;
    expect(value['PublicIP']).toBe('0.0.0.0');
    expect(value['PublicIPv6']).toBe('2001:db8:2::2');
    expect(value['BackendType']).toBe(backend.Type);
    const env = readFileSync(join(cluster.dir, 'h2.env'), 'utf8');
    expect(env).not.toMatch(/^FLANNEL_(NETWORK|SUBNET)=/m);
    expect(env).toContain(`FLANNEL_IPV6_NETWORK=${V6_NETWORK}\n`);
    const links = await cluster.topology.host('h2').ns.ip('-o', 'link', 'show');
    expect(links).not.toContain('flannel.1:');
    if (backend.Type === 'vxlan') {
      expect(value['BackendV6Data']).toEqual({ VNI: 1, VtepMAC: expect.stringMatching(/^[0-9a-f:]{17}$/) });
      expect(value).not.toHaveProperty('BackendData');
      expect(links).toContain('flannel-v6.1:');
      expect(env).toMatch(/^FLANNEL_MTU=1430$/m);
    } else {
      expect(env).toMatch(/^FLANNEL_MTU=1500$/m);
    }
  });
});

describe('dual-stack vxlan in detail', () => {
  const detailRun = new NetnsRun('dx');
  let detail: Cluster | undefined;
  const hostNs = (name: string) => detail!.topology.host(name).ns;
  const v6SubnetOf = (host: string): string => detail!.subnetsOf(host).find((s) => s.includes(':')) as string;
  const v6Mesh = async (): Promise<string[]> => {
    const failures = describeFailures(await pingMatrix(v6Endpoints(detail!.pods), { count: 1 }));
    return failures.length === 0 ? failures : [...failures, await kernelAndLogs()];
  };
  /** What each host's kernel holds for IPv6 and what its daemon warned about, so a failure explains itself. */
  const kernelAndLogs = async (): Promise<string> => {
    const parts: string[] = [];
    for (const h of detail!.topology.hosts) {
      const show = async (cmd: string, args: string[]): Promise<string> => h.ns.exec(cmd, args).catch((e: Error) => e.message);
      parts.push(`== ${h.name}`, await show('ip', ['-6', 'route', 'show', 'dev', 'flannel-v6.1']), await show('ip', ['-6', 'neigh', 'show', 'dev', 'flannel-v6.1']),
        await show('bridge', ['fdb', 'show', 'dev', 'flannel-v6.1']),
        detail!.daemon(h.name).output().split('\n').filter((l) => /"level":(40|50)/.test(l)).join('\n'));
    }
    return parts.join('\n');
  };

  beforeAll(async () => {
    detail = await startCluster(detailRun, {
      hosts: 3,
      stack: 'dual',
      config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6_NETWORK, Backend: { Type: 'vxlan' } },
      flanneldArgs: ['--datapath-resync=30'],
    });
  });
  afterAll(async () => {
    await detail?.stop();
    await detailRun.cleanup();
  });

  it('gives flannel-v6.1 the /128 of the IPv6 subnet and an MTU 70 below the underlay; subnet.env has both families', async () => {
    const h1 = hostNs('h1');
    const v6 = v6SubnetOf('h1');
    const addrs = await h1.ip('-6', 'addr', 'show', 'dev', 'flannel-v6.1', 'scope', 'global');
    expect(addrs).toContain(`inet6 ${v6.split('/')[0]}/128`);
    expect(addrs).not.toContain('tentative'); // usable as a source at once (no DAD)
    expect(await h1.ip('link', 'show', 'flannel-v6.1')).toMatch(/mtu 1430 /);
    expect(await h1.ip('link', 'show', 'flannel.1')).toMatch(/mtu 1450 /);
    const env = readFileSync(join(detail!.dir, 'h1.env'), 'utf8');
    expect(env).toMatch(/^FLANNEL_NETWORK=10\.244\.0\.0\/16$/m);
    expect(env).toContain(`FLANNEL_IPV6_NETWORK=${V6_NETWORK}\n`);
    expect(env).toContain(`FLANNEL_IPV6_SUBNET=${v6.replace('::/', '::1/')}\n`);
    expect(env).toMatch(/^FLANNEL_MTU=1430$/m);
  });

  it('stores dual-stack leases under <v4>-<len>&<v6>-<len> with PublicIPv6 and BackendV6Data', async () => {
    const [v4, v6] = detail!.subnetsOf('h2') as [string, string];
    const key = `/coreos.com/network/subnets/${v4.replace('/', '-')}&${v6.replace('/', '-')}`;
    const value = JSON.parse((await detail!.etcdctl('get', key, '--print-value-only')).trim()) as Record<string, unknown>;
    const mac = /link\/ether (\S+)/.exec(await hostNs('h2').ip('link', 'show', 'flannel-v6.1'))?.[1];
    expect(value).toEqual({
      PublicIP: '192.0.2.2',
      PublicIPv6: '2001:db8:2::2',
      BackendType: 'vxlan',
      BackendData: { VNI: 1, VtepMAC: expect.stringMatching(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/) },
      BackendV6Data: { VNI: 1, VtepMAC: mac },
    });
  });

  it('carries pod IPv6 traffic through flannel-v6.1, full-size packets included', async () => {
    const before = (await linkStats(hostNs('h1'), 'flannel-v6.1'))?.txPackets ?? 0;
    const [p1, p2] = v6Endpoints(detail!.pods);
    // 1430 - 40 (IPv6 header) - 8 (ICMPv6 header): the largest echo that fits the device unfragmented.
    const big = await ping(p1!.ns, p2!.ip, { count: 2, size: 1382, dontFragment: true });
    expect(big.output).toContain('2 received');
    expect(((await linkStats(hostNs('h1'), 'flannel-v6.1'))?.txPackets ?? 0) - before).toBeGreaterThanOrEqual(2);
  });

  it.each([
    ['route', (h1: Netns, s: string) => h1.ip('-6', 'route', 'del', s)],
    ['neighbour', (h1: Netns, s: string) => h1.ip('-6', 'neigh', 'del', s.split('/')[0]!, 'dev', 'flannel-v6.1')],
  ])('restores an IPv6 %s deleted behind its back', async (_what, remove) => {
    const h1 = hostNs('h1');
    const s = v6SubnetOf('h2');
    const before = (await h1.ip('-6', 'route', 'show', s)).trim();
    expect(before).toContain('dev flannel-v6.1');
    await remove(h1, s);
    await waitFor('IPv6 entry back', async () => ((await h1.ip('-6', 'route', 'show', s)).trim() === before ? true : undefined), 2000, 20);
    expect(await v6Mesh()).toEqual([]);
  });

  it('re-creates a deleted flannel-v6.1 with its address and every IPv6 peer entry', async () => {
    const h1 = hostNs('h1');
    const routes = (await h1.ip('-6', 'route', 'show', 'dev', 'flannel-v6.1')).trim();
    const v4Routes = (await h1.ip('route', 'show', 'dev', 'flannel.1')).trim();
    await h1.ip('link', 'del', 'flannel-v6.1');
    await waitFor('IPv6 device and routes back', async () => ((await h1.ip('-6', 'route', 'show', 'dev', 'flannel-v6.1').catch(() => '')).trim() === routes ? true : undefined), 3000, 50);
    expect((await h1.ip('route', 'show', 'dev', 'flannel.1')).trim()).toBe(v4Routes);
    expect(await v6Mesh()).toEqual([]);
    expect(describeFailures(await pingMatrix(detail!.pods, { count: 1 }))).toEqual([]);
  });
});
