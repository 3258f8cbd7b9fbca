/**
 * Side by side with upstream flannel in etcd mode: hosts alternate between upstream's flanneld (v0.28.9, built from
 * its Go module by tools/build.sh flannel) and ours on one etcd and one network. Proven here: every pod reaches every
 * other over vxlan, vxlan with DirectRouting, host-gw and udp, and dual-stack and IPv6-only, whichever daemon runs on
 * either end; each side's lease is
 * byte for byte what the other writes for the same host (same keys, order and spelling); and one node migrates in
 * place, as an operator would do it (stop one daemon, start the other with the same flags and subnet.env), from
 * upstream to ours and back: same subnet, same VTEP MAC, no rule twice, and its pods keep talking meanwhile.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downLeavesNothing, lab, takeDownStaleLabs, upReaching } from '../helpers/lab-driver.js';
import { clusterPerTest } from '../helpers/cluster-per-test.js';
import type { Cluster } from '../helpers/cluster.js';
import { ping, pingMatrix, type Pod } from '../helpers/topology.js';

const startCluster = clusterPerTest();
const UPSTREAM = ['h2', 'h4'];

/** Every lease under the prefix: key → value as stored. */
async function leases(cluster: Cluster): Promise<Map<string, string>> {
  const out = await cluster.etcdctl('get', '--prefix', '/coreos.com/network/subnets/');
  const lines = out.trim().split('\n');
  const found = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) found.set(lines[i] as string, lines[i + 1] as string);
  return found;
}

/** A host's lease value with what differs from host to host (its public IP, its VTEP MAC) blanked. */
const shape = (value: string): string =>
  value.replace(/"PublicIP(v6)?":"[^"]*"/g, '"PublicIP$1":"-"').replace(/"VtepMAC":"[^"]*"/g, '"VtepMAC":"-"');

const V6 = '2001:db8:a::/48';
const v6Endpoints = (pods: readonly Pod[]): Pod[] => pods.map((p) => ({ ...p, ip: p.ip6 as string }));

describe.each([
  { name: 'vxlan', stack: 'v4', config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } } },
  { name: 'vxlan + DirectRouting', stack: 'v4', config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan', DirectRouting: true } } },
  { name: 'host-gw', stack: 'v4', config: { Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } } },
  // The same wire format: upstream's TUN + UDP encapsulation on one end, our native addon on the other.
  { name: 'udp', stack: 'v4', config: { Network: '10.244.0.0/16', Backend: { Type: 'udp' } } },
  { name: 'vxlan, dual-stack', stack: 'dual', config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6, Backend: { Type: 'vxlan' } } },
  { name: 'host-gw, dual-stack', stack: 'dual', config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6, Backend: { Type: 'host-gw' } } },
  // Upstream v0.28.9 in etcd mode with EnableIPv4 false programs no route to any peer, ours or its own (seen here:
  // two upstream hosts also leased one subnet between them), so only our side of the pairs can be asked to work.
  { name: 'vxlan, IPv6 only', stack: 'v6', config: { EnableIPv4: false, EnableIPv6: true, IPv6Network: V6, Backend: { Type: 'vxlan' } }, upstream: ['h2'], upstreamRoutesNothing: true },
] as const)('upstream flanneld and ours on one network, $name', ({ stack, config, ...rest }) => {
  it('lets every pod reach every other, and both write the same lease', async () => {
    const upstream: readonly string[] = 'upstream' in rest ? rest.upstream : UPSTREAM;
    const cluster = await startCluster('up', { hosts: 4, upstream, stack, config, ...('upstreamRoutesNothing' in rest ? { unroutedHosts: upstream } : {}) });
    const upstreamPod = (f: { from: Pod; to: { ip: string } }): boolean =>
      upstream.includes(f.from.host.name) || cluster.pods.some((p) => p.ip === f.to.ip && upstream.includes(p.host.name));
    const failures = (await pingMatrix(cluster.pods, { count: 2 })).filter((f) => !('upstreamRoutesNothing' in rest) || !upstreamPod(f));
    expect(failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`)).toEqual([]);
    if ('upstreamRoutesNothing' in rest) {
      // Ours reads upstream's IPv6-only lease and programs the way to it.
      const route = await cluster.topology.host('h1').ns.ip('-6', 'route', 'show', cluster.subnetsOf('h2')[0] as string);
      expect(route).toMatch(/ dev flannel-v6\.1 /);
    }
    if (stack === 'dual') {
      const failures6 = await pingMatrix(v6Endpoints(cluster.pods), { count: 2 });
      expect(failures6.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`)).toEqual([]);
    }
    const all = await leases(cluster);
    expect(all.size).toBe(4);
    // The key: <v4>-<len>, <v4>-<len>&<v6>-<len> dual-stack, 0.0.0.0-0&<v6>-<len> IPv6-only (upstream's spelling).
    const keyOf = (host: string): string => {
      const [v4, v6] = stack === 'v6' ? [undefined, cluster.subnetsOf(host)[0]] : cluster.subnetsOf(host);
      const part = (cidr: string): string => cidr.replace('/', '-');
      return `/coreos.com/network/subnets/${v4 ? part(v4) : '0.0.0.0-0'}${v6 ? `&${part(v6)}` : ''}`;
    };
    const byHost = new Map(cluster.topology.hosts.map((h) => [h.name, all.get(keyOf(h.name))]));
    expect([...byHost.values()].every((v) => v !== undefined), JSON.stringify([...all.keys()])).toBe(true);
    const ours = shape(byHost.get('h1') as string);
    const theirs = shape(byHost.get('h2') as string);
    expect(theirs).toBe(ours);
    expect(shape(byHost.get('h3') as string)).toBe(ours);
    expect(shape(byHost.get('h4') as string)).toBe(upstream.includes('h4') ? theirs : ours);
  });
});

