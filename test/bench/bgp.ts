#!/usr/bin/env node
/**
 * The BGP speaker against a real BIRD router (test/helpers/bgp-router.ts) on a dual-stack three-host underlay:
 * - session establishment: flanneld started until the router reports both its sessions (IPv4, IPv6) Established;
 *   floor, same run: a BIRD speaker on h3 restarting its session to the same router;
 * - lease → route: a node's new lease (flanneld's "lease acquired" log line) until the route to it is in the router's
 *   kernel table (`ip -ts monitor route` there), over fresh leases; floor: BIRD on h3 enabling a static route it
 *   exports over its session, to the same kernel table;
 * - memory: flanneld's RSS on h1 without BGP, then with two routers configured (median of samples after settling).
 */
import { readFileSync } from 'node:fs';
import { benchMain, latencyCells, mb, median, ms, percentile, sleep, table, type BenchContext } from './bench-kit.js';
import { ROUTER_IP, ROUTER_IP6, birdSpeakerConfig, startBird, startRouter, type BgpRouter, type BirdDaemon } from '../helpers/bgp-router.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { spawnTracked, waitFor, type TrackedProcess } from '../helpers/processes.js';

const AS = 64512;
const SESSION_RUNS = 8;
const LEASE_RUNS = 15;
const FLOOR_RUNS = 15;
const MEMORY_SAMPLES = 10;
const STANDIN_PREFIX = '10.99.0.0/24';

const bgpArgs = (grTime: number): string[] => [`--bgp-as=${AS}`, `--bgp-peers=${ROUTER_IP};as=${AS},${ROUTER_IP6};as=${AS}`, `--bgp-graceful-restart-time=${grTime}`];

/** The router's kernel route additions, with `ip -ts`'s wall-clock stamps. */
class RouteMonitor {
  private lines: { at: number; text: string }[] = [];
  private readonly proc: TrackedProcess;
  constructor(netns: string) {
    this.proc = spawnTracked('ip', ['netns', 'exec', netns, 'ip', '-ts', 'monitor', 'route'], {}, 'ip-monitor');
    this.proc.child.stdout?.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        const m = /^\[(\S+)\] (.*)$/.exec(line);
        if (m) this.lines.push({ at: Date.parse(`${m[1]!.slice(0, 23)}Z`), text: m[2]! });
      }
      if (this.lines.length > 10_000) this.lines = this.lines.slice(-1000);
    });
  }
  mark(): number {
    return this.lines.length;
  }
  /** When a route to `prefix` via a next hop was first added after `mark`. */
  addedAfter(mark: number, prefix: string): number | undefined {
    return this.lines.slice(mark).find((l) => l.text.startsWith(`${prefix} `) && l.text.includes(' via '))?.at;
  }
  stop(): Promise<unknown> {
    return this.proc.stop('SIGTERM', 2000);
  }
}

const logTime = (output: string, msg: string, after = 0): number | undefined => logTimes(output, msg, after)[0];

const logTimes = (output: string, msg: string, after: number): number[] =>
  output.split('\n').filter((line) => line.includes(`"msg":"${msg}"`)).map((line) => Date.parse((JSON.parse(line) as { time: string }).time)).filter((at) => at >= after);

const rssKib = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN);

async function settledRss(cluster: Cluster, host: string): Promise<number> {
  await sleep(8000);
  const samples: number[] = [];
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    samples.push(rssKib(cluster.daemon(host).child.pid as number));
    await sleep(1000);
  }
  return median(samples);
}

const establishedFor = async (router: BgpRouter, addresses: readonly string[]): Promise<boolean> => {
  const sessions = await router.sessions();
  return addresses.every((a) => sessions.find((s) => s.peer === a)?.state === 'Established');
};

async function sessionTimes(ctx: BenchContext, cluster: Cluster, router: BgpRouter): Promise<number[]> {
  const h1 = cluster.topology.host('h1');
  const out: number[] = [];
  for (let i = 0; i < SESSION_RUNS && ctx.remainingMs() > 60_000; i++) {
    await cluster.stopDaemon('h1');
    await waitFor('h1 sessions down', async () => (!(await establishedFor(router, [h1.ip])) ? true : undefined), 10_000, 20);
    const started = Date.now();
    await cluster.startDaemon('h1', { keepSubnetFile: true, extraArgs: bgpArgs(0) });
    await waitFor('h1 sessions up', async () => ((await establishedFor(router, [h1.ip, h1.ip6 as string])) ? true : undefined), 15_000, 10);
    // The daemon's own stamps: polling the router would add its own period to every sample.
    const output = cluster.daemon('h1').output();
    const announcing = logTime(output, 'announcing the lease over BGP', started);
    const established = logTimes(output, 'BGP session established', started);
    if (announcing !== undefined && established.length === 2) out.push(Math.max(...established) - announcing);
  }
  return out;
}

async function standInSessionTimes(ctx: BenchContext, router: BgpRouter, standIn: BirdDaemon, h3Ip: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < SESSION_RUNS && ctx.remainingMs() > 60_000; i++) {
    await standIn.birdc('disable', 'b0');
    await waitFor('stand-in down', async () => (!(await establishedFor(router, [h3Ip])) ? true : undefined), 10_000, 20);
    const started = Date.now();
    await standIn.birdc('enable', 'b0');
    await waitFor('stand-in up', async () => ((await establishedFor(router, [h3Ip])) ? true : undefined), 15_000, 10);
    out.push(Date.now() - started);
  }
  return out;
}

