/**
 * Health, metrics, probes and the status view on a real three-host vxlan overlay: metrics move as peers join,
 * leave and are repaired; a peer whose overlay path is broken on purpose (VXLAN to it dropped inside h1) becomes
 * unreachable in the metrics and in `flanneld status`, and reachable again once the path is fixed. The daemons
 * listen where the DaemonSet's do (upstream's default --healthz-ip 0.0.0.0): the probes answer another host on the
 * underlay, /metrics and /status only the node itself until --metrics-allow-from lets a client in.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { FLANNELD_BIN, startFlanneld } from '../helpers/flanneld-process.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor, type TrackedProcess } from '../helpers/processes.js';

const run = new NetnsRun('op');
const PORT = 8471;
let cluster: Cluster;
let h1: Netns;
/** h1's daemon restarted with FLANNELD_METRICS_ALLOW_FROM, by the last test. */
let allowing: TrackedProcess | undefined;

async function metrics(ns: Netns): Promise<Map<string, number>> {
  const text = await ns.exec(process.execPath, ['-e', `fetch('http://127.0.0.1:${PORT}/metrics').then(r => r.text()).then(t => process.stdout.write(t))`]);
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(flanneld_[^ ]+) (\S+)$/.exec(line);
    if (m) values.set(m[1] as string, Number(m[2]));
  }
  return values;
}

async function status(ns: Netns, ...args: string[]): Promise<{ code: number; text: string }> {
  return ns.exec(process.execPath, [FLANNELD_BIN, 'status', `--healthz-port=${PORT}`, ...args]).then(
    (text) => ({ code: 0, text }),
    (err: Error & { cause?: { code?: number; stdout?: string } }) => ({ code: err.cause?.code ?? -1, text: err.cause?.stdout ?? '' }),
  );
}

/** One GET from inside `ns`, as any client there would make it; throws when nothing answers. */
async function get(ns: Netns, url: string): Promise<{ code: number; body: string }> {
  const script = 'fetch(process.argv[1], { signal: AbortSignal.timeout(5000) })'
    + '.then(async (r) => process.stdout.write(JSON.stringify({ code: r.status, body: await r.text() })))';
  return JSON.parse(await ns.exec(process.execPath, ['-e', script, url])) as { code: number; body: string };
}

const H1_URL = (path: string): string => `http://192.0.2.1:${PORT}${path}`;
const refusal = (path: string, client: string): string =>
  `${path} is not served to ${client}: only to this host and to clients in --metrics-allow-from (FLANNELD_METRICS_ALLOW_FROM)\n`;

const metricIs = (ns: Netns, name: string, want: (v: number | undefined) => boolean) =>
  waitFor(`${name}`, async () => (want((await metrics(ns)).get(name)) ? true : undefined), 15_000, 200);

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  cluster = await startCluster(run, {
    hosts: 3,
    config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
    // No --healthz-ip: bound to 0.0.0.0 as in the DaemonSet, so what other hosts may read is what is tested.
    flanneldArgs: [`--healthz-port=${PORT}`, '--peer-probe-interval=1', '--datapath-resync=30'],
  });
  h1 = cluster.topology.host('h1').ns;
});

afterAll(async () => {
  if (process.env['DEBUG_OPS']) console.log((allowing ?? cluster?.daemon('h1'))?.output().slice(-5000));
  await allowing?.stop('SIGTERM', 3000);
  await cluster?.stop();
  await run.cleanup();
});