/** The host's iptables rules, one per line, without counters. */
const rules = async (cluster: Cluster, host: string): Promise<string[]> =>
  (await cluster.topology.host(host).ns.exec('iptables-save', [])).split('\n').filter((l) => l.startsWith('-A '));

const duplicates = (lines: readonly string[]): string[] => lines.filter((l, i) => lines.indexOf(l) !== i);

const podOn = (cluster: Cluster, host: string): Pod => cluster.pods.find((p) => p.host.name === host) as Pod;

describe('in-place migration of one node between upstream flanneld and ours (vxlan)', () => {
  it('keeps the subnet, the VTEP MAC and its pods talking, with no rule twice, from upstream to ours and back', async () => {
    const cluster = await startCluster('mg', {
      hosts: 3, upstream: ['h2'], config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
      flanneldArgs: ['--ip-masq'], upstreamArgs: ['--ip-masq'],
    });
    const h2 = cluster.topology.host('h2');
    const subnet = cluster.subnetOf('h2');
    const mac = async (): Promise<string> => /link\/ether (\S+)/.exec(await h2.ns.ip('link', 'show', 'flannel.1'))?.[1] ?? '';
    const lease = async (): Promise<string> => (await leases(cluster)).get(`/coreos.com/network/subnets/${subnet.replace('/', '-')}`) ?? '';
    const firstMac = await mac();
    expect(await lease()).toContain(`"VtepMAC":"${firstMac}"`);
    for (const next of ['ours', 'upstream'] as const) {
      // 100 pings at 20 ms into h2's pod and out of it, across the switch.
      const into = ping(podOn(cluster, 'h1').ns, podOn(cluster, 'h2').ip, { count: 100, intervalSec: 0.02 });
      const out = ping(podOn(cluster, 'h2').ns, podOn(cluster, 'h3').ip, { count: 100, intervalSec: 0.02 });
      await new Promise((r) => setTimeout(r, 300));
      await cluster.stopDaemon('h2');
      await cluster.startDaemon('h2', { daemon: next, keepSubnetFile: true });
      for (const result of [await into, await out]) {
        expect(result.transmitted, `to ${next}: ${result.output}`).toBe(100);
        expect(result.received, `to ${next}: ${result.output}`).toBeGreaterThanOrEqual(98);
      }
      expect(cluster.subnetOf('h2'), `subnet after moving to ${next}`).toBe(subnet);
      expect(await mac(), `flannel.1 MAC after moving to ${next}`).toBe(firstMac);
      expect(await lease()).toContain(`"VtepMAC":"${firstMac}"`);
      const now = await rules(cluster, 'h2');
      expect(now.filter((l) => l.includes('FLANNEL-POSTRTG')).length, `masquerade rules after moving to ${next}`).toBeGreaterThan(0);
      expect(duplicates(now), `rules twice after moving to ${next}`).toEqual([]);
      const failures = await pingMatrix(cluster.pods, { count: 2 });
      expect(failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`)).toEqual([]);
    }
  });
});

describe('the lab with --upstream', () => {
  const id = `t${process.pid}m`;
  beforeAll(takeDownStaleLabs);
  afterAll(async () => void (await lab('down', '--id', id)));

  it('runs upstream flanneld on the hosts named, says so in the hosts table, and every pod reaches every other', async () => {
    const out = await upReaching(id, '6/6 pod pairs reachable', '--hosts', '3', '--pods', '1', '--upstream', 'h2');
    expect(out).toContain("• host h2 (192.0.2.2) and upstream's flanneld … done");
    expect(out).toMatch(/\| h2 \| 192\.0\.2\.2 \|[^\n]*\| upstream v0\.28\.9, running/);
    expect(out).toMatch(/\| h1 \| 192\.0\.2\.1 \|[^\n]*\| running, pid \d+/);
    await downLeavesNothing(id);
  });
});
