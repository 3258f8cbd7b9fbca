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
import {
  birdAnswers, birdArgv, birdcAt, birdFiles, birdPeers, birdRouterConfig, birdRoutes, parseBirdProtocols, routerLocalAddress, seconds,
  type BirdRouterOptions, type RouterNeighbor, type RouterRoute, type RouterSession,
} from '../../lab/bird-config.js';
import { ROUTER_HUB_SIDE, routeOfficeThroughRouter, wireRouter, type HubRoute } from '../../lab/router-segments.js';
import { ROUTER_IP, ROUTER_IP6 } from '../../lab/underlay-addresses.js';
import { sh, type Netns, type NetnsRun } from './netns.js';
import { spawnTracked, waitFor, type TrackedProcess } from './processes.js';
import { HUB_IP6, ipJson, isRecord } from './topology.js';

export type { RouterNeighbor, RouterRoute, RouterSession } from '../../lab/bird-config.js';
export { OFFICE_GATEWAY, OFFICE_GATEWAY6, OFFICE_IP, OFFICE_IP6, OFFICE_NET, OFFICE_NET6, ROUTER_IP, ROUTER_IP6 } from '../../lab/underlay-addresses.js';

export type RouterKind = 'bird' | 'frr';

export interface RouterOptions extends BirdRouterOptions {
  readonly kind: RouterKind;
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
  const hubRoutes = await routeOfficeThroughHub(hub);
  let daemon: RouterDaemon | undefined;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await daemon?.stop();
    // The veth goes with the namespace only once the kernel gets round to it; a router started next needs its name.
    await hub.ip('link', 'del', ROUTER_HUB_SIDE).catch(() => undefined);
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

/** The router on br0 and the office segment behind it, both families. */
async function buildRouterSegments(run: NetnsRun, hub: Netns): Promise<{ ns: Netns; office: Netns }> {
  const ns = await run.create('rtr');
  const office = await run.create('office');
  await wireRouter(hub, ns, office, [4, 6]);
  return { ns, office };
}

/** The hub's routes to the office: IPv6 only when the underlay carries it. */
async function routeOfficeThroughHub(hub: Netns): Promise<HubRoute[]> {
  const br0 = (await ipJson(hub, 'addr', 'show', 'dev', 'br0')).flatMap((link) => list(link['addr_info']).map(record));
  return routeOfficeThroughRouter(hub, br0.some((a) => a['local'] === HUB_IP6) ? [4, 6] : [4]);
}

// ---- BIRD ----

export interface BirdDaemon {
  readonly proc: TrackedProcess;
  /** Runs one birdc command against this daemon's socket; returns its output. */
  birdc(...command: string[]): Promise<string>;
  /** SIGTERM: BIRD closes its sessions with a Cease. SIGKILL: a crash, as a graceful-restart helper sees one. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
}

/**
 * BIRD in the foreground in `ns` with `config`, its socket and PID file in a temporary directory; resolves once the
 * daemon answers on its socket. Also the tests' stand-in for a node's BGP speaker.
 */
export async function startBird(ns: Netns, config: string): Promise<BirdDaemon> {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-bird-'));
  const { conf, socket } = birdFiles(dir);
  writeFileSync(conf, config);
  const proc = spawnTracked('ip', ['netns', 'exec', ns.name, ...birdArgv(dir)], {}, conf);
  const birdc = (...command: string[]): Promise<string> => birdcAt(socket, ...command);
  const stop = async (signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> => {
    await proc.stop(signal, 5000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await untilExit(proc, 'bird', waitFor('bird to answer on its socket', async () => ((await birdAnswers(socket)) ? true : undefined), 10_000, 100));
  } catch (err) {
    await stop();
    throw err;
  }
  return { proc, birdc, stop };
}

async function startBirdRouter(ns: Netns, opts: RouterOptions): Promise<RouterDaemon> {
  const bird = await startBird(ns, birdRouterConfig(opts));
  const peers = birdPeers(opts.neighbors);
  return {
    routes: () => birdRoutes(bird.birdc, peers),
    sessions: async () => parseBirdProtocols(await bird.birdc('show', 'protocols'), peers, Date.now() / 1000),
    stop: () => bird.stop(),
  };
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
    ` neighbor ${n.address} update-source ${routerLocalAddress(n)}`,
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

export interface SpeakerSession {
  readonly neighbor: string;
  readonly neighborAs: number;
  readonly local: string;
  readonly localAs: number;
  readonly password?: string;
  /** The one prefix this session announces, with next hop = `local`. */
  readonly prefix: string;
  /** Announce graceful restart (RFC 4724) with this restart time, so the router keeps the routes if we crash. */
  readonly restartTimeSec?: number;
  /** Start with the prefix's static protocol disabled, to announce it later with `birdc enable s<i>`. */
  readonly announceLater?: boolean;
}

/**
 * A BIRD config for a node's stand-in speaker (tests and benchmarks): each session `b<i>` exports one unreachable
 * static route `s<i>`, as a node announces its lease. `connectDelaySec` 0 dials at once on start or `enable`.
 */
export function birdSpeakerConfig(routerId: string, sessions: readonly SpeakerSession[], connectDelaySec = 1): string {
  return [
    `router id ${routerId};`,
    'protocol device { }',
    ...sessions.flatMap((s, i) => {
      const afi = s.prefix.includes(':') ? 'ipv6' : 'ipv4';
      return [
        `protocol static s${i} { ${afi};${s.announceLater ? ' disabled;' : ''} route ${s.prefix} unreachable; }`,
        `protocol bgp b${i} {`,
        `  local ${s.local} as ${s.localAs};`,
        `  neighbor ${s.neighbor} as ${s.neighborAs};`,
        `  connect delay time ${connectDelaySec};`,
        '  connect retry time 1;',
        '  error wait time 1, 5;',
        ...(s.password !== undefined ? [`  password "${s.password}";`] : []),
        ...(s.restartTimeSec !== undefined ? ['  graceful restart on;', `  graceful restart time ${s.restartTimeSec};`] : []),
        `  ${afi} { import none; export where proto = "s${i}"; next hop self; };`,
        '}',
      ];
    }),
    '',
  ].join('\n');
}
