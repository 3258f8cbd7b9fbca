/**
 * A BIRD 2 router's configuration and what its `birdc` prints, parsed: shared by the lab's `up --bgp` router and the
 * tests' (test/helpers/bgp-router.ts), so both run the same configuration and read routes the same way.
 */
import { join } from 'node:path';
import { sh } from './netns.js';
import { ROUTER_IP, ROUTER_IP6 } from './underlay-addresses.js';

export interface RouterNeighbor {
  /** The node's address on br0, IPv4 or IPv6; the router speaks from its own address of that family. */
  readonly address: string;
  /** The same as the router's localAs for iBGP. */
  readonly remoteAs: number;
  /** TCP-MD5 (RFC 2385) key. */
  readonly password?: string;
  /** eBGP across this many hops instead of a directly connected neighbor. */
  readonly multihopTtl?: number;
  /** Wait for the node to connect instead of connecting too. */
  readonly passive?: boolean;
}

export interface BirdRouterOptions {
  readonly localAs: number;
  readonly routerId: string;
  readonly neighbors: readonly RouterNeighbor[];
  /**
   * The router as graceful-restart (RFC 4724) helper: it keeps a restarting peer's routes, as stale, for the restart
   * time the peer announced. `restartTimeSec` is the restart time the router announces for itself (and, for FRR, how
   * long it keeps stale paths once the peer is back). Without it the router drops them at once.
   */
  readonly gracefulRestart?: { readonly restartTimeSec: number };
}

export interface RouterRoute {
  readonly prefix: string;
  /** The next hop the route carries (the global one when an IPv6 route also has a link-local one). */
  readonly nextHop: string;
  /** The neighbor address the route came from. */
  readonly fromPeer: string;
  /** Kept from a restarting peer (graceful restart). */
  readonly stale?: boolean;
}

export interface RouterSession {
  readonly peer: string;
  /** The BGP state as both daemons name it: Idle, Connect, Active, OpenSent, OpenConfirm, Established. */
  readonly state: string;
  /** How long the session has been Established, in seconds with an "s" ("42s"), while it is. */
  readonly uptime?: string;
}

const BIRD = '/usr/sbin/bird';

/** Where a BIRD keeps its files: `bird.conf`, its control socket `bird.ctl` and `bird.pid`, all in `dir`. */
export const birdFiles = (dir: string): { conf: string; socket: string; pid: string } =>
  ({ conf: join(dir, 'bird.conf'), socket: join(dir, 'bird.ctl'), pid: join(dir, 'bird.pid') });

/** BIRD in the foreground (so its PID is the one tracked), with the files of `dir`. */
export function birdArgv(dir: string): string[] {
  const files = birdFiles(dir);
  return [BIRD, '-f', '-c', files.conf, '-s', files.socket, '-P', files.pid];
}

/** One birdc command against the daemon of `socket` (a Unix socket: reachable from any network namespace). */
export const birdcAt = (socket: string, ...command: string[]): Promise<string> => sh('birdc', ['-s', socket, ...command], undefined, 10_000);

/** The daemon answers on its socket and has read its configuration. */
export const birdAnswers = (socket: string): Promise<boolean> => birdcAt(socket, 'show', 'status').then((out) => out.includes('up and running'), () => false);

/** The BGP routes a BIRD holds, from the protocols of `peers`, stale ones marked. */
export async function birdRoutes(birdc: (...command: string[]) => Promise<string>, peers: ReadonlyMap<string, string>): Promise<RouterRoute[]> {
  const restarting = parseBirdRestarting(await birdc('show', 'protocols', 'all'));
  return parseBirdRoutes(await birdc('show', 'route', 'all'), peers, restarting);
}

/** The router's own address on br0 of the neighbor's family, which it speaks from. */
export const routerLocalAddress = (neighbor: RouterNeighbor): string => (neighbor.address.includes(':') ? ROUTER_IP6 : ROUTER_IP);

/** BIRD's protocol name for each neighbor (`n0`, `n1`, …) -> the neighbor's address, as the parsers below take it. */
export const birdPeers = (neighbors: readonly Pick<RouterNeighbor, 'address'>[]): Map<string, string> => new Map(neighbors.map((n, i) => [`n${i}`, n.address]));

