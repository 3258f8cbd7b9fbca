/**
 * The BGP router helper against real daemons, without flanneld: for FRR and for BIRD, stand-in nodes (a second BIRD
 * on h1..h3) announce their pod /24 (and h1 its /64) with their own br0 address as next hop. The router establishes
 * iBGP and eBGP sessions over IPv4 and IPv6 and a passive TCP-MD5 one, refuses one whose key differs, learns each
 * prefix with the node's next hop, forwards the office's pings to h1's pod over both families, keeps (as stale, still
 * forwarding) the routes of a speaker killed with SIGKILL until it is back, drops those of a speaker that stops
 * cleanly, and gets its sessions back after restart().
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTER_IP, ROUTER_IP6, birdSpeakerConfig, startBird, startRouter, type BgpRouter, type BirdDaemon, type RouterKind, type RouterRoute, type RouterSession } from '../helpers/bgp-router.js';
import { NetnsRun, removeStaleNamespaces } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { addPod, buildTopology, ipJson, ping, type Host, type Pod, type Topology } from '../helpers/topology.js';

const ROUTER_AS = 64512;
/** Long enough to outlast a speaker's restart in the test, short enough not to matter if one is left waiting. */
const RESTART_TIME_SEC = 20;
const KEY = 'flannel-ts-md5';
const H1_V4 = '10.244.1.0/24';
const H1_V6 = '2001:db8:a:1::/64';
const H2_V4 = '10.244.2.0/24';
const H3_V4 = '10.244.3.0/24';

const run = new NetnsRun('bgp');
let topo: Topology;
let pod: Pod;

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  topo = await buildTopology(run, { hosts: 3, stack: 'dual' });
  pod = await addPod(topo.host('h1'), 'p1', [H1_V4, H1_V6], 1);
}, 30_000);

afterAll(async () => {
  await run.cleanup();
});

interface Case {
  readonly kind: RouterKind;
  /** h1's AS (both its sessions, IPv4 and IPv6) and h2's (the MD5 session); h3 uses h2's with the wrong key. */
  readonly h1As: number;
  readonly h2As: number;
}

const CASES: readonly Case[] = [
  { kind: 'frr', h1As: ROUTER_AS, h2As: 64602 },
  { kind: 'bird', h1As: 64601, h2As: ROUTER_AS },
];

const bgpKind = (as: number): string => (as === ROUTER_AS ? 'iBGP' : 'eBGP');