/** h2 gets a fresh lease each time (its old one deleted while it is down, graceful restart off so the route goes). */
async function leaseToRoute(ctx: BenchContext, cluster: Cluster, monitor: RouteMonitor): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < LEASE_RUNS && ctx.remainingMs() > 60_000; i++) {
    const [old] = cluster.subnetsOf('h2');
    await cluster.stopDaemon('h2');
    const key = (await cluster.etcdctl('get', '--prefix', '/coreos.com/network/subnets/', '--keys-only')).split('\n').find((k) => k.includes((old as string).replace('/', '-')));
    if (key) await cluster.etcdctl('del', key);
    const mark = monitor.mark();
    const started = Date.now();
    await cluster.startDaemon('h2', { extraArgs: bgpArgs(0) });
    const [fresh] = cluster.subnetsOf('h2');
    const routed = await waitFor('h2 route on the router', () => monitor.addedAfter(mark, fresh as string), 15_000, 10);
    const acquired = logTime(cluster.daemon('h2').output(), 'lease acquired', started);
    if (acquired !== undefined) out.push(routed - acquired);
  }
  return out;
}

async function standInRouteTimes(ctx: BenchContext, standIn: BirdDaemon, monitor: RouteMonitor): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < FLOOR_RUNS && ctx.remainingMs() > 60_000; i++) {
    await standIn.birdc('disable', 's0');
    await sleep(300);
    const mark = monitor.mark();
    const started = Date.now();
    await standIn.birdc('enable', 's0');
    const routed = await waitFor('stand-in route on the router', () => monitor.addedAfter(mark, STANDIN_PREFIX), 15_000, 10);
    out.push(routed - started);
  }
  return out;
}

benchMain({
  tag: 'bgp',
  title: 'BGP: session establishment, lease to route on a real router, memory',
  deadlineMs: 420_000,
  async body(ctx) {
    const cluster = await startCluster(ctx.run, {
      hosts: 3,
      stack: 'dual',
      config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:a::/48', Backend: { Type: 'vxlan' } },
    });
    ctx.defer(() => cluster.stop());
    const hosts = ['h1', 'h2', 'h3'].map((h) => cluster.topology.host(h));
    const router = await startRouter(ctx.run, cluster.topology.hub, {
      kind: 'bird',
      localAs: AS,
      routerId: ROUTER_IP,
      neighbors: hosts.flatMap((h) => [{ address: h.ip, remoteAs: AS, passive: true }, { address: h.ip6 as string, remoteAs: AS, passive: true }]),
    });
    ctx.defer(() => router.stop());
    const monitor = new RouteMonitor(router.ns.name);
    ctx.defer(() => monitor.stop());
    const h3 = hosts[2]!;
    // h3's stand-in speaker: one session, one static route it exports when enabled; it dials at once, as flanneld does.
    const standIn = await startBird(h3.ns, birdSpeakerConfig(h3.ip, [{ neighbor: ROUTER_IP, neighborAs: AS, local: h3.ip, localAs: AS, prefix: STANDIN_PREFIX, announceLater: true }], 0));
    ctx.defer(() => standIn.stop());

    ctx.note('memory without BGP');
    const rssWithout = await settledRss(cluster, 'h1');
    await cluster.stopDaemon('h1');
    await cluster.startDaemon('h1', { keepSubnetFile: true, extraArgs: bgpArgs(120) });
    await waitFor('h1 sessions up', async () => ((await establishedFor(router, [h3.ip])) && (await establishedFor(router, [hosts[0]!.ip, hosts[0]!.ip6 as string])) ? true : undefined), 20_000, 50);
    ctx.note('memory with two routers');
    const rssWith = await settledRss(cluster, 'h1');

    ctx.note('session establishment');
    const sessions = await sessionTimes(ctx, cluster, router);
    const standInSessions = await standInSessionTimes(ctx, router, standIn, h3.ip);
    ctx.note('lease to route');
    const leases = await leaseToRoute(ctx, cluster, monitor);
    const standInRoutes = await standInRouteTimes(ctx, standIn, monitor);

    return [
      table(['measure', 'runs', 'p50', 'p99', 'max', 'p50 vs floor', 'p99 vs floor'], [
        ['flanneld: first announcement → both sessions (IPv4, IPv6) Established', String(sessions.length), ...latencyCells(sessions, standInSessions)],
        ['reference: BIRD speaker `enable` → Established (BIRD schedules its own connect)', String(standInSessions.length), ms(percentile(standInSessions, 50)), ms(percentile(standInSessions, 99)), ms(Math.max(...standInSessions)), '1.00×', '1.00×'],
        ['flanneld: lease acquired → route in the router\'s kernel', String(leases.length), ...latencyCells(leases, standInRoutes)],
        ['floor: BIRD speaker static route enabled → route in the router\'s kernel', String(standInRoutes.length), ms(percentile(standInRoutes, 50)), ms(percentile(standInRoutes, 99)), ms(Math.max(...standInRoutes)), '1.00×', '1.00×'],
      ]),
      '',
      table([`flanneld RSS on h1 (median of ${MEMORY_SAMPLES} samples 1 s apart, after 8 s settling)`, 'value'], [
        ['without BGP', mb(rssWithout)],
        ['with --bgp-peers (2 routers, both sessions up)', mb(rssWith)],
        ['extra', mb(rssWith - rssWithout)],
      ]),
      '',
      'Both dial a passive BIRD neighbour: flanneld from its first announcement to its own "BGP session established" lines, BIRD from `birdc enable` (with `connect delay time 0`) to the router reporting Established, polled. RSS moves by several MB with garbage collection alone, so an extra within that is noise. Lease to route runs from flanneld\'s "lease acquired" log stamp to `ip -ts monitor route` in the router namespace and so includes the session coming up (a fresh lease comes with a fresh daemon); the floor is a static route enabled on an established session.',
    ].join('\n');
  },
});