describe('operations on a real overlay', () => {
  it('is healthy and ready, and its metrics describe the two peers', async () => {
    await metricIs(h1, 'flanneld_peers', (v) => v === 2);
    const m = await metrics(h1);
    expect(m.get('flanneld_ready')).toBe(1);
    expect(m.get('flanneld_datapath_entries{kind="route"}')).toBe(2);
    expect(m.get('flanneld_datapath_entries{kind="fdb"}')).toBe(2);
    expect(m.get('flanneld_datapath_entries{kind="neigh"}')).toBe(2);
    expect(m.get('flanneld_lease_expiry_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 + 23 * 3600);
    const s = await status(h1);
    expect(s.code).toBe(0);
    expect(s.text).toContain('| state | ready |');
  });

  it('logs every line as JSON with exactly one component', () => {
    const lines = cluster.daemon('h1').output().split('\n').filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(5);
    const components = new Set<string>();
    for (const line of lines) {
      expect(line.match(/"component":/g), line).toHaveLength(1);
      components.add((JSON.parse(line) as { component: string }).component);
    }
    expect([...components]).toEqual(expect.arrayContaining(['main', 'daemon', 'backend-vxlan']));
  });

  it('probes every peer through the overlay and reports them reachable with an RTT', async () => {
    const subnets = ['h2', 'h3'].map((h) => cluster.subnetOf(h));
    for (const subnet of subnets) await metricIs(h1, `flanneld_peer_reachable{peer="${subnet}"}`, (v) => v === 1);
    const rows = subnets.map((subnet) => new RegExp(`\\| ${subnet.replace(/\./g, '\\.')} \\| 192\\.0\\.2\\.\\d \\| [0-9a-f:]{17} \\| reachable \\| \\d+\\.\\d\\d ms \\|`));
    // A peer whose daemon was still starting when the first batch went out gets its RTT on the next pass.
    await waitFor('an RTT for every peer in flanneld status', async () => {
      const text = (await status(h1)).text;
      return rows.every((row) => row.test(text)) ? true : undefined;
    }, 10_000, 200);
    expect((await metrics(h1)).get('flanneld_peer_probe_rtt_seconds_count')).toBeGreaterThan(0);
  });

  it('counts a repair when a route is deleted behind its back', async () => {
    const before = (await metrics(h1)).get('flanneld_datapath_repairs_total{kind="route"}') ?? 0;
    await h1.ip('route', 'del', cluster.subnetOf('h2'));
    await metricIs(h1, 'flanneld_datapath_repairs_total{kind="route"}', (v) => (v ?? 0) === before + 1);
  });

  it('marks a peer unreachable when its overlay path is broken, and reachable again when fixed', async () => {
    const peer = cluster.subnetOf('h2');
    const label = `flanneld_peer_reachable{peer="${peer}"}`;
    // VXLAN towards h2 dropped inside h1: the FDB entry points at a path that no longer carries anything.
    const rule = ['-p', 'udp', '-d', '192.0.2.2', '--dport', '8472', '-j', 'DROP'];
    await h1.exec('iptables', ['-I', 'OUTPUT', ...rule]);
    try {
      await metricIs(h1, label, (v) => v === 0);
      const s = await status(h1);
      expect(s.text).toMatch(new RegExp(`\\| ${peer.replace(/\./g, '\\.')} \\| 192\\.0\\.2\\.2 \\| [0-9a-f:]{17} \\| UNREACHABLE \\|`));
      expect(cluster.daemon('h1').output()).toMatch(/peer unreachable/i);
    } finally {
      await h1.exec('iptables', ['-D', 'OUTPUT', ...rule]);
    }
    await metricIs(h1, label, (v) => v === 1);
  });

  it('forgets a peer that leaves: peers, entries and its probe series go', async () => {
    const peer = cluster.subnetOf('h3');
    await cluster.stopDaemon('h3');
    await cluster.etcdctl('del', `/coreos.com/network/subnets/${peer.replace('/', '-')}`);
    await metricIs(h1, 'flanneld_peers', (v) => v === 1);
    const m = await metrics(h1);
    expect(m.get('flanneld_datapath_entries{kind="route"}')).toBe(1);
    expect(m.has(`flanneld_peer_reachable{peer="${peer}"}`)).toBe(false);
  });
});

describe('exposure of the health port', () => {
  it('answers the probes to another host on the underlay, and /metrics and /status only to the node itself', async () => {
    const h2 = cluster.topology.host('h2').ns;
    for (const path of ['/healthz', '/readyz']) expect(await get(h2, H1_URL(path))).toEqual({ code: 200, body: 'ok\n' });
    for (const path of ['/metrics', '/status']) expect(await get(h2, H1_URL(path))).toEqual({ code: 403, body: refusal(path, '192.0.2.2') });
    // A pod on the node is not the node: its connection to the node's address comes from the pod's own address.
    const pod = cluster.pods.find((p) => p.host.name === 'h1');
    expect(await get(pod!.ns, H1_URL('/metrics'))).toEqual({ code: 403, body: refusal('/metrics', pod!.ip) });

    // The node reads both, over loopback and over its own underlay address.
    expect((await get(h1, H1_URL('/metrics'))).body).toMatch(/^flanneld_ready 1$/m);
    expect((await metrics(h1)).get('flanneld_ready')).toBe(1);
    for (const args of [[], ['--healthz-ip=192.0.2.1']]) {
      const s = await status(h1, ...args);
      expect(s.code, args.join(' ')).toBe(0);
      expect(s.text).toContain('| state | ready |');
    }
    const refusals = cluster.daemon('h1').output().split('\n').filter((l) => l.includes('"msg":"refused '));
    expect(refusals.map((l) => (JSON.parse(l) as { client: string }).client).sort()).toEqual(['192.0.2.2', pod!.ip].sort());
  });

  it('serves /metrics and /status to the clients FLANNELD_METRICS_ALLOW_FROM lists, and only to them', async () => {
    const h2 = cluster.topology.host('h2').ns;
    await cluster.stopDaemon('h1');
    allowing = startFlanneld(h1.name, [
      `--etcd-endpoints=${cluster.etcd.endpoint}`,
      `--subnet-file=${join(cluster.dir, 'h1.env')}`,
      '--iface=eth0',
      `--healthz-port=${PORT}`,
    ], { FLANNELD_METRICS_ALLOW_FROM: '192.0.2.2' });
    const daemon = allowing;
    await waitFor('the restarted h1 to be ready', async () => {
      if (daemon.child.exitCode !== null) throw new Error(`flanneld exited:\n${daemon.output().slice(-2000)}`);
      return (await get(h2, H1_URL('/readyz'))).code === 200 ? true : undefined;
    }, 30_000, 200);
    expect(daemon.output()).toContain('/metrics and /status to this host and 192.0.2.2');

    expect((await get(h2, H1_URL('/metrics'))).body).toMatch(/^flanneld_ready 1$/m);
    const served = await get(h2, H1_URL('/status'));
    expect(served.code).toBe(200);
    expect((JSON.parse(served.body) as { ready: boolean }).ready).toBe(true);
    // Everyone else still gets the probes and a refusal.
    const h3 = cluster.topology.host('h3').ns;
    expect(await get(h3, H1_URL('/readyz'))).toEqual({ code: 200, body: 'ok\n' });
    expect(await get(h3, H1_URL('/metrics'))).toEqual({ code: 403, body: refusal('/metrics', '192.0.2.3') });
    expect(await get(cluster.topology.hub, H1_URL('/status'))).toEqual({ code: 403, body: refusal('/status', '192.0.2.254') });
    expect((await status(h1)).code).toBe(0);
  });
});
