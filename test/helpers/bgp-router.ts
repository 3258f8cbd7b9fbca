/**
 * Real BGP routers for tests: Debian's BIRD 2 or FRR in a namespace of the caller's NetnsRun, on the underlay's br0
 * (192.0.2.250, 2001:db8:2::fa) with an "office" namespace behind it (203.0.113.10, 2001:db8:3::10) whose only way to
 * the cluster is the router. The router learns what the nodes announce, installs it in its own kernel table (BIRD's
 * kernel protocol, FRR's zebra) and announces nothing back. Every daemon runs in the foreground, tracked by PID, with
 * its config, sockets and PID files in a temporary directory of its own; the run's cleanup or `stop()` ends it all.
 */
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh, type Netns, type NetnsRun } from './netns.js';
import { spawnTracked, waitFor, type TrackedProcess } from './processes.js';
import { forwardAll, HUB_IP6, ipJson, isRecord, skipDad } from './topology.js';

export const ROUTER_IP = '192.0.2.250';
export const ROUTER_IP6 = '2001:db8:2::fa';
export const OFFICE_NET = '203.0.113.0/24';
export const OFFICE_NET6 = '2001:db8:3::/64';
export const OFFICE_GATEWAY = '203.0.113.1';
export const OFFICE_GATEWAY6 = '2001:db8:3::1';
export const OFFICE_IP = '203.0.113.10';
export const OFFICE_IP6 = '2001:db8:3::10';

export type RouterKind = 'bird' | 'frr';

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

export interface RouterOptions {
  readonly kind: RouterKind;
  readonly localAs: number;
  readonly routerId: string;
  readonly neighbors: readonly RouterNeighbor[];
  /**
   * The router as graceful-restart (RFC 4724) helper: it keeps a restarting peer's routes, as stale, for the restart
   * time the peer announced. `restartTimeSec` is the restart time the router announces for itself and, for FRR, how
   * long it keeps stale paths once the peer is back (stalepath-time). Without it the router drops them at once.
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

export interface BgpRouter {
  readonly ns: Netns;
  readonly office: Netns;
  readonly kind: RouterKind;
  /** The router's own addresses on br0, which the nodes peer with: ROUTER_IP and ROUTER_IP6. */
  readonly address4: string;
  readonly address6: string;
  /** The BGP routes the router holds (both families), one per path. */
  routes(): Promise<RouterRoute[]>;
  sessions(): Promise<RouterSession[]>;
  /** Stops the daemons and starts them again with the same configuration (sessions drop and come back). */
  restart(): Promise<void>;
  /** Stops the daemons and removes the router's and the office's namespaces and the hub's routes to the office. */
  stop(): Promise<void>;
}

/** What each kind of daemon offers once started. */
interface RouterDaemon {
  routes(): Promise<RouterRoute[]>;
  sessions(): Promise<RouterSession[]>;
  stop(): Promise<void>;
}

/** One router per NetnsRun at a time: its namespaces' short names and its addresses are fixed. */
export async function startRouter(run: NetnsRun, hub: Netns, opts: RouterOptions): Promise<BgpRouter> {
  checkOptions(opts);
  const { ns, office } = await buildRouterSegments(run, hub);
  const hubRoutes = await routeOfficeThroughRouter(hub);
  let daemon: RouterDaemon | undefined;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await daemon?.stop();
    // The veth goes with the namespace only once the kernel gets round to it; a router started next needs its name.
    await hub.ip('link', 'del', HUB_SIDE).catch(() => undefined);
    for (const route of hubRoutes) await hub.ip(...route.del).catch(() => undefined);
    await run.remove(office);
    await run.remove(ns);
  };
  run.onCleanup(stop);
  const start = (): Promise<RouterDaemon> => (opts.kind === 'bird' ? startBirdRouter(ns, opts) : startFrrRouter(ns, opts));
  daemon = await start();
  const running = (): RouterDaemon => {
    if (!daemon || stopped) throw new Error(`the ${opts.kind} router is stopped`);
    return daemon;
  };
  return {
    ns,
    office,
    kind: opts.kind,
    address4: ROUTER_IP,
    address6: ROUTER_IP6,
    routes: () => running().routes(),
    sessions: () => running().sessions(),
    async restart() {
      await running().stop();
      daemon = undefined;
      daemon = await start();
    },
    stop,
  };
}