describe.each(CASES)('$kind router', ({ kind, h1As, h2As }) => {
  let router: BgpRouter;
  const speakers = new Map<string, BirdDaemon>();
  let h1Config = '';
  let startedAt = 0;
  let establishedAt = 0;
  const host = (name: string): Host => topo.host(name);
  const fromH1 = (r: RouterRoute): boolean => r.fromPeer === host('h1').ip || r.fromPeer === host('h1').ip6;
  const state = (sessions: readonly RouterSession[], peer: string): string | undefined => sessions.find((s) => s.peer === peer)?.state;

  beforeAll(async () => {
    const t0 = Date.now();
    router = await startRouter(run, topo.hub, {
      kind,
      localAs: ROUTER_AS,
      routerId: ROUTER_IP,
      neighbors: [
        { address: host('h1').ip, remoteAs: h1As },
        { address: host('h1').ip6!, remoteAs: h1As },
        // Passive, as for flanneld, which connects to its routers: the speaker's connect must pass TCP-MD5.
        { address: host('h2').ip, remoteAs: h2As, password: KEY, passive: true },
        { address: host('h3').ip, remoteAs: h2As, password: KEY, passive: true },
      ],
      gracefulRestart: { restartTimeSec: RESTART_TIME_SEC },
    });
    console.info(`${kind}: router up in ${Date.now() - t0} ms`);
    startedAt = Date.now();
    const [h1, h2, h3] = [host('h1'), host('h2'), host('h3')];
    h1Config = birdSpeakerConfig(h1.ip, [
      { neighbor: ROUTER_IP, neighborAs: ROUTER_AS, local: h1.ip, localAs: h1As, prefix: H1_V4, restartTimeSec: RESTART_TIME_SEC },
      { neighbor: ROUTER_IP6, neighborAs: ROUTER_AS, local: h1.ip6!, localAs: h1As, prefix: H1_V6, restartTimeSec: RESTART_TIME_SEC },
    ]);
    const started = await Promise.all([
      startBird(h1.ns, h1Config),
      startBird(h2.ns, birdSpeakerConfig(h2.ip, [{ neighbor: ROUTER_IP, neighborAs: ROUTER_AS, local: h2.ip, localAs: h2As, password: KEY, prefix: H2_V4 }])),
      startBird(h3.ns, birdSpeakerConfig(h3.ip, [{ neighbor: ROUTER_IP, neighborAs: ROUTER_AS, local: h3.ip, localAs: h2As, password: 'not-the-key', prefix: H3_V4 }])),
    ]);
    for (const [i, name] of ['h1', 'h2', 'h3'].entries()) speakers.set(name, started[i]!);
  }, 30_000);

  afterAll(async () => {
    for (const speaker of speakers.values()) await speaker.stop();
    await router?.stop();
  });

  it(`establishes ${bgpKind(h1As)} over IPv4 and IPv6 and ${bgpKind(h2As)} with a TCP-MD5 key`, async () => {
    const peers = [host('h1').ip, host('h1').ip6!, host('h2').ip];
    const sessions = await waitFor('the three sessions Established', async () => {
      const all = await router.sessions();
      return peers.every((p) => state(all, p) === 'Established') ? all : undefined;
    }, 15_000, 100);
    establishedAt = Date.now();
    console.info(`${kind}: sessions Established ${establishedAt - startedAt} ms after the speakers started`);
    expect(sessions.map((s) => s.peer).sort()).toEqual([...peers, host('h3').ip].sort());
    expect(sessions.filter((s) => s.state === 'Established').every((s) => /^\d+s$/.test(s.uptime ?? ''))).toBe(true);
  });

  it("learns each node's prefix with the node's own address as next hop", async () => {
    const expected = [
      { prefix: H1_V4, nextHop: host('h1').ip, fromPeer: host('h1').ip },
      { prefix: H1_V6, nextHop: host('h1').ip6!, fromPeer: host('h1').ip6! },
      { prefix: H2_V4, nextHop: host('h2').ip, fromPeer: host('h2').ip },
    ];
    const byPrefix = (a: { prefix: string }, b: { prefix: string }): number => a.prefix.localeCompare(b.prefix);
    const routes = await waitFor('the three routes', async () => {
      const all = await router.routes();
      return all.length >= expected.length ? all : undefined;
    }, 10_000, 100);
    console.info(`${kind}: routes in the router's table ${Date.now() - establishedAt} ms after the sessions were Established`);
    expect([...routes].sort(byPrefix)).toEqual(expected.sort(byPrefix));
  });

  it('does not establish the session whose TCP-MD5 key differs', async () => {
    // Its speaker has retried every second since it started, alongside the others that are up by now.
    await new Promise((r) => setTimeout(r, Math.max(0, startedAt + 4000 - Date.now())));
    expect(state(await router.sessions(), host('h3').ip)).not.toBe('Established');
    expect((await router.routes()).map((r) => r.prefix)).not.toContain(H3_V4);
  });

  it("forwards the office's pings to the pod on h1 over IPv4 and IPv6", async () => {
    for (const target of [pod.ip, pod.ip6!]) {
      const t0 = Date.now();
      await waitFor(`office -> ${target}`, async () => ((await ping(router.office, target)).ok ? true : undefined), 10_000, 100);
      console.info(`${kind}: office -> ${target} answered after ${Date.now() - t0} ms`);
    }
  });

  it("keeps a killed speaker's routes as stale and forwards on them until it is back (graceful restart helper)", async () => {
    const h1 = host('h1');
    const t0 = Date.now();
    await speakers.get('h1')!.stop('SIGKILL');
    speakers.delete('h1');
    const kept = await waitFor('h1 routes stale', async () => {
      const mine = (await router.routes()).filter(fromH1);
      return mine.length === 2 && mine.every((r) => r.stale) ? mine : undefined;
    }, 10_000, 100);
    console.info(`${kind}: h1's routes stale ${Date.now() - t0} ms after SIGKILL`);
    expect(kept.map((r) => r.prefix).sort()).toEqual([H1_V4, H1_V6].sort());
    expect((await ping(router.office, pod.ip)).ok).toBe(true);
    const t1 = Date.now();
    speakers.set('h1', await startBird(h1.ns, h1Config));
    await waitFor('h1 routes fresh again', async () => {
      const mine = (await router.routes()).filter(fromH1);
      return mine.length === 2 && mine.every((r) => !r.stale) ? true : undefined;
    }, 15_000, 100);
    console.info(`${kind}: h1's routes fresh ${Date.now() - t1} ms after its speaker started again`);
  });

  it("drops the routes of a speaker that stops cleanly, from its table and the kernel's", async () => {
    const t0 = Date.now();
    await speakers.get('h1')!.stop();
    speakers.delete('h1');
    const left = await waitFor('h1 routes withdrawn', async () => {
      const all = await router.routes();
      return all.some(fromH1) ? undefined : all;
    }, 10_000, 100);
    console.info(`${kind}: withdrawn ${Date.now() - t0} ms after the speaker's stop`);
    expect(left.map((r) => r.prefix)).toEqual([H2_V4]);
    await waitFor('kernel routes gone', async () => ((await ipJson(router.ns, 'route', 'show', H1_V4)).length === 0 ? true : undefined), 5000, 100);
    expect(await ipJson(router.ns, '-6', 'route', 'show', H1_V6)).toEqual([]);
    expect((await ping(router.office, pod.ip)).ok).toBe(false);
  });

  it('gets its sessions back after restart()', async () => {
    const t0 = Date.now();
    await router.restart();
    await waitFor('h2 Established again', async () => (state(await router.sessions(), host('h2').ip) === 'Established' ? true : undefined), 15_000, 100);
    console.info(`${kind}: Established again ${Date.now() - t0} ms after restart() began`);
    await waitFor("h2's route learnt again", async () => ((await router.routes()).map((r) => r.prefix).join() === H2_V4 ? true : undefined), 5000, 100);
  });
});
