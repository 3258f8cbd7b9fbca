/**
 * flanneld's BGP speaker against real routers (test/helpers/bgp-router.ts): Debian's BIRD 2 and FRR in a router
 * namespace on the underlay, an office host behind it that is on no node. Proven for each router: iBGP sessions over
 * IPv4 and IPv6 from every node, each node's subnets in the router's table via that node, the office host reaching
 * every pod (ping and TCP, both families) and pods reaching the office with their own address (--ip-masq-exclude),
 * `flanneld status` and the metrics, a restart under graceful restart losing at most 2 of 100 pings, a lease change
 * moving the route, a clean stop without graceful restart withdrawing it; then eBGP with TCP-MD5, where a node with
 * the wrong password gets no session.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OFFICE_IP, OFFICE_IP6, OFFICE_NET, OFFICE_NET6, ROUTER_IP, ROUTER_IP6, startRouter, type BgpRouter, type RouterKind } from '../helpers/bgp-router.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { FLANNELD_BIN } from '../helpers/flanneld-process.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, spawnTracked, waitFor, type TrackedProcess } from '../helpers/processes.js';
import { ping, type Pod } from '../helpers/topology.js';

const V6_NETWORK = '2001:db8:a::/48';
const HEALTH_PORT = 8473;
const ECHO_PORT = 7007;
const NODE_AS = 64512;

/** A TCP server that answers every connection with the address it came from, then echoes what it gets. */
const ECHO_SERVER = `require('node:net').createServer((s) => { s.write(s.remoteAddress.replace(/^::ffff:/, '') + '\\n'); s.pipe(s); }).listen(${ECHO_PORT}, '::');`;
const echoClient = (ip: string): string =>
  `const s = require('node:net').connect(${ECHO_PORT}, '${ip}'); let got = ''; s.setTimeout(3000, () => process.exit(2));` +
  ` s.on('data', (d) => { got += d; if (got.includes('marker')) { process.stdout.write(got); s.end(); } }); s.write('marker');`;

function startEchoServer(ns: Netns): TrackedProcess {
  return spawnTracked('ip', ['netns', 'exec', ns.name, process.execPath, '-e', ECHO_SERVER], {}, 'node');
}

/** Connects from `from` to `ip`'s echo server: the address the server saw, then the echo. */
async function echo(from: Netns, ip: string): Promise<{ seenFrom: string; echoed: boolean }> {
  const out = await from.exec(process.execPath, ['-e', echoClient(ip)]);
  const [seenFrom = '', rest = ''] = out.split('\n');
  return { seenFrom, echoed: rest === 'marker' };
}

const bgpArgs = (extra: readonly string[] = []): string[] => [
  `--bgp-as=${NODE_AS}`,
  `--bgp-peers=${ROUTER_IP};as=${NODE_AS},${ROUTER_IP6};as=${NODE_AS}`,
  '--ip-masq',
  `--ip-masq-exclude=${OFFICE_NET},${OFFICE_NET6}`,
  '--healthz-ip=127.0.0.1',
  `--healthz-port=${HEALTH_PORT}`,
  ...extra,
];

async function healthGet(ns: Netns, path: string): Promise<string> {
  return ns.exec(process.execPath, ['-e', `fetch('http://127.0.0.1:${HEALTH_PORT}${path}').then(async (r) => process.stdout.write(await r.text()))`]);
}