/** The router: BGP routes into its own kernel table, nothing announced back, reconnects within a second or two. */
export function birdRouterConfig(opts: BirdRouterOptions): string {
  const gr = opts.gracefulRestart ? [`graceful restart aware;`, `graceful restart time ${opts.gracefulRestart.restartTimeSec};`] : ['graceful restart off;'];
  const neighbor = (n: RouterNeighbor, i: number): string[] => [
    `protocol bgp n${i} {`,
    `  local ${routerLocalAddress(n)} as ${opts.localAs};`,
    `  neighbor ${n.address} as ${n.remoteAs};`,
    '  connect delay time 1;',
    '  connect retry time 1;',
    '  error wait time 1, 5;',
    ...(n.password !== undefined ? [`  password "${n.password}";`] : []),
    ...(n.multihopTtl !== undefined ? [`  multihop ${n.multihopTtl};`] : []),
    ...(n.passive ? ['  passive on;'] : []),
    ...gr.map((line) => `  ${line}`),
    '  ipv4 { import all; export none; };',
    '  ipv6 { import all; export none; };',
    '}',
  ];
  return [
    'log stderr { info, remote, warning, error, auth, fatal, bug };',
    `router id ${opts.routerId};`,
    // Epoch seconds, so sessions can tell how long a session has been up.
    'timeformat protocol "%s";',
    'protocol device { }',
    // Connected networks in the tables resolve iBGP's (recursive) next hops; the kernel gets only BGP's routes.
    'protocol direct { ipv4; ipv6; }',
    'protocol kernel k4 { ipv4 { import none; export where source = RTS_BGP; }; }',
    'protocol kernel k6 { ipv6 { import none; export where source = RTS_BGP; }; }',
    ...opts.neighbors.flatMap(neighbor),
    '',
  ].join('\n');
}

/**
 * `show route all`: a route's first line names the prefix (blank for a further path to the same one), its
 * protocol in brackets and its preference; BGP.next_hop follows on an attribute line. Only routes of the protocols
 * in `peers` (protocol name -> neighbor address) are kept. BIRD marks no route kept through a graceful restart, so
 * every route of a protocol in `restarting` counts as stale, as do long-lived stale ones (an "s" in `(100s)`).
 */
export function parseBirdRoutes(text: string, peers: ReadonlyMap<string, string>, restarting: ReadonlySet<string> = new Set()): RouterRoute[] {
  const routes: RouterRoute[] = [];
  let prefix = '';
  let current: { prefix: string; fromPeer: string; stale: boolean; nextHop: string } | undefined;
  const flush = (): void => {
    if (current) routes.push({ prefix: current.prefix, nextHop: current.nextHop, fromPeer: current.fromPeer, ...(current.stale ? { stale: true } : {}) });
    current = undefined;
  };
  for (const line of text.split('\n')) {
    const head = /^(\S*)\s+\w+ \[(\S+) [^\]]*\][ *!]*\((\d+)-?(s?)/.exec(line);
    if (head) {
      flush();
      prefix = head[1] || prefix;
      const peer = peers.get(head[2]!);
      if (peer !== undefined) current = { prefix, fromPeer: peer, stale: head[4] === 's' || restarting.has(head[2]!), nextHop: '' };
      continue;
    }
    const nextHop = /^\s+BGP\.next_hop: (\S+)/.exec(line);
    if (nextHop && current) current.nextHop = nextHop[1]!;
  }
  flush();
  return routes;
}

/**
 * `show protocols all`: the protocols whose neighbor is in graceful restart, from the session's loss until its
 * End-of-RIB after the reconnect, which is while BIRD keeps its routes stale.
 */
export function parseBirdRestarting(text: string): Set<string> {
  const restarting = new Set<string>();
  let name = '';
  for (const line of text.split('\n')) {
    const head = /^(\S+)\s+BGP\s/.exec(line);
    if (head) name = head[1]!;
    else if (/^\s+Neighbor graceful restart active/.test(line)) restarting.add(name);
  }
  return restarting;
}

/** `show protocols` with epoch-second times: name, protocol, table, state, since, then the BGP state. */
export function parseBirdProtocols(text: string, peers: ReadonlyMap<string, string>, nowSec: number): RouterSession[] {
  const sessions: RouterSession[] = [];
  for (const line of text.split('\n')) {
    const [name, proto, , , since, state] = line.trim().split(/\s+/);
    const peer = name === undefined ? undefined : peers.get(name);
    if (peer === undefined || proto !== 'BGP' || state === undefined) continue;
    const up = state === 'Established' && Number(since) > 0 ? { uptime: seconds(nowSec - Number(since)) } : {};
    sessions.push({ peer, state, ...up });
  }
  return sessions;
}

/** Whole seconds with an "s", never negative: how both routers' session uptimes read. */
export function seconds(sec: number): string {
  return `${Math.max(0, Math.round(sec))}s`;
}
