/**
 * A multi-host underlay for overlay tests and benchmarks, built only from namespaces of the caller's NetnsRun (so
 * its cleanup and the stale sweep remove all of it; the root namespace is never touched). A hub namespace bridges
 * the 192.0.2.0/24 segment on br0 (hub 192.0.2.254, where etcd can listen); optional "routed" hosts sit on
 * 198.51.100.0/24 behind the hub acting as router, for "not directly connected" cases. Pods hang off cni0 per host.
 */
import { startEtcd, type EtcdServer } from './etcd-server.js';
import { sh, type Netns, type NetnsRun } from './netns.js';

export const HUB_IP = '192.0.2.254';
export const ROUTED_HUB_IP = '198.51.100.254';
export const HUB_ETCD_ENDPOINT = `http://${HUB_IP}:2379`;

interface Segment {
  readonly bridge: string;
  readonly prefix: string;
  readonly gateway: string;
}
const PRIMARY: Segment = { bridge: 'br0', prefix: '192.0.2.', gateway: HUB_IP };
const ROUTED: Segment = { bridge: 'br1', prefix: '198.51.100.', gateway: ROUTED_HUB_IP };

export interface TopologyOptions {
  /** Hosts h1..hN on 192.0.2.0/24 at 192.0.2.<i>. */
  readonly hosts: number;
  /** Further hosts h(N+1)..h(N+M) at 198.51.100.<i>, reachable from 192.0.2.0/24 only through the hub router. */
  readonly routedHosts?: number;
  /** MTU of every underlay link (default 1500). */
  readonly mtu?: number;
}

export interface Host {
  readonly ns: Netns;
  /** Short name: h1, h2, … */
  readonly name: string;
  /** Underlay address on eth0. */
  readonly ip: string;
  /** The segment eth0 is on: 192.0.2.0/24, or 198.51.100.0/24 for routed hosts. */
  readonly underlay: string;
  /** Next hop of the default route: the hub's address on that segment. */
  readonly gateway: string;
  /** The run that owns `ns`; addPod creates pod namespaces in it. */
  readonly run: NetnsRun;
}

export interface Topology {
  readonly hub: Netns;
  readonly hosts: readonly Host[];
  /** Where startEtcdOnHub serves clients, reachable from every host. */
  readonly etcdEndpoint: string;
  /** The host with this short name; throws if there is none. */
  host(name: string): Host;
}

export interface Pod {
  readonly ns: Netns;
  readonly name: string;
  readonly ip: string;
  /** The host's cni0 address, the pod's default route. */
  readonly gateway: string;
  readonly host: Host;
}

export async function buildTopology(run: NetnsRun, opts: TopologyOptions): Promise<Topology> {
  const routed = opts.routedHosts ?? 0;
  const mtu = String(opts.mtu ?? 1500);
  if (!Number.isInteger(opts.hosts) || !Number.isInteger(routed) || opts.hosts < 1 || routed < 0 || opts.hosts + routed > 250) {
    throw new Error(`buildTopology: need 1 or more hosts and at most 250 in all (hosts ${opts.hosts}, routedHosts ${routed})`);
  }
  const hub = await run.create('hub');
  for (const seg of routed > 0 ? [PRIMARY, ROUTED] : [PRIMARY]) {
    await hub.ip('link', 'add', seg.bridge, 'mtu', mtu, 'type', 'bridge');
    await hub.ip('addr', 'add', `${seg.gateway}/24`, 'dev', seg.bridge);
    await hub.ip('link', 'set', seg.bridge, 'up');
  }
  await hub.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);

  const addHost = async (i: number): Promise<Host> => {
    const seg = i <= opts.hosts ? PRIMARY : ROUTED;
    const name = `h${i}`;
    const ip = `${seg.prefix}${i}`;
    const ns = await run.create(name);
    const hubSide = `v${name}`;
    await hub.ip('link', 'add', hubSide, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', ns.name);
    await hub.ip('link', 'set', hubSide, 'master', seg.bridge, 'up');
    await ns.ip('addr', 'add', `${ip}/24`, 'dev', 'eth0');
    await ns.ip('link', 'set', 'eth0', 'up');
    await ns.ip('route', 'add', 'default', 'via', seg.gateway);
    await ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    return { ns, name, ip, underlay: `${seg.prefix}0/24`, gateway: seg.gateway, run };
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
    etcdEndpoint: HUB_ETCD_ENDPOINT,
    host(name) {
      const found = hosts.find((h) => h.name === name);
      if (!found) throw new Error(`topology has no host ${name} (hosts: ${hosts.map((h) => h.name).join(', ')})`);
      return found;
    },
  };
}

