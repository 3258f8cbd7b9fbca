/**
 * The wireguard backend on the real kernel, etcd mode: three hosts on a dual-stack underlay, one real flanneld per
 * host with `Backend.Type wireguard` (Mode separate). This kernel has no wireguard module, so `auto` runs each device
 * in Debian's wireguard-go, which is what these tests exercise; each daemon gets its own /run/wireguard
 * (test/helpers/flanneld-process.ts) and the tests read a device's peers over its UAPI socket. Proven here: devices,
 * addresses and routes as upstream sets them; every pod reaches every other over both families; a capture on the
 * underlay holds only UDP between the listen ports and never a pod's payload; a wireguard-go killed behind the
 * daemon's back fails /healthz, is restarted and carries traffic again; a rotated key reaches the peers; a peer whose
 * lease is gone leaves no WireGuard peer behind.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UapiClient } from '../../backends/wireguard/uapi-socket.js';
import type { WgDeviceState } from '../../backends/wireguard/uapi.js';
import { formatIp } from '../../flanneld/ip/address.js';
import { formatCidr } from '../../flanneld/ip/cidr.js';
import { systemClock } from '../../flanneld/runtime/clock.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { wireguardSocketOf } from '../helpers/flanneld-process.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { childrenNamed, killStaleTrackedProcesses, spawnTracked, waitFor, type TrackedProcess } from '../helpers/processes.js';
import { ipJson, ping, pingMatrix, type Pod } from '../helpers/topology.js';

const run = new NetnsRun('wg');
const HEALTH_PORT = 8473;
const V6_NETWORK = '2001:db8:a::/48';
const SUBNETS_KEY = '/coreos.com/network/subnets/';
/** "flannel-ts-mark!" as ping fills its payload with it: what must never cross the underlay in clear. */
const MARKER_HEX = '666c616e6e656c2d74732d6d61726b21';
let cluster: Cluster;

const ns = (host: string): Netns => cluster.topology.host(host).ns;
const pod = (host: string): Pod => cluster.pods.find((p) => p.host.name === host) as Pod;
const v6Pods = (): Pod[] => cluster.pods.map((p) => ({ ...p, ip: p.ip6 as string }));
const pairs = (failures: { from: Pod; to: { ip: string } }[]): string[] => failures.map((f) => `${f.from.host.name} -> ${f.to.ip}`);
const keyFile = (host: string): string => join(cluster.dir, `${host}.wgkey`);

/** The device as its wireguard-go reports it, through the daemon's private /run/wireguard. */
function device(host: string, name: string): Promise<WgDeviceState> {
  const pid = cluster.daemon(host).child.pid as number;
  return new UapiClient({ socketPath: wireguardSocketOf(pid, name), clock: systemClock, timeoutMs: 2000 }).get();
}

/** The etcd key of the host's lease: its IPv4 subnet, then (dual-stack) its IPv6 one. */
async function leaseKey(host: string): Promise<string> {
  const keys = (await cluster.etcdctl('get', '--prefix', '--keys-only', SUBNETS_KEY)).split('\n').filter(Boolean);
  const key = keys.find((k) => k.startsWith(`${SUBNETS_KEY}${cluster.subnetOf(host).replace('/', '-')}`));
  if (!key) throw new Error(`no lease for ${host} among ${keys.join(', ')}`);
  return key;
}

/** This host's public key, as its lease publishes it. */
async function publishedKey(host: string): Promise<string> {
  const value = await cluster.etcdctl('get', '--print-value-only', await leaseKey(host));
  return (JSON.parse(value) as { BackendData: { PublicKey: string } }).BackendData.PublicKey;
}

async function health(host: string): Promise<{ status: number; body: string }> {
  const out = await ns(host).exec(process.execPath, ['-e', `fetch('http://127.0.0.1:${HEALTH_PORT}/healthz').then(async r => process.stdout.write(r.status + ' ' + await r.text()))`]);
  const space = out.indexOf(' ');
  return { status: Number(out.slice(0, space)), body: out.slice(space + 1) };
}

/** The wireguard-go processes the host's flanneld started (its children), by PID. */
const wireguardGoPids = (host: string): number[] => childrenNamed(cluster.daemon(host).child.pid as number, 'wireguard-go');

/** tcpdump on `dev` in the host's namespace, written to `file` as packets arrive; stop it with SIGINT. */
function capture(host: string, dev: string, file: string, filter: string): TrackedProcess {
  return spawnTracked('ip', ['netns', 'exec', ns(host).name, 'tcpdump', '-i', dev, '-nn', '--immediate-mode', '-U', '-s', '0', '-w', file, filter], {}, 'tcpdump');
}

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  cluster = await startCluster(run, {
    hosts: 3,
    stack: 'dual',
    config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6_NETWORK, Backend: { Type: 'wireguard' } },
    flanneldArgs: ['--healthz-ip=127.0.0.1', `--healthz-port=${HEALTH_PORT}`],
  });
  // The whole network is routed into the device from the start; a host is ready for the ping tests once each of its
  // devices has a peer per other host (startCluster's route check cannot see that).
  await waitFor('every device to have a peer per other host', async () => {
    const counts = await Promise.all(['h1', 'h2', 'h3'].flatMap((h) => ['flannel-wg', 'flannel-wg-v6'].map(async (d) => (await device(h, d)).peers.length)));
    return counts.every((n) => n === 2) ? true : undefined;
  }, 15_000, 100);
});