describe.each(['bird', 'frr'] as const)('BGP announcements to a real %s router (iBGP, dual-stack)', (kind: RouterKind) => {
  const run = new NetnsRun('bgp');
  let cluster: Cluster;
  let router: BgpRouter;
  const servers: TrackedProcess[] = [];
  const hostNames = ['h1', 'h2', 'h3'];
  const pod = (host: string): Pod => cluster.pods.find((p) => p.host.name === host) as Pod;
  const nodeIp = (host: string): string => cluster.topology.host(host).ip;
  const nodeIp6 = (host: string): string => cluster.topology.host(host).ip6 as string;
  /** The router's routes as "prefix via next hop", stale ones marked. */
  const routeTable = async (): Promise<string[]> => (await router.routes()).map((r) => `${r.prefix} via ${r.nextHop}${r.stale ? ' (stale)' : ''}`).sort();
  const wantedRoutes = (): string[] =>
    hostNames.flatMap((h) => {
      const [v4, v6] = cluster.subnetsOf(h);
      return [`${v4} via ${nodeIp(h)}`, `${v6} via ${nodeIp6(h)}`];
    }).sort();
  const establishedCount = async (): Promise<number> => (await router.sessions()).filter((s) => s.state === 'Established').length;

  beforeAll(async () => {
    killStaleTrackedProcesses();
    await removeStaleNamespaces();
    cluster = await startCluster(run, {
      hosts: 3,
      stack: 'dual',
      config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6_NETWORK, Backend: { Type: 'vxlan' } },
      flanneldArgs: bgpArgs(),
    });
    const startedAt = Date.now();
    router = await startRouter(run, cluster.topology.hub, {
      kind,
      localAs: NODE_AS,
      routerId: ROUTER_IP,
      gracefulRestart: { restartTimeSec: 120 },
      neighbors: hostNames.flatMap((h) => [
        { address: nodeIp(h), remoteAs: NODE_AS, passive: true },
        { address: nodeIp6(h), remoteAs: NODE_AS, passive: true },
      ]),
    });
    await waitFor('every session established', async () => ((await establishedCount()) === 6 ? true : undefined), 20_000, 100).catch(async (err: unknown) => {
      const bgpLines = cluster.daemon('h1').output().split('\n').filter((l) => l.includes('"bgp"')).slice(-10).join('\n');
      throw new Error(`${(err as Error).message}: router sessions ${JSON.stringify(await router.sessions())}; h1's BGP log:\n${bgpLines}`);
    });
    console.log(`${kind}: 6 sessions established ${Date.now() - startedAt} ms after the router was started (nodes retry on a 1 s backoff)`);
    for (const p of cluster.pods) servers.push(startEchoServer(p.ns));
    servers.push(startEchoServer(router.office));
  }, 90_000);

  afterAll(async () => {
    for (const s of servers) await s.stop('SIGTERM', 2000);
    await router?.stop();
    await cluster?.stop();
    await run.cleanup();
  });

  it("holds each node's subnets via that node, from both families' sessions", async () => {
    await waitFor('every subnet on the router', async () => ((await routeTable()).join('\n') === wantedRoutes().join('\n') ? true : undefined), 10_000, 100)
      .catch(async (err: unknown) => {
        throw new Error(`${(err as Error).message}: router has ${JSON.stringify(await routeTable())}, wanted ${JSON.stringify(wantedRoutes())}`);
      });
    // What the router learnt reaches its kernel (BIRD's kernel protocol, FRR's zebra) a moment later.
    await waitFor("every subnet in the router's kernel table", async () => {
      // zebra's routes read `<prefix> nhid N via <node> ...`, BIRD's `<prefix> via <node> ...`.
      const kernel = `${await router.ns.ip('route', 'show')}\n${await router.ns.ip('-6', 'route', 'show')}`.split('\n');
      return hostNames.every((h) => cluster.subnetsOf(h).every((s) => kernel.some((l) => l.startsWith(`${s} `) && l.includes(' via ')))) ? true : undefined;
    }, 10_000, 100);
  });

  it('lets the office host reach every pod over IPv4 and IPv6, by ping and TCP, with nothing masqueraded', async () => {
    for (const p of cluster.pods) {
      for (const ip of [p.ip, p.ip6 as string]) {
        expect((await ping(router.office, ip, { count: 2 })).received, `office -> ${ip}`).toBeGreaterThan(0);
        expect(await echo(router.office, ip)).toEqual({ seenFrom: ip.includes(':') ? OFFICE_IP6 : OFFICE_IP, echoed: true });
      }
    }
  });

  it('lets pods reach the office with their own address (--ip-masq-exclude), while --ip-masq stays on', async () => {
    for (const p of cluster.pods) {
      expect(await echo(p.ns, OFFICE_IP)).toEqual({ seenFrom: p.ip, echoed: true });
      expect(await echo(p.ns, OFFICE_IP6)).toEqual({ seenFrom: p.ip6, echoed: true });
    }
    const nat = await cluster.topology.host('h1').ns.exec('iptables-save', ['-t', 'nat']);
    expect(nat).toContain(`-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d ${OFFICE_NET} -m comment --comment "flanneld masq" -j RETURN`);
  });

  it('shows the sessions in flanneld status and the metrics, and stays ready', async () => {
    const h1 = cluster.topology.host('h1').ns;
    const status = await h1.exec(process.execPath, [FLANNELD_BIN, 'status', `--healthz-port=${HEALTH_PORT}`]);
    expect(status).toContain('2 BGP session(s), 2 established');
    expect(status).toMatch(new RegExp(`\\| ${ROUTER_IP} \\| ${NODE_AS} \\| established \\| \\S+ \\(\\d+ s\\) \\| ${cluster.subnetsOf('h1')[0]} \\| - \\|`));
    const metrics = await healthGet(h1, '/metrics');
    expect(metrics).toContain(`flanneld_bgp_session_state{peer="${ROUTER_IP6}",state="established"} 1`);
    expect(metrics).toContain(`flanneld_bgp_prefixes_announced{peer="${ROUTER_IP}"} 1`);
  });

  it('keeps the office pinging a pod through a restart of its node\'s flanneld (graceful restart): at most 2 of 100 lost', async () => {
    const target = pod('h2');
    const pinging = ping(router.office, target.ip, { count: 100, intervalSec: 0.05, waitSec: 1 });
    await new Promise((r) => setTimeout(r, 500));
    await cluster.stopDaemon('h2');
    // The router holds h2's routes, as stale, while no session is up.
    expect(await routeTable()).toContain(`${cluster.subnetsOf('h2')[0]} via ${nodeIp('h2')} (stale)`);
    await cluster.startDaemon('h2', { keepSubnetFile: true });
    const result = await pinging;
    console.log(`${kind}: ${100 - result.received} of 100 office pings lost while h2's flanneld restarted`);
    expect(result.transmitted).toBe(100);
    expect(result.received).toBeGreaterThanOrEqual(98);
    await waitFor('h2 back, its routes fresh', async () => ((await routeTable()).join('\n') === wantedRoutes().join('\n') ? true : undefined), 10_000, 100);
  });

  it("moves the route when a node's lease changes", async () => {
    const [oldV4] = cluster.subnetsOf('h3');
    await cluster.stopDaemon('h3');
    // h3's lease goes, and a placeholder holds its old subnet so the new one is surely different.
    const keys = (await cluster.etcdctl('get', '--prefix', '/coreos.com/network/subnets/', '--keys-only')).split('\n').filter((k) => k.includes((oldV4 as string).replace('/', '-')));
    expect(keys).toHaveLength(1);
    const held = JSON.parse((await cluster.etcdctl('get', keys[0] as string, '--print-value-only')).trim()) as Record<string, unknown>;
    await cluster.etcdctl('put', keys[0] as string, JSON.stringify({ ...held, PublicIP: '192.0.2.99', PublicIPv6: '2001:db8:2::63' }));
    const started = Date.now();
    await cluster.startDaemon('h3');
    const [newV4] = cluster.subnetsOf('h3');
    expect(newV4).not.toBe(oldV4);
    await waitFor("h3's new subnet on the router, its old one gone", async () => {
      const table = await routeTable();
      return table.includes(`${newV4} via ${nodeIp('h3')}`) && !table.some((r) => r.startsWith(`${oldV4} `)) ? true : undefined;
    }, 10_000, 50);
    console.log(`${kind}: lease change on h3 (daemon start with a new subnet) -> route on the router in ${Date.now() - started} ms`);
    await cluster.etcdctl('del', keys[0] as string);
  });

  it('withdraws the routes on a clean stop when graceful restart is off', async () => {
    await cluster.stopDaemon('h1');
    await cluster.startDaemon('h1', { keepSubnetFile: true, extraArgs: ['--bgp-graceful-restart-time=0'] });
    const [v4, v6] = cluster.subnetsOf('h1');
    await waitFor('h1 announced again', async () => ((await routeTable()).includes(`${v4} via ${nodeIp('h1')}`) ? true : undefined), 10_000, 100);
    await cluster.stopDaemon('h1');
    // Gone at once from BIRD; FRR's bgpd takes a moment to process the withdrawals.
    const gone = async (): Promise<string[]> => (await routeTable()).filter((r) => r.startsWith(`${v4} `) || r.startsWith(`${v6} `));
    await waitFor("h1's routes withdrawn", async () => ((await gone()).length === 0 ? true : undefined), 3000, 50).catch(async () => expect(await gone()).toEqual([]));
  });
});

