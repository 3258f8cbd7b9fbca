/**
 * A running flannel-ts cluster for real tests and benchmarks: the namespace topology, etcd on the hub, one real
 * flanneld per host, and a pod per host made with iproute2 in that host's subnet. Every process is tracked by PID
 * and every namespace belongs to the caller's NetnsRun, so `stop()` (or the stale cleanup) removes it all.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EtcdServer } from './etcd-server.js';
import { startFlanneld, startUpstreamFlanneld } from './flanneld-process.js';
import type { NetnsRun } from './netns.js';
import { waitFor, type TrackedProcess } from './processes.js';
import { containsNet, formatCidr, parseCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import { addPod, buildTopology, startEtcdOnHub, type Host, type Pod, type Topology, type UnderlayStack } from './topology.js';

export interface ClusterOptions {
  readonly hosts: number;
  readonly routedHosts?: number;
  /** Underlay address families (default 'v4'); the overlay's come from `config`. */
  readonly stack?: UnderlayStack;
  /** The network config written to etcd. */
  readonly config: object;
  readonly flanneldArgs?: readonly string[];
  /** Make one pod per host once the daemons are up (default true). */
  readonly pods?: boolean;
  /**
   * Hosts that run upstream flannel's flanneld (tools/build.sh flannel) instead of ours, with the same etcd, subnet
   * file and interface arguments; `flanneldArgs` go to ours only, `upstreamArgs` to upstream's.
   */
  readonly upstream?: readonly string[];
  readonly upstreamArgs?: readonly string[];
  /** Hosts whose routes to the others are not waited for at start (upstream's IPv6-only etcd mode routes nothing). */
  readonly unroutedHosts?: readonly string[];
}

export interface Cluster {
  readonly topology: Topology;
  readonly etcd: EtcdServer;
  readonly pods: Pod[];
  readonly dir: string;
  etcdctl(...args: string[]): Promise<string>;
  /** The host's first leased subnet (IPv4, or IPv6 when IPv6-only). */
  subnetOf(host: string): string;
  /** Every subnet the host leased, IPv4 first. */
  subnetsOf(host: string): string[];
  daemon(host: string): TrackedProcess;
  /**
   * Starts (or restarts after stopDaemon) the host's flanneld and waits for its subnet.env. `daemon` picks ours or
   * upstream's (default: as `upstream` said at start); `keepSubnetFile` leaves the previous subnet.env in place, as
   * an in-place migration does, and then waits for it to be rewritten; `extraArgs` follow `flanneldArgs` (ours only).
   */
  startDaemon(host: string, opts?: { readonly daemon?: 'ours' | 'upstream'; readonly keepSubnetFile?: boolean; readonly extraArgs?: readonly string[] }): Promise<void>;
  stopDaemon(host: string, signal?: NodeJS.Signals): Promise<number | string>;
  stop(): Promise<void>;
}

/** The subnets among `subnets` that `host` has no route for other than a default one. */
async function unroutedPeerSubnets(host: Host, subnets: readonly string[]): Promise<string[]> {
  const routes = (await Promise.all(['-4', '-6'].map((family) => host.ns.ip(family, '-o', 'route', 'show'))))
    .join('\n')
    .split('\n')
    .map((line) => parseCidr(line.split(' ')[0] ?? ''))
    .filter((net) => net !== undefined && net.prefixLen > 0) as IpNet[];
  return subnets.filter((s) => {
    const net = parseCidr(s);
    return net !== undefined && !routes.some((r) => containsNet(r, net));
  });
}