afterAll(async () => {
  if (process.env['DEBUG_WG']) for (const h of ['h1', 'h2', 'h3']) console.log(h, cluster?.daemon(h).output().slice(-4000));
  await cluster?.stop();
  await run.cleanup();
});

describe('wireguard backend on the real kernel (userspace devices)', () => {
  it('chooses wireguard-go on a kernel without WireGuard and says so', () => {
    for (const h of ['h1', 'h2', 'h3']) {
      expect(cluster.daemon(h).output()).toContain('the kernel cannot carry WireGuard; running the devices in userspace (wireguard-go)');
    }
  });

  it('gives each host flannel-wg and flannel-wg-v6: MTU 1420, the lease address, one route per family, its ports', async () => {
    for (const h of cluster.topology.hosts) {
      const [v4, v6] = cluster.subnetsOf(h.name);
      const links = await ipJson(h.ns, 'addr', 'show');
      const addrs = (name: string): string[] => {
        const link = links.find((l) => l['ifname'] === name);
        const infos = Array.isArray(link?.['addr_info']) ? (link['addr_info'] as Record<string, unknown>[]) : [];
        return infos.filter((a) => a['scope'] === 'global').map((a) => `${String(a['local'])}/${String(a['prefixlen'])}`);
      };
      expect(links.find((l) => l['ifname'] === 'flannel-wg')).toMatchObject({ mtu: 1420 });
      expect(links.find((l) => l['ifname'] === 'flannel-wg-v6')).toMatchObject({ mtu: 1420 });
      expect(addrs('flannel-wg')).toEqual([v4?.replace(/\/24$/, '/32')]);
      expect(addrs('flannel-wg-v6')).toEqual([v6?.replace(/\/64$/, '/128')]);
      expect((await h.ns.ip('route', 'show', '10.244.0.0/16')).trim()).toMatch(/^10\.244\.0\.0\/16 dev flannel-wg\b/);
      expect((await h.ns.ip('-6', 'route', 'show', V6_NETWORK)).trim()).toMatch(/^2001:db8:a::\/48 dev flannel-wg-v6\b/);
      expect((await device(h.name, 'flannel-wg')).listenPort).toBe(51820);
      expect((await device(h.name, 'flannel-wg-v6')).listenPort).toBe(51821);
    }
  });

  it('gives each device one peer per other host: its key, its address and port, its subnet', async () => {
    const state = await device('h1', 'flannel-wg');
    const peers = state.peers.map((p) => `${p.publicKey} ${p.endpoint ? `${formatIp(p.endpoint.ip)}:${p.endpoint.port}` : '-'} ${p.allowedIps.map(formatCidr).join(',')}`);
    const wanted = await Promise.all(['h2', 'h3'].map(async (h) => `${await publishedKey(h)} ${cluster.topology.host(h).ip}:51820 ${cluster.subnetOf(h)}`));
    expect(peers.sort()).toEqual(wanted.sort());
    const v6 = await device('h1', 'flannel-wg-v6');
    expect(v6.peers.map((p) => p.allowedIps.map(formatCidr).join(',')).sort()).toEqual(['h2', 'h3'].map((h) => cluster.subnetsOf(h)[1]).sort());
    expect(v6.peers.every((p) => p.endpoint?.port === 51821 && p.endpoint.ip.family === 6)).toBe(true);
  });

  it('lets every pod reach every other pod over IPv4 and IPv6', async () => {
    // On failure, each device's view of its peers (handshakes, bytes) says which side never got a session.
    const peerViews = async (): Promise<string> => (await Promise.all(['h1', 'h2', 'h3'].flatMap((h) => ['flannel-wg', 'flannel-wg-v6'].map(async (d) => {
      const state = await device(h, d);
      return `${h}/${d}: ${state.peers.map((p) => `${p.allowedIps.map(formatCidr).join(',')} hs=${p.lastHandshakeMs === undefined ? '-' : `${Date.now() - p.lastHandshakeMs} ms ago`} rx=${p.rxBytes} tx=${p.txBytes}`).join('; ')}`;
    })))).join('\n');
    const v4 = pairs(await pingMatrix(cluster.pods, { count: 2, waitSec: 2 }));
    expect(v4, v4.length > 0 ? await peerViews() : undefined).toEqual([]);
    const v6 = pairs(await pingMatrix(v6Pods(), { count: 2, waitSec: 2 }));
    expect(v6, v6.length > 0 ? await peerViews() : undefined).toEqual([]);
  });

  it('puts only UDP between the listen ports on the underlay, and never a pod payload in clear', async () => {
    const underlay = join(cluster.dir, 'h2-eth0.pcap');
    const inside = join(cluster.dir, 'h2-flannel-wg.pcap');
    // etcd's TCP, ARP and neighbour discovery are the underlay's own; everything else on eth0 must be WireGuard.
    const captures = [
      capture('h2', 'eth0', underlay, 'not (tcp port 2379) and not arp and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 136)'),
      // The control: inside the tunnel the same pings are in clear, so the marker search can find what it looks for.
      capture('h2', 'flannel-wg', inside, 'icmp'),
    ];
    try {
      for (const c of captures) await waitFor('tcpdump listening', () => (c.output().includes('listening on') ? true : undefined), 5000);
      const v4 = await ping(pod('h1').ns, pod('h2').ip, { count: 5, pattern: MARKER_HEX });
      const v6 = await ping(pod('h1').ns, pod('h2').ip6 as string, { count: 5, pattern: MARKER_HEX });
      expect([v4.received, v6.received]).toEqual([5, 5]);
    } finally {
      for (const c of captures) await c.stop('SIGINT', 2000);
    }
    const marker = Buffer.from(MARKER_HEX, 'hex');
    expect(readFileSync(inside).indexOf(marker)).toBeGreaterThan(0);
    expect(readFileSync(underlay).indexOf(marker)).toBe(-1);
    const lines = (await ns('h2').exec('tcpdump', ['-r', underlay, '-nn'])).trim().split('\n').filter(Boolean);
    expect(lines.length, lines.join('\n')).toBeGreaterThanOrEqual(20);
    const notWireguard = lines.filter((l) => !/ IP6? \S+\.5182[01] > \S+\.5182[01]: UDP, length \d+$/.test(l));
    expect(notWireguard).toEqual([]);
  });

  it('fails /healthz while a killed wireguard-go is down, restarts it, and carries traffic again', async () => {
    const [victim] = wireguardGoPids('h2');
    expect(victim).toBeDefined();
    process.kill(victim as number, 'SIGKILL');
    await waitFor('h2 /healthz to name the device', async () => {
      const r = await health('h2');
      return r.status === 503 && r.body.includes('down: wireguard-go for flannel-wg') ? r : undefined;
    }, 5000, 50);
    await waitFor('h2 /healthz back to 200', async () => ((await health('h2')).status === 200 ? true : undefined), 15_000, 200);
    expect(wireguardGoPids('h2')).toHaveLength(2);
    await waitFor('h1 -> h2 pod again', async () => ((await ping(pod('h1').ns, pod('h2').ip, { count: 1 })).ok ? true : undefined), 15_000, 200);
    expect(pairs(await pingMatrix(cluster.pods, { count: 2, waitSec: 2 }))).toEqual([]);
  });

  it('picks up a peer whose key file was deleted: its new key replaces the old on every other host', async () => {
    const before = await publishedKey('h3');
    await cluster.stopDaemon('h3');
    rmSync(keyFile('h3'));
    await cluster.startDaemon('h3');
    const after = await publishedKey('h3');
    expect(after).not.toBe(before);
    for (const h of ['h1', 'h2']) {
      await waitFor(`${h} to know h3's new key`, async () => {
        const keys = (await device(h, 'flannel-wg')).peers.map((p) => p.publicKey);
        return keys.includes(after) && !keys.includes(before) ? true : undefined;
      }, 10_000, 100);
    }
    await waitFor('pods reach h3 again', async () => ((await ping(pod('h1').ns, pod('h3').ip, { count: 1 })).ok ? true : undefined), 10_000, 200);
    expect(pairs(await pingMatrix(cluster.pods, { count: 2, waitSec: 2 }))).toEqual([]);
  });

  it('leaves no WireGuard peer behind for a node whose lease is gone', async () => {
    const gone = await publishedKey('h3');
    const v6 = cluster.subnetsOf('h3')[1];
    const key = await leaseKey('h3');
    await cluster.stopDaemon('h3');
    await cluster.etcdctl('del', key);
    for (const h of ['h1', 'h2']) {
      await waitFor(`${h} to drop h3's peers`, async () => {
        const v4Keys = (await device(h, 'flannel-wg')).peers.map((p) => p.publicKey);
        const v6Nets = (await device(h, 'flannel-wg-v6')).peers.flatMap((p) => p.allowedIps.map(formatCidr));
        return !v4Keys.includes(gone) && !v6Nets.includes(v6 as string) ? true : undefined;
      }, 10_000, 100);
      expect((await device(h, 'flannel-wg')).peers).toHaveLength(1);
    }
  });
});