describe.each(['bird', 'frr'] as const)('eBGP with TCP-MD5 to a real %s router', (kind: RouterKind) => {
  const run = new NetnsRun('bgpm');
  let cluster: Cluster;
  let router: BgpRouter;
  const ROUTER_AS = 65010;
  const PASSWORD = 'flannel-md5-key';

  beforeAll(async () => {
    killStaleTrackedProcesses();
    await removeStaleNamespaces();
    cluster = await startCluster(run, {
      hosts: 2,
      config: { Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } },
      flanneldArgs: [`--bgp-as=${NODE_AS}`, '--healthz-ip=127.0.0.1', `--healthz-port=${HEALTH_PORT}`],
    });
    router = await startRouter(run, cluster.topology.hub, {
      kind,
      localAs: ROUTER_AS,
      routerId: ROUTER_IP,
      neighbors: ['h1', 'h2'].map((h) => ({ address: cluster.topology.host(h).ip, remoteAs: NODE_AS, password: PASSWORD, passive: true })),
    });
    for (const [host, password] of [['h1', PASSWORD], ['h2', 'not-the-key']] as const) {
      await cluster.stopDaemon(host);
      await cluster.startDaemon(host, { keepSubnetFile: true, extraArgs: [`--bgp-peers=${ROUTER_IP};as=${ROUTER_AS};password=${password}`] });
    }
  }, 90_000);

  afterAll(async () => {
    await router?.stop();
    await cluster?.stop();
    await run.cleanup();
  });

  it('establishes the signed eBGP session, announces the subnet via the node, and never logs the password', async () => {
    const h1 = cluster.topology.host('h1').ip;
    await waitFor('h1 established', async () => ((await router.sessions()).find((s) => s.peer === h1)?.state === 'Established' ? true : undefined), 15_000, 100);
    await waitFor("h1's subnet on the router", async () => ((await router.routes()).some((r) => r.prefix === cluster.subnetOf('h1') && r.nextHop === h1) ? true : undefined), 10_000, 100);
    expect((await ping(router.office, cluster.pods[0]!.ip, { count: 2 })).received).toBeGreaterThan(0);
    for (const h of ['h1', 'h2']) expect(cluster.daemon(h).output()).not.toMatch(/flannel-md5-key|not-the-key/);
  });

  it('gets no session for a node with the wrong password, names the likely cause, and stays ready', async () => {
    const h2 = cluster.topology.host('h2').ip;
    expect((await router.sessions()).find((s) => s.peer === h2)?.state).not.toBe('Established');
    expect((await router.routes()).filter((r) => r.nextHop === h2)).toEqual([]);
    // The router drops the signed SYNs without a word: the node's connect times out after 10 s and says why.
    const h2ns = cluster.topology.host('h2').ns;
    await waitFor("h2's session error", async () => {
      const status = await healthGet(h2ns, '/status');
      return status.includes('does the router have the same password?') ? true : undefined;
    }, 15_000, 250);
    // A router it cannot talk to is not a broken node.
    const ready = await h2ns.exec(process.execPath, ['-e', `fetch('http://127.0.0.1:${HEALTH_PORT}/readyz').then((r) => process.stdout.write(String(r.status)))`]);
    expect(ready).toBe('200');
    expect(await healthGet(h2ns, '/metrics')).toContain(`flanneld_bgp_session_state{peer="${ROUTER_IP}",state="established"} 0`);
  });
});