export async function startCluster(run: NetnsRun, opts: ClusterOptions): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-cluster-'));
  const topology = await buildTopology(run, {
    hosts: opts.hosts,
    ...(opts.routedHosts ? { routedHosts: opts.routedHosts } : {}),
    ...(opts.stack ? { stack: opts.stack } : {}),
  });
  const etcd = await startEtcdOnHub(topology);
  const daemons = new Map<string, TrackedProcess>();
  const envFile = (host: string): string => join(dir, `${host}.env`);
  const etcdctl = (...args: string[]): Promise<string> => topology.hub.exec('etcdctl', [`--endpoints=${etcd.endpoint}`, ...args]);
  await etcdctl('put', '/coreos.com/network/config', JSON.stringify(opts.config));

  // subnet.env holds each subnet's first address (10.244.3.1/24); the pods want the network (10.244.3.0/24).
  const readSubnets = (host: string): string[] => {
    let text: string;
    try {
      text = readFileSync(envFile(host), 'utf8');
    } catch {
      return [];
    }
    return [...text.matchAll(/^FLANNEL_(?:IPV6_)?SUBNET=(\S+)$/gm)].map((m) => parseCidr(m[1]!)).filter((n) => n !== undefined).map(formatCidr);
  };
  const readSubnet = (host: string): string | undefined => readSubnets(host)[0];
  const startDaemon: Cluster['startDaemon'] = async (host, how = {}) => {
    const before = existsSync(envFile(host)) ? statSync(envFile(host)).mtimeMs : 0;
    if (!how.keepSubnetFile) rmSync(envFile(host), { force: true });
    const h: Host = topology.host(host);
    const common = [`--etcd-endpoints=${etcd.endpoint}`, `--subnet-file=${envFile(host)}`, '--iface=eth0'];
    const upstream = (how.daemon ?? (opts.upstream?.includes(host) ? 'upstream' : 'ours')) === 'upstream';
    const proc = upstream
      ? startUpstreamFlanneld(h.ns.name, [...common, ...(opts.upstreamArgs ?? [])])
      : startFlanneld(h.ns.name, [...common, ...(opts.flanneldArgs ?? []), ...(how.extraArgs ?? [])], { WIREGUARD_KEY_FILE: join(dir, `${host}.wgkey`) });
    daemons.set(host, proc);
    try {
      await waitFor(`${host} subnet.env`, () => {
        if (proc.child.exitCode !== null) throw new Error(`flanneld on ${host} exited`);
        if (how.keepSubnetFile && (!existsSync(envFile(host)) || statSync(envFile(host)).mtimeMs <= before)) return undefined;
        return readSubnet(host);
      }, 30_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}; flanneld output:\n${proc.output().slice(-3000)}`);
    }
  };

  await Promise.all(topology.hosts.map((h) => startDaemon(h.name)));
  // subnet.env says a daemon has its own lease, not that it has heard of the others' yet: a caller that pings
  // straight away would race the lease watch, so the cluster is handed over once every host routes every peer.
  let unrouted: string[] = [];
  await waitFor('every host routing every other host\'s subnets', async () => {
    const routing = topology.hosts.filter((h) => !opts.unroutedHosts?.includes(h.name));
    const pending = await Promise.all(routing.map(async (h) => (await unroutedPeerSubnets(h, topology.hosts.filter((o) => o !== h).flatMap((o) => readSubnets(o.name)))).map((s) => `${h.name} -> ${s}`)));
    unrouted = pending.flat();
    return unrouted.length === 0 ? true : undefined;
  }, 20_000, 100).catch((err: unknown) => {
    throw new Error(`${(err as Error).message} (no route: ${unrouted.join(', ')}); flanneld output:\n${[...daemons.values()].map((d) => d.output().slice(-1500)).join('\n---\n')}`);
  });
  const pods: Pod[] = [];
  if (opts.pods ?? true) {
    for (const h of topology.hosts) pods.push(await addPod(h, 'p1', readSubnets(h.name), 1));
  }
  return {
    topology,
    etcd,
    pods,
    dir,
    etcdctl,
    subnetOf: (host) => {
      const s = readSubnet(host);
      if (!s) throw new Error(`${host} has no subnet.env`);
      return s;
    },
    subnetsOf: readSubnets,
    daemon: (host) => {
      const d = daemons.get(host);
      if (!d) throw new Error(`no flanneld on ${host}`);
      return d;
    },
    startDaemon,
    stopDaemon: async (host, signal = 'SIGTERM') => (await daemons.get(host)?.stop(signal)) ?? 'not running',
    async stop() {
      for (const d of daemons.values()) await d.stop('SIGTERM', 3000);
      await etcd.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
