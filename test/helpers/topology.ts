/**
 * A multi-host underlay for overlay tests and benchmarks, built only from namespaces of the caller's NetnsRun (so
 * its cleanup and the stale sweep remove all of it; the root namespace is never touched). A hub namespace bridges
 * the 192.0.2.0/24 segment on br0 (hub 192.0.2.254, where etcd can listen); optional "routed" hosts sit on
 * 198.51.100.0/24 behind the hub acting as router, for "not directly connected" cases. Pods hang off cni0 per host.
 * With `stack: 'dual'` every segment also carries IPv6 from 2001:db8::/32 (br0 2001:db8:2::/64, br1
 * 2001:db8:51::/64, hub ::fe); with `stack: 'v6'` hosts have only the IPv6 underlay. Links we make for IPv6 skip
 * duplicate address detection: until a link's link-local address leaves DAD the kernel sends no neighbour
 * solicitation for forwarded packets (ndisc_send_ns wants a usable link-local source), so a fresh cni0 would
 * black-hole the first second of IPv6 traffic to its pods.
 */
import { formatIp, ipAddress } from '../../flanneld/ip/address.js';
import { containsNet, formatCidr, parseCidr } from '../../flanneld/ip/cidr.js';
import { startEtcd, type EtcdServer } from './etcd-server.js';
import { forwardAll, skipDad } from '../../lab/netns.js';
import { HUB_IP, HUB_IP6 } from '../../lab/underlay-addresses.js';
import { sh, type Netns, type NetnsRun } from './netns.js';

export { forwardAll, HUB_IP, HUB_IP6, skipDad };

export const ROUTED_HUB_IP = '198.51.100.254';
export const HUB_ETCD_ENDPOINT = `http://${HUB_IP}:2379`;
export const ROUTED_HUB_IP6 = '2001:db8:51::fe';
export const HUB_ETCD_ENDPOINT6 = `http://[${HUB_IP6}]:2379`;

/** Which address families the underlay carries. */
export type UnderlayStack = 'v4' | 'dual' | 'v6';

interface Segment {
  readonly bridge: string;
  readonly prefix: string;
  readonly gateway: string;
  readonly prefix6: string;
  readonly gateway6: string;
}
const PRIMARY: Segment = { bridge: 'br0', prefix: '192.0.2.', gateway: HUB_IP, prefix6: '2001:db8:2::', gateway6: HUB_IP6 };
const ROUTED: Segment = { bridge: 'br1', prefix: '198.51.100.', gateway: ROUTED_HUB_IP, prefix6: '2001:db8:51::', gateway6: ROUTED_HUB_IP6 };

export interface TopologyOptions {
  /** Hosts h1..hN on 192.0.2.0/24 at 192.0.2.<i>. */
  readonly hosts: number;
  /** Further hosts h(N+1)..h(N+M) at 198.51.100.<i>, reachable from 192.0.2.0/24 only through the hub router. */
  readonly routedHosts?: number;
  /** MTU of every underlay link (default 1500). */
  readonly mtu?: number;
  /** Address families of the host underlay (default 'v4'). The hub always keeps its IPv4 addresses. */
  readonly stack?: UnderlayStack;
}

export interface Host {
  readonly ns: Netns;
  /** Short name: h1, h2, … */
  readonly name: string;
  /** Underlay address on eth0: IPv4, or IPv6 on a 'v6' underlay. */
  readonly ip: string;
  /** IPv6 underlay address on eth0 ('dual' and 'v6' underlays). */
  readonly ip6?: string;
  /** The segment eth0 is on: 192.0.2.0/24, or 198.51.100.0/24 for routed hosts (their /64 on a 'v6' underlay). */
  readonly underlay: string;
  /** Next hop of the default route: the hub's address on that segment (of ip's family). */
  readonly gateway: string;
  /** The run that owns `ns`; addPod creates pod namespaces in it. */
  readonly run: NetnsRun;
}

export interface Topology {
  readonly hub: Netns;
  readonly hosts: readonly Host[];
  /** Where startEtcdOnHub serves clients, reachable from every host. */
  readonly etcdEndpoint: string;
  readonly stack: UnderlayStack;
  /** The host with this short name; throws if there is none. */
  host(name: string): Host;
}

export interface Pod {
  readonly ns: Netns;
  readonly name: string;
  /** The pod's address from its first CIDR. */
  readonly ip: string;
  /** The host's cni0 address, the pod's default route. */
  readonly gateway: string;
  /** The pod's IPv6 address, when it was given an IPv6 CIDR. */
  readonly ip6?: string;
  readonly gateway6?: string;
  readonly host: Host;
}

