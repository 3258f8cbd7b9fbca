/**
 * The wireguard backend in Kubernetes mode against a real control plane (test/helpers/kube-cluster.ts), on a
 * dual-stack underlay with Mode auto: one device per node carries both families, dialled over IPv4 (the underlay's
 * 192.0.2.0/24 is not RFC 1918, so upstream's selectMode picks it). The devices run in wireguard-go (this kernel has
 * no wireguard module). Proven here: the annotations upstream's nodes read, with the port really listened on in
 * backend-v6-data; one device with both addresses and both network routes; each peer with both subnets as allowed
 * IPs; every pod reaching every other over both families; a deleted Node leaving no peer behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UapiClient } from '../../backends/wireguard/uapi-socket.js';
import type { WgDeviceState } from '../../backends/wireguard/uapi.js';
import { formatIp } from '../../flanneld/ip/address.js';
import { formatCidr } from '../../flanneld/ip/cidr.js';
import { systemClock } from '../../flanneld/runtime/clock.js';
import { wireguardSocketOf } from '../helpers/flanneld-process.js';
import { FLANNEL_ANNOTATION as P, startKubeCluster, type KubeCluster } from '../helpers/kube-cluster.js';
import { NetnsRun, removeStaleNamespaces } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { addPod, ipJson, pingMatrix, type Pod } from '../helpers/topology.js';

const run = new NetnsRun('kwg');
const V6_NETWORK = '2001:db8:a::/48';
const HOSTS = ['h1', 'h2', 'h3'];
let cluster: KubeCluster;
const cidrs: Record<string, string[]> = {};
const pods: Pod[] = [];
const pairs = (failures: { from: Pod; to: { ip: string } }[]): string[] => failures.map((f) => `${f.from.host.name} -> ${f.to.ip}`);

function device(host: string): Promise<WgDeviceState> {
  const pid = cluster.daemon(host)?.child.pid as number;
  return new UapiClient({ socketPath: wireguardSocketOf(pid, 'flannel-wg'), clock: systemClock, timeoutMs: 2000 }).get();
}

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  cluster = await startKubeCluster(run, {
    hosts: 3,
    stack: 'dual',
    netConf: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6_NETWORK, Backend: { Type: 'wireguard', Mode: 'auto' } },
  });
  for (const host of HOSTS) {
    await cluster.registerNode(host);
    cluster.start(host);
  }
  for (const host of HOSTS) {
    await cluster.waitForSubnetEnv(host);
    cidrs[host] = (await cluster.node(host))?.spec?.podCIDRs ?? [];
    pods.push(await addPod(cluster.topology.host(host), `p${host.slice(1)}`, cidrs[host] as string[], 1));
  }
});

afterAll(async () => {
  await cluster?.stop();
  await run.cleanup();
});

describe('wireguard backend in Kubernetes mode (Mode auto, dual-stack)', () => {
  it("publishes upstream's annotations: one key, the one listen port in both families' data", async () => {
    const keys = new Set<string>();
    for (const host of HOSTS) {
      const a = await cluster.annotations(host);
      expect(a[`${P}backend-type`]).toBe('wireguard');
      const v4 = JSON.parse(a[`${P}backend-data`] as string) as { PublicKey: string; Port: number };
      const v6 = JSON.parse(a[`${P}backend-v6-data`] as string) as { PublicKey: string; Port: number };
      expect(v4.Port).toBe(51820);
      expect(v6).toEqual({ PublicKey: v4.PublicKey, Port: 51820 });
      expect(a[`${P}public-ipv6`]).toBe(cluster.topology.host(host).ip6);
      keys.add(v4.PublicKey);
    }
    expect(keys.size).toBe(3);
  });

  it('gives each node one device with both addresses and both network routes', async () => {
    for (const host of HOSTS) {
      const ns = cluster.topology.host(host).ns;
      const links = await ipJson(ns, 'addr', 'show');
      expect(links.some((l) => l['ifname'] === 'flannel-wg-v6')).toBe(false);
      const wg = links.find((l) => l['ifname'] === 'flannel-wg');
      const infos = (wg?.['addr_info'] ?? []) as Record<string, unknown>[];
      const [c4, c6] = cidrs[host] as string[];
      expect(infos.filter((a) => a['scope'] === 'global').map((a) => `${String(a['local'])}/${String(a['prefixlen'])}`).sort()).toEqual(
        [c4?.replace(/\/24$/, '/32'), c6?.replace(/\/64$/, '/128')].sort(),
      );
      expect((await ns.ip('route', 'show', '10.244.0.0/16')).trim()).toMatch(/^10\.244\.0\.0\/16 dev flannel-wg\b/);
      expect((await ns.ip('-6', 'route', 'show', V6_NETWORK)).trim()).toMatch(/^2001:db8:a::\/48 dev flannel-wg\b/);
    }
  });

  it('gives each peer both its subnets, dialled at its IPv4 address', async () => {
    const peers = (await device('h1')).peers.map((p) => `${p.endpoint ? formatIp(p.endpoint.ip) : '-'}:${p.endpoint?.port} ${p.allowedIps.map(formatCidr).sort().join(',')}`);
    expect(peers.sort()).toEqual(['h2', 'h3'].map((h) => `${cluster.topology.host(h).ip}:51820 ${[...(cidrs[h] as string[])].sort().join(',')}`).sort());
  });

  it('lets every pod reach every other pod over IPv4 and IPv6', async () => {
    expect(pairs(await pingMatrix(pods, { count: 2, waitSec: 2 }))).toEqual([]);
    expect(pairs(await pingMatrix(pods.map((p) => ({ ...p, ip: p.ip6 as string })), { count: 2, waitSec: 2 }))).toEqual([]);
  });

  it('removes the peer of a deleted Node', async () => {
    const gone = cidrs['h3']?.[0] as string;
    await cluster.daemon('h3')?.stop('SIGTERM', 3000);
    await cluster.kubectl.run(['delete', 'node', 'h3']);
    for (const host of ['h1', 'h2']) {
      await waitFor(`${host} to drop h3's peer`, async () => {
        const nets = (await device(host)).peers.flatMap((p) => p.allowedIps.map(formatCidr));
        return nets.includes(gone) ? undefined : nets;
      }, 15_000, 200);
      expect((await device(host)).peers).toHaveLength(1);
    }
  });
});