/** etcd inside the hub, serving clients on HUB_ETCD_ENDPOINT so hosts on both segments reach it. */
export function startEtcdOnHub(topology: Topology): Promise<EtcdServer> {
  return startEtcd({ netns: topology.hub.name, listenHost: HUB_IP, clientPort: 2379 });
}

export interface PodOptions {
  /** MTU of the pod's veth pair (default 1500), e.g. the overlay's FLANNEL_MTU. */
  readonly mtu?: number;
}

/**
 * A pod namespace on `host`: eth0 at the `index`-th host address after the gateway (index 1 → .2) of `podCidr`
 * (inside 10.244.0.0/16), its peer `veth<index>` on the host's cni0 bridge, which gets the CIDR's first address.
 */
export async function addPod(host: Host, podName: string, podCidr: string, index: number, opts: PodOptions = {}): Promise<Pod> {
  const net = parsePodCidr(podCidr);
  const size = 2 ** (32 - net.prefixLen);
  if (!/^[a-z0-9]{1,12}$/.test(podName) || !Number.isInteger(index) || index < 1 || index + 1 >= size - 1) {
    throw new Error(`addPod ${podName} #${index} in ${podCidr}: need a name [a-z0-9]{1,12} and 1 <= index <= ${size - 3}`);
  }
  const gateway = formatV4(net.base + 1);
  const ip = formatV4(net.base + index + 1);
  await ensureCni0(host, `${gateway}/${net.prefixLen}`);
  const ns = await host.run.create(`${host.name}-${podName}`);
  const mtu = String(opts.mtu ?? 1500);
  const hostSide = `veth${index}`;
  await host.ns.ip('link', 'add', hostSide, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', ns.name);
  await host.ns.ip('link', 'set', hostSide, 'master', 'cni0', 'up');
  await ns.ip('addr', 'add', `${ip}/${net.prefixLen}`, 'dev', 'eth0');
  await ns.ip('link', 'set', 'eth0', 'up');
  await ns.ip('route', 'add', 'default', 'via', gateway);
  return { ns, name: podName, ip, gateway, host };
}

/** Creates cni0 with `address` on first use; tolerates a concurrent creator; refuses a second pod subnet. */
async function ensureCni0(host: Host, address: string): Promise<void> {
  let current = await ipv4Addresses(host.ns, 'cni0');
  if (current === undefined) {
    await host.ns.ip('link', 'add', 'cni0', 'type', 'bridge').catch(async (err: unknown) => {
      if ((await ipv4Addresses(host.ns, 'cni0')) === undefined) throw err;
    });
    current = (await ipv4Addresses(host.ns, 'cni0')) ?? [];
  }
  const others = current.filter((a) => a !== address);
  if (others.length > 0) throw new Error(`cni0 on ${host.name} already has ${others.join(', ')}, not ${address}`);
  if (current.length === 0) await host.ns.ip('addr', 'replace', address, 'dev', 'cni0');
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

/** IPv4 `addr/len` on `dev`, or undefined if the device does not exist. */
async function ipv4Addresses(ns: Netns, dev: string): Promise<string[] | undefined> {
  const link = (await ipJson(ns, 'addr', 'show')).find((l) => l['ifname'] === dev);
  if (!link) return undefined;
  const infos = Array.isArray(link['addr_info']) ? link['addr_info'].filter(isRecord) : [];
  return infos.filter((a) => a['family'] === 'inet').map((a) => `${String(a['local'])}/${String(a['prefixlen'])}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A pod CIDR inside 10.244.0.0/16 (the only pod range these tests may use), prefix 16..30, aligned. */
function parsePodCidr(text: string): { base: number; prefixLen: number } {
  const m = /^10\.244\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text);
  const c = Number(m?.[1]);
  const d = Number(m?.[2]);
  const prefixLen = Number(m?.[3]);
  const base = (10 * 2 ** 24 + 244 * 2 ** 16 + c * 256 + d) >>> 0;
  const aligned = prefixLen >= 16 && prefixLen <= 30 && base % 2 ** (32 - prefixLen) === 0;
  if (!m || c > 255 || d > 255 || !aligned) throw new Error(`pod CIDR ${text}: need an aligned /16../30 inside 10.244.0.0/16`);
  return { base, prefixLen };
}

function formatV4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