export async function buildTopology(run: NetnsRun, opts: TopologyOptions): Promise<Topology> {
  const routed = opts.routedHosts ?? 0;
  const mtu = String(opts.mtu ?? 1500);
  const stack = opts.stack ?? 'v4';
  if (!Number.isInteger(opts.hosts) || !Number.isInteger(routed) || opts.hosts < 1 || routed < 0 || opts.hosts + routed > 250) {
    throw new Error(`buildTopology: need 1 or more hosts and at most 250 in all (hosts ${opts.hosts}, routedHosts ${routed})`);
  }
  const hub = await run.create('hub');
  for (const seg of routed > 0 ? [PRIMARY, ROUTED] : [PRIMARY]) {
    await hub.ip('link', 'add', seg.bridge, 'mtu', mtu, 'type', 'bridge');
    await hub.ip('addr', 'add', `${seg.gateway}/24`, 'dev', seg.bridge);
    if (stack !== 'v4') {
      await skipDad(hub, seg.bridge);
      await hub.ip('addr', 'add', `${seg.gateway6}/64`, 'dev', seg.bridge, 'nodad');
    }
    await hub.ip('link', 'set', seg.bridge, 'up');
  }
  await forwardAll(hub);

  const addHost = async (i: number): Promise<Host> => {
    const seg = i <= opts.hosts ? PRIMARY : ROUTED;
    const name = `h${i}`;
    const ip4 = `${seg.prefix}${i}`;
    const ip6 = `${seg.prefix6}${i.toString(16)}`;
    const ns = await run.create(name);
    const hubSide = `v${name}`;
    await hub.ip('link', 'add', hubSide, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', ns.name);
    await hub.ip('link', 'set', hubSide, 'master', seg.bridge, 'up');
    if (stack !== 'v6') await ns.ip('addr', 'add', `${ip4}/24`, 'dev', 'eth0');
    if (stack !== 'v4') {
      await skipDad(ns, 'eth0');
      await ns.ip('addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad');
    }
    await ns.ip('link', 'set', 'eth0', 'up');
    if (stack !== 'v6') await ns.ip('route', 'add', 'default', 'via', seg.gateway);
    if (stack !== 'v4') await ns.ip('-6', 'route', 'add', 'default', 'via', seg.gateway6);
    await forwardAll(ns);
    const v6Only = stack === 'v6';
    return {
      ns,
      name,
      ip: v6Only ? ip6 : ip4,
      ...(stack !== 'v4' ? { ip6 } : {}),
      underlay: v6Only ? `${seg.prefix6}/64` : `${seg.prefix}0/24`,
      gateway: v6Only ? seg.gateway6 : seg.gateway,
      run,
    };
  };
  // allSettled, not all: every creation has finished (and is registered with the run) before we report a failure.
  const settled = await Promise.allSettled(Array.from({ length: opts.hosts + routed }, (_, k) => addHost(k + 1)));
  const hosts: Host[] = [];
  for (const s of settled) {
    if (s.status === 'rejected') throw s.reason;
    hosts.push(s.value);
  }
  return {
    hub,
    hosts,
    etcdEndpoint: stack === 'v6' ? HUB_ETCD_ENDPOINT6 : HUB_ETCD_ENDPOINT,
    stack,
    host(name) {
      const found = hosts.find((h) => h.name === name);
      if (!found) throw new Error(`topology has no host ${name} (hosts: ${hosts.map((h) => h.name).join(', ')})`);
      return found;
    },
  };
}

/** etcd inside the hub, serving clients on the topology's etcdEndpoint so hosts on both segments reach it. */
export function startEtcdOnHub(topology: Topology): Promise<EtcdServer> {
  return startEtcd({ netns: topology.hub.name, listenHost: topology.stack === 'v6' ? `[${HUB_IP6}]` : HUB_IP, clientPort: 2379 });
}

export interface PodOptions {
  /** MTU of the pod's veth pair (default 1500), e.g. the overlay's FLANNEL_MTU. */
  readonly mtu?: number;
}

/**
 * A pod namespace on `host` with one address per CIDR (IPv4 inside 10.244.0.0/16, IPv6 inside 2001:db8::/32): eth0
 * gets the `index`-th host address after the gateway (index 1 → ::2 / .2), its peer `veth<index>` sits on the
 * host's cni0 bridge, which gets each CIDR's first address and is the pod's default route per family.
 */
export async function addPod(host: Host, podName: string, podCidrs: string | readonly string[], index: number, opts: PodOptions = {}): Promise<Pod> {
  const cidrs = (typeof podCidrs === 'string' ? [podCidrs] : podCidrs).map((c) => podAddresses(c, podName, index));
  if (cidrs.length === 0 || cidrs.length > 2 || (cidrs.length === 2 && cidrs[0]!.family === cidrs[1]!.family)) {
    throw new Error(`addPod ${podName}: need one pod CIDR or one per family, got ${String(podCidrs)}`);
  }
  await ensureCni0(host, cidrs.map((c) => `${c.gateway}/${c.prefixLen}`));
  const ns = await host.run.create(`${host.name}-${podName}`);
  const mtu = String(opts.mtu ?? 1500);
  const hostSide = `veth${index}`;
  await host.ns.ip('link', 'add', hostSide, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', ns.name);
  await host.ns.ip('link', 'set', hostSide, 'master', 'cni0', 'up');
  if (cidrs.some((c) => c.family === 6)) await skipDad(ns, 'eth0');
  for (const c of cidrs) await ns.ip('addr', 'add', `${c.ip}/${c.prefixLen}`, 'dev', 'eth0', ...(c.family === 6 ? ['nodad'] : []));
  await ns.ip('link', 'set', 'eth0', 'up');
  for (const c of cidrs) await ns.ip(`-${c.family}`, 'route', 'add', 'default', 'via', c.gateway);
  const first = cidrs[0]!;
  const v6 = cidrs.find((c) => c.family === 6);
  return { ns, name: podName, ip: first.ip, gateway: first.gateway, ...(v6 ? { ip6: v6.ip, gateway6: v6.gateway } : {}), host };
}

interface PodAddress {
  readonly family: 4 | 6;
  readonly ip: string;
  readonly gateway: string;
  readonly prefixLen: number;
}

/** The gateway and the pod's address in `cidr`; only ranges these tests may use, aligned, with room for `index`. */
function podAddresses(cidr: string, podName: string, index: number): PodAddress {
  const net = parseCidr(cidr);
  const allowed = net?.family === 4 ? { range: '10.244.0.0/16', minLen: 16, maxLen: 30 } : { range: '2001:db8::/32', minLen: 48, maxLen: 120 };
  const inside = net !== undefined && net.prefixLen >= allowed.minLen && net.prefixLen <= allowed.maxLen
    && containsNet(parseCidr(allowed.range)!, net) && formatCidr(net) === cidr;
  if (!net || !inside) throw new Error(`pod CIDR ${cidr}: need an aligned /16../30 inside 10.244.0.0/16 or /48../120 inside 2001:db8::/32`);
  const size = 1n << BigInt((net.family === 4 ? 32 : 128) - net.prefixLen);
  if (!/^[a-z0-9]{1,12}$/.test(podName) || !Number.isInteger(index) || index < 1 || BigInt(index) + 1n >= size - 1n) {
    throw new Error(`addPod ${podName} #${index} in ${cidr}: need a name [a-z0-9]{1,12} and 1 <= index <= ${size - 3n}`);
  }
  const at = (offset: number): string => formatIp(ipAddress(net.family, net.ip + BigInt(offset)));
  return { family: net.family, ip: at(index + 1), gateway: at(1), prefixLen: net.prefixLen };
}

/** Creates cni0 with `addresses` on first use; tolerates a concurrent creator; refuses a second pod subnet. */
async function ensureCni0(host: Host, addresses: readonly string[]): Promise<void> {
  let current = await globalAddresses(host.ns, 'cni0');
  if (current === undefined) {
    await host.ns.ip('link', 'add', 'cni0', 'type', 'bridge').catch(async (err: unknown) => {
      if ((await globalAddresses(host.ns, 'cni0')) === undefined) throw err;
    });
    current = (await globalAddresses(host.ns, 'cni0')) ?? [];
  }
  if (addresses.some((a) => a.includes(':'))) await skipDad(host.ns, 'cni0');
  const others = current.filter((a) => !addresses.includes(a));
  if (others.length > 0) throw new Error(`cni0 on ${host.name} already has ${others.join(', ')}, not ${addresses.join(', ')}`);
  for (const address of addresses) {
    if (!current.includes(address)) await host.ns.ip('addr', 'replace', address, 'dev', 'cni0', ...(address.includes(':') ? ['nodad'] : []));
  }
  await host.ns.ip('link', 'set', 'cni0', 'up');
}

export interface PingOptions {
  /** Echo requests to send (default 1, at most 100). */
  readonly count?: number;
  /** Seconds to wait for each reply (default 1). */
  readonly waitSec?: number;
  /** Seconds between requests (default 0.2). */
  readonly intervalSec?: number;
  /** ICMP payload bytes (ping's -s). */
  readonly size?: number;
  /** Set DF and never fragment locally (ping -M do), for MTU tests. */
  readonly dontFragment?: boolean;
  /** Payload fill, up to 16 bytes in hex (ping -p), for captures that look for the payload. */
  readonly pattern?: string;
}

export interface PingResult {
  readonly ok: boolean;
  readonly transmitted: number;
  readonly received: number;
  readonly output: string;
}

/** Pings `ip` from inside `from`; never throws for an unreachable target. Takes at most count*interval + wait. */
export async function ping(from: Netns, ip: string, opts: PingOptions = {}): Promise<PingResult> {
  const count = opts.count ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > 100) throw new Error(`ping count ${count}: need 1..100`);
  const args = ['-n', '-q', '-c', String(count), '-W', String(opts.waitSec ?? 1), '-i', String(opts.intervalSec ?? 0.2)];
  if (opts.size !== undefined) args.push('-s', String(opts.size));
  if (opts.dontFragment) args.push('-M', 'do');
  if (opts.pattern !== undefined) args.push('-p', opts.pattern);
  let ok = true;
  let output: string;
  try {
    output = await from.exec('ping', [...args, ip]);
  } catch (err) {
    ok = false;
    const stdout = err instanceof Error && isRecord(err.cause) && typeof err.cause['stdout'] === 'string' ? err.cause['stdout'] : '';
    output = `${stdout}${err instanceof Error ? err.message : String(err)}`;
  }
  const m = /(\d+) packets transmitted, (\d+) received/.exec(output);
  return { ok, transmitted: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0), output };
}