function checkOptions(opts: RouterOptions): void {
  const asn = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 4294967294;
  if (!asn(opts.localAs) || !/^\d+\.\d+\.\d+\.\d+$/.test(opts.routerId)) {
    throw new Error(`router: need an AS number and an IPv4 router id, got ${opts.localAs} and ${opts.routerId}`);
  }
  for (const n of opts.neighbors) {
    if (!asn(n.remoteAs) || !/^[0-9a-f.:]+$/i.test(n.address) || (n.password !== undefined && !/^[\w.-]{1,64}$/.test(n.password))) {
      throw new Error(`router neighbor ${JSON.stringify(n)}: need an address, an AS number and a password of [A-Za-z0-9_.-]`);
    }
  }
}

/** The hub's end of the router's link to br0. */
const HUB_SIDE = 'vrtr';
/**
 * Every router of a run has the same MAC on br0: the hub and the nodes keep the previous router's neighbor entry
 * for its address for up to a minute, and with a new MAC behind it they would black-hole what they send there.
 */
const ROUTER_MAC = '02:00:c0:00:02:fa';

/** The router on br0 and the office segment behind it; both namespaces forward nothing but the router's. */
async function buildRouterSegments(run: NetnsRun, hub: Netns): Promise<{ ns: Netns; office: Netns }> {
  const ns = await run.create('rtr');
  const office = await run.create('office');
  await pinBridgeAddress(hub, 'br0');
  await hub.ip('link', 'add', HUB_SIDE, 'type', 'veth', 'peer', 'name', 'eth0', 'address', ROUTER_MAC, 'netns', ns.name);
  await hub.ip('link', 'set', HUB_SIDE, 'master', 'br0', 'up');
  await ns.ip('link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', office.name);
  await addressLink(ns, 'eth0', `${ROUTER_IP}/24`, `${ROUTER_IP6}/64`);
  await addressLink(ns, 'eth1', `${OFFICE_GATEWAY}/24`, `${OFFICE_GATEWAY6}/64`);
  await addressLink(office, 'eth0', `${OFFICE_IP}/24`, `${OFFICE_IP6}/64`);
  await office.ip('route', 'add', 'default', 'via', OFFICE_GATEWAY);
  await office.ip('-6', 'route', 'add', 'default', 'via', OFFICE_GATEWAY6);
  await forwardAll(ns);
  return { ns, office };
}

/**
 * A bridge whose address was never set takes its lowest port's, so adding or removing the router's port could change
 * the hub's MAC under the nodes' neighbor entries for it (their default gateway) and black-hole their replies until
 * those expire. Setting the address it has now keeps it whatever ports come and go.
 */
async function pinBridgeAddress(hub: Netns, bridge: string): Promise<void> {
  const mac = (await ipJson(hub, 'link', 'show', 'dev', bridge))[0]?.['address'];
  if (typeof mac !== 'string') throw new Error(`no address on ${bridge} in ${hub.name}`);
  await hub.ip('link', 'set', bridge, 'address', mac);
}

/** Both families on `dev`, IPv6 without duplicate address detection (see topology.ts), then the link up. */
async function addressLink(ns: Netns, dev: string, v4: string, v6: string): Promise<void> {
  await skipDad(ns, dev);
  await ns.ip('addr', 'add', v4, 'dev', dev);
  await ns.ip('addr', 'add', v6, 'dev', dev, 'nodad');
  await ns.ip('link', 'set', dev, 'up');
}

/**
 * Pods answer the office through their host's default route, the hub, so the hub must send the office's segment to
 * the router (as a site's core router would); IPv6 only when the underlay carries it. Returns how to undo it.
 */