export interface Endpoint {
  readonly ns: Netns;
  readonly ip: string;
}

export interface PingFailure<T extends Endpoint> {
  readonly from: T;
  readonly to: T;
  readonly output: string;
}

export interface PingMatrixOptions extends PingOptions {
  /** Pings in flight at once (default 16). */
  readonly concurrency?: number;
}

/** Pings every ordered pair of distinct endpoints; returns the failed pairs in pair order (empty: full mesh). */
export async function pingMatrix<T extends Endpoint>(endpoints: readonly T[], opts: PingMatrixOptions = {}): Promise<PingFailure<T>[]> {
  const pairs = endpoints.flatMap((from) => endpoints.filter((to) => to !== from).map((to) => ({ from, to })));
  const results: (PingFailure<T> | undefined)[] = new Array<PingFailure<T> | undefined>(pairs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < pairs.length; i = next++) {
      const pair = pairs[i]!;
      const r = await ping(pair.from.ns, pair.to.ip, opts);
      results[i] = r.ok ? undefined : { ...pair, output: r.output };
    }
  };
  const workers = Math.max(1, Math.min(opts.concurrency ?? 16, pairs.length));
  await Promise.all(Array.from({ length: workers }, worker));
  return results.filter((r): r is PingFailure<T> => r !== undefined);
}