async function routeOfficeThroughRouter(hub: Netns): Promise<{ del: string[] }[]> {
  const routes = [{ add: ['route', 'replace', OFFICE_NET, 'via', ROUTER_IP], del: ['route', 'del', OFFICE_NET] }];
  const br0 = (await ipJson(hub, 'addr', 'show', 'dev', 'br0')).flatMap((link) => list(link['addr_info']).map(record));
  if (br0.some((a) => a['local'] === HUB_IP6)) {
    routes.push({ add: ['-6', 'route', 'replace', OFFICE_NET6, 'via', ROUTER_IP6], del: ['-6', 'route', 'del', OFFICE_NET6] });
  }
  for (const route of routes) await hub.ip(...route.add);
  return routes;
}

const isV6 = (address: string): boolean => address.includes(':');
const localAddress = (neighbor: RouterNeighbor): string => (isV6(neighbor.address) ? ROUTER_IP6 : ROUTER_IP);

// ---- BIRD ----

export interface BirdDaemon {
  readonly proc: TrackedProcess;
  /** Runs one birdc command against this daemon's socket; returns its output. */
  birdc(...command: string[]): Promise<string>;
  /** SIGTERM: BIRD closes its sessions with a Cease. SIGKILL: a crash, as a graceful-restart helper sees one. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
}

const BIRD = '/usr/sbin/bird';

/**
 * BIRD in the foreground in `ns` with `config`, its socket and PID file in a temporary directory; resolves once the
 * daemon answers on its socket. Also the tests' stand-in for a node's BGP speaker.
 */
export async function startBird(ns: Netns, config: string): Promise<BirdDaemon> {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-bird-'));
  const conf = join(dir, 'bird.conf');
  const socket = join(dir, 'bird.ctl');
  writeFileSync(conf, config);
  const proc = spawnTracked('ip', ['netns', 'exec', ns.name, BIRD, '-f', '-c', conf, '-s', socket, '-P', join(dir, 'bird.pid')], {}, conf);
  const birdc = (...command: string[]): Promise<string> => sh('birdc', ['-s', socket, ...command], undefined, 10_000);
  const stop = async (signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> => {
    await proc.stop(signal, 5000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await untilExit(proc, 'bird', waitFor('bird to answer on its socket', async () => ((await birdc('show', 'status')).includes('up and running') ? true : undefined), 10_000, 100));
  } catch (err) {
    await stop();
    throw err;
  }
  return { proc, birdc, stop };
}

async function startBirdRouter(ns: Netns, opts: RouterOptions): Promise<RouterDaemon> {
  const bird = await startBird(ns, birdRouterConfig(opts));
  const peers = new Map(opts.neighbors.map((n, i) => [`n${i}`, n.address]));
  return {
    routes: async () => {
      const restarting = parseBirdRestarting(await bird.birdc('show', 'protocols', 'all'));
      return parseBirdRoutes(await bird.birdc('show', 'route', 'all'), peers, restarting);
    },
    sessions: async () => parseBirdProtocols(await bird.birdc('show', 'protocols'), peers, Date.now() / 1000),
    stop: () => bird.stop(),
  };
}

/** The router: BGP routes into the kernel, nothing announced back, fast reconnects for tests. */
export function birdRouterConfig(opts: RouterOptions): string {
  const gr = opts.gracefulRestart ? [`graceful restart aware;`, `graceful restart time ${opts.gracefulRestart.restartTimeSec};`] : ['graceful restart off;'];
  const neighbor = (n: RouterNeighbor, i: number): string[] => [
    `protocol bgp n${i} {`,
    `  local ${localAddress(n)} as ${opts.localAs};`,
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
    // Epoch seconds, so sessions() can tell how long a session has been up.
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

// ---- FRR ----

const FRR_DIR = '/usr/lib/frr';

/**
 * FRR writes crash state under /var/tmp/frr and makes /var/run/frr even when every path it uses is given: its
 * daemons get private ones, in the mount namespace `ip netns exec` makes for them (nothing propagates back, and it
 * goes with the last process in it). sh execs the daemon in place, so the tracked PID is the daemon's own.
 */
const PRIVATE_FRR_STATE = [
  'mount -t tmpfs -o mode=0755 flannel-ts-frr /run',
  'mkdir /run/frr',
  'chown frr:frr /run/frr',
  'mount -t tmpfs -o mode=1777 flannel-ts-frr /var/tmp',
  'exec "$0" "$@"',
].join(' && ');

interface FrrDaemon {
  vtysh(command: string): Promise<unknown>;
  stop(): Promise<void>;
}

/** zebra, then bgpd talking to it, each in the foreground as user frr with every path in one temporary directory. */
async function startFrr(ns: Netns, bgpdConfig: string): Promise<FrrDaemon> {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-frr-'));
  writeFileSync(join(dir, 'zebra.conf'), 'frr defaults traditional\n');
  writeFileSync(join(dir, 'bgpd.conf'), bgpdConfig);
  // The daemons drop to user frr, which must reach and write their directory.
  chmodSync(dir, 0o750);
  await sh('chown', ['-R', 'frr:frr', dir]);
  const zserv = join(dir, 'zserv.api');
  const spawnDaemon = (name: string, args: readonly string[]): TrackedProcess => {
    const conf = join(dir, `${name}.conf`);
    const argv = [join(FRR_DIR, name), '-f', conf, '-i', join(dir, `${name}.pid`), '-z', zserv, '--vty_socket', dir, '-P', '0', '--log', 'stdout', ...args];
    return spawnTracked('ip', ['netns', 'exec', ns.name, 'sh', '-c', PRIVATE_FRR_STATE, ...argv], {}, conf);
  };
  const procs: TrackedProcess[] = [];
  const vtysh = async (command: string): Promise<unknown> => {
    const out = await sh('vtysh', ['--vty_socket', dir, '--config_dir', dir, '-H', '/dev/null', '-d', 'bgpd', '-c', command], undefined, 10_000);
    return JSON.parse(out) as unknown;
  };
  const stop = async (): Promise<void> => {
    // bgpd first, so it closes its sessions with a NOTIFICATION while zebra still has its routes.
    for (const proc of procs.reverse()) await proc.stop('SIGTERM', 5000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const zebra = spawnDaemon('zebra', []);
    procs.push(zebra);
    await untilExit(zebra, 'zebra', waitFor('zebra to make its socket', () => (statSync(zserv).isSocket() ? true : undefined), 10_000, 100));
    const bgpd = spawnDaemon('bgpd', []);
    procs.push(bgpd);
    await untilExit(bgpd, 'bgpd', waitFor('bgpd to answer vtysh', () => vtysh('show bgp summary json').then(() => true), 10_000, 100));
    const rejected = /.*(?:No such command|Unknown command|Error).*config line.*/i.exec(bgpd.output());
    if (rejected) throw new Error(`bgpd rejected its configuration: ${rejected[0]}\n${bgpdConfig}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { vtysh, stop };
}

async function startFrrRouter(ns: Netns, opts: RouterOptions): Promise<RouterDaemon> {
  const frr = await startFrr(ns, frrBgpdConfig(opts));
  return {
    routes: async () => [
      ...parseFrrRoutes(await frr.vtysh('show bgp ipv4 unicast json')),
      ...parseFrrRoutes(await frr.vtysh('show bgp ipv6 unicast json')),
    ],
    sessions: async () => parseFrrNeighbors(await frr.vtysh('show bgp neighbors json')),
    stop: frr.stop,
  };
}

/** The router: both families on every session, everything accepted (no eBGP policy needed), nothing announced. */
export function frrBgpdConfig(opts: RouterOptions): string {
  const gr = opts.gracefulRestart
    ? [` bgp graceful-restart restart-time ${opts.gracefulRestart.restartTimeSec}`, ` bgp graceful-restart stalepath-time ${opts.gracefulRestart.restartTimeSec}`]
    : [' bgp graceful-restart-disable'];
  const neighbor = (n: RouterNeighbor): string[] => [
    ` neighbor ${n.address} remote-as ${n.remoteAs}`,
    ` neighbor ${n.address} update-source ${localAddress(n)}`,
    ` neighbor ${n.address} timers connect 1`,
    ...(n.password !== undefined ? [` neighbor ${n.address} password ${n.password}`] : []),
    ...(n.multihopTtl !== undefined && n.remoteAs !== opts.localAs ? [` neighbor ${n.address} ebgp-multihop ${n.multihopTtl}`] : []),
    ...(n.passive ? [` neighbor ${n.address} passive`] : []),
  ];
  const family = (afi: 'ipv4' | 'ipv6'): string[] => [
    ` address-family ${afi} unicast`,
    ...opts.neighbors.flatMap((n) => [`  neighbor ${n.address} activate`, `  neighbor ${n.address} route-map ANNOUNCE-NOTHING out`]),
    ' exit-address-family',
  ];
  return [
    'frr defaults traditional',
    `hostname rtr-${opts.routerId}`,
    '!',
    `router bgp ${opts.localAs}`,
    ` bgp router-id ${opts.routerId}`,
    ' no bgp ebgp-requires-policy',
    ' no bgp default ipv4-unicast',
    ...gr,
    ...opts.neighbors.flatMap(neighbor),
    ...family('ipv4'),
    ...family('ipv6'),
    '!',
    'route-map ANNOUNCE-NOTHING deny 10',
    '!',
    '',
  ].join('\n');
}

/** `show bgp <afi> unicast json`: routes -> prefix -> paths, each with peerId, nexthops and a stale flag. */
export function parseFrrRoutes(json: unknown): RouterRoute[] {
  const routes = record(record(json)['routes']);
  return Object.entries(routes).flatMap(([prefix, paths]) =>
    list(paths).flatMap((raw): RouterRoute[] => {
      const path = record(raw);
      const fromPeer = path['peerId'];
      if (typeof fromPeer !== 'string' || fromPeer === '(unspec)') return [];
      const hops = list(path['nexthops']).map(record);
      const hop = hops.find((h) => h['scope'] !== 'link-local') ?? hops[0];
      const nextHop = typeof hop?.['ip'] === 'string' ? hop['ip'] : '';
      return [{ prefix, nextHop, fromPeer, ...(path['stale'] === true ? { stale: true } : {}) }];
    }),
  );
}

/** `show bgp neighbors json`: address -> { bgpState, bgpTimerUpMsec while Established }. */
export function parseFrrNeighbors(json: unknown): RouterSession[] {
  return Object.entries(record(json)).flatMap(([peer, raw]) => {
    const n = record(raw);
    if (typeof n['bgpState'] !== 'string') return [];
    const upMs = n['bgpTimerUpMsec'];
    const up = n['bgpState'] === 'Established' && typeof upMs === 'number' ? { uptime: seconds(upMs / 1000) } : {};
    return [{ peer, state: n['bgpState'], ...up }];
  });
}

function seconds(sec: number): string {
  return `${Math.max(0, Math.round(sec))}s`;
}

function record(v: unknown): Record<string, unknown> {
  return isRecord(v) ? v : {};
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** `ready`, or the daemon's exit with its output, whichever comes first. */
async function untilExit<T>(proc: TrackedProcess, name: string, ready: Promise<T>): Promise<T> {
  const early = proc.exited.then((code) => {
    throw new Error(`${name} exited early with ${code}:\n${proc.output().slice(-2000)}`);
  });
  early.catch(() => undefined);
  ready.catch(() => undefined);
  try {
    return await Promise.race([ready, early]);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${name} output:\n${proc.output().slice(-2000)}`, { cause: err });
  }
}