export interface LinkStats {
  readonly rxPackets: number;
  readonly txPackets: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly rxDropped: number;
  readonly txDropped: number;
}

/** The kernel's counters for `dev` in `ns`, or undefined if there is no such device. */
export async function linkStats(ns: Netns, dev: string): Promise<LinkStats | undefined> {
  const link = (await ipJson(ns, '-s', 'link', 'show')).find((l) => l['ifname'] === dev);
  if (!link) return undefined;
  const stats = isRecord(link['stats64']) ? link['stats64'] : {};
  const rx = isRecord(stats['rx']) ? stats['rx'] : {};
  const tx = isRecord(stats['tx']) ? stats['tx'] : {};
  const num = (v: unknown): number => (typeof v === 'number' ? v : 0);
  return {
    rxPackets: num(rx['packets']),
    txPackets: num(tx['packets']),
    rxBytes: num(rx['bytes']),
    txBytes: num(tx['bytes']),
    rxDropped: num(rx['dropped']),
    txDropped: num(tx['dropped']),
  };
}

/** `ip -j <args>` in `ns` (e.g. `route get 192.0.2.2`), as the records of its JSON array. */
export async function ipJson(ns: Netns, ...args: string[]): Promise<Record<string, unknown>[]> {
  const text = await sh('ip', ['-n', ns.name, '-j', ...args]);
  const parsed: unknown = JSON.parse(text.trim() === '' ? '[]' : text);
  return Array.isArray(parsed) ? parsed.filter(isRecord) : [];
}

/** IPv4 and global IPv6 `addr/len` on `dev`, or undefined if the device does not exist. */
async function globalAddresses(ns: Netns, dev: string): Promise<string[] | undefined> {
  const link = (await ipJson(ns, 'addr', 'show')).find((l) => l['ifname'] === dev);
  if (!link) return undefined;
  const infos = Array.isArray(link['addr_info']) ? link['addr_info'].filter(isRecord) : [];
  return infos.filter((a) => a['family'] === 'inet' || (a['family'] === 'inet6' && a['scope'] === 'global')).map((a) => `${String(a['local'])}/${String(a['prefixlen'])}`);
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
