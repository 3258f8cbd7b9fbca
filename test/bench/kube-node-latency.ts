#!/usr/bin/env node
/**
 * Kubernetes mode on a real control plane (test/helpers/kube-cluster.ts: etcd 3.6, kube-apiserver, node IPAM in
 * kube-controller-manager): how long from a Node being created until every host's flanneld has its route. Three
 * hosts run the real flanneld (vxlan); once each has its subnet and the routes to the other two, 50 Nodes are
 * created one at a time, each only after the previous one's route reached every host (or timed out) and a 50–150 ms
 * pause, so every sample is an isolated event on an otherwise idle cluster. Two more Nodes before them warm the
 * paths up and are not counted. Each carries the annotations of a vxlan peer that does not exist (a VtepMAC of its
 * own, public-ip 192.0.2.100+i, an address no namespace holds; its entries are permanent, so nothing is ever sent).
 *
 * t0 is taken inside the hub, just before a long-lived client writes the POST of the Node on a warm keep-alive HTTPS
 * connection: a kubectl-stamped t0 would also include kubectl's own start-up, measured side by side below, which is
 * the client's cost and not the cluster's. The same client holds a Node watch and stamps when it sees the Node
 * ADDED and when it first sees spec.podCIDR (node IPAM's extra write, which flanneld also has to wait for). t1 is
 * the arrival of the route's `ip monitor` notification in the host namespace (`<podCIDR> via <net> dev flannel.1
 * onlink`), one monitor per host running from before flanneld started. Both sides stamp CLOCK_MONOTONIC (the hub
 * client's hrtime, our performance.now() shifted onto it), so the two processes' stamps compare directly.
 */
import { createInterface } from 'node:readline';
import { request as httpsRequest, Agent, type RequestOptions } from 'node:https';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type BenchContext, benchMain, gapMs, median, ms, now, percentile, sleep, table, timed } from './bench-kit.js';
import { parseKernelLine, startKernelWatch, type KernelWatch } from './kernel-watch.js';
import { FLANNEL_ANNOTATION as P, startKubeCluster, type KubeCluster } from '../helpers/kube-cluster.js';
import { spawnTracked } from '../helpers/processes.js';

const HOSTS = ['h1', 'h2', 'h3'];
const NODES = 50;
const WARMUP = 2;
const NODE_TIMEOUT_MS = 15_000;
const KUBECTL_RUNS = 10;
const NETWORK = '10.244.0.0/16';
const HUB_CLIENT_FLAG = '--hub-client';
const SELF = fileURLToPath(import.meta.url);

/** CLOCK_MONOTONIC in milliseconds (µs resolution), the clock both processes stamp with. */
const mono = (): number => Number(process.hrtime.bigint() / 1000n) / 1000;

// ---------------------------------------------------------------------------------------------------------------
// The hub side: run as `ip netns exec <hub> node kube-node-latency.js --hub-client <admin kubeconfig>`, because the
// apiserver is reachable only from our namespaces. JSON lines on stdin ({id, node}) become POSTs; replies and watch
// events go to stdout as JSON lines carrying their own monotonic stamps, so pipe delays do not count.

interface Kubeconfig {
  readonly clusters: readonly { readonly cluster: { readonly server: string; readonly 'certificate-authority': string } }[];
  readonly users: readonly { readonly user: { readonly token: string } }[];
}

interface WatchEvent {
  readonly type: string;
  readonly object: { readonly metadata?: { readonly name?: string; readonly resourceVersion?: string }; readonly spec?: { readonly podCIDR?: string } };
}

function hubClient(kubeconfigPath: string): void {
  const config = JSON.parse(readFileSync(kubeconfigPath, 'utf8')) as Kubeconfig;
  const server = new URL(config.clusters[0]!.cluster.server);
  const token = config.users[0]!.user.token;
  const agent = new Agent({ keepAlive: true, ca: readFileSync(config.clusters[0]!.cluster['certificate-authority']) });
  const reply = (msg: object): void => void process.stdout.write(`${JSON.stringify(msg)}\n`);
  const options = (method: string, path: string): RequestOptions => ({
    agent, method, path, hostname: server.hostname, port: server.port,
    headers: { 'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json', 'Accept': 'application/json' },
  });
  const call = (method: string, path: string, body?: string): Promise<{ status: number; text: string; sent: number; answered: number }> =>
    new Promise((resolve, reject) => {
      const req = httpsRequest(options(method, path), (res) => {
        const answered = mono();
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, sent, answered }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
      const sent = mono();
      req.end(body);
    });

  const watch = (resourceVersion: string): void => {
    const req = httpsRequest(options('GET', `/api/v1/nodes?watch=true&resourceVersion=${resourceVersion}`), (res) => {
      if (res.statusCode !== 200) {
        reply({ fatal: `node watch answered ${res.statusCode}` });
        return;
      }
      createInterface({ input: res }).on('line', (line) => {
        const at = mono();
        const event = JSON.parse(line) as WatchEvent;
        const name = event.object.metadata?.name ?? '';
        reply({ watch: event.type, name, podCIDR: event.object.spec?.podCIDR, at });
      });
      res.on('end', () => reply({ fatal: 'node watch ended' }));
    });
    req.on('error', (err) => reply({ fatal: `node watch: ${err.message}` }));
    req.end();
  };

  void (async () => {
    // The list both gives the watch its starting point and leaves a warm connection in the agent for the POSTs.
    const list = await call('GET', '/api/v1/nodes');
    if (list.status !== 200) throw new Error(`listing nodes answered ${list.status}: ${list.text.slice(0, 300)}`);
    watch((JSON.parse(list.text) as { metadata: { resourceVersion: string } }).metadata.resourceVersion);
    createInterface({ input: process.stdin })
      .on('line', (line) => {
        const req = JSON.parse(line) as { id: number; node: object };
        call('POST', '/api/v1/nodes', JSON.stringify(req.node)).then(
          (r) => reply(r.status === 201 ? { id: req.id, sent: r.sent, acked: r.answered } : { id: req.id, error: `${r.status} ${r.text.slice(0, 300)}` }),
          (err: unknown) => reply({ id: req.id, error: String(err) }),
        );
      })
      .on('close', () => process.exit(0));
    reply({ ready: true });
  })().catch((err: unknown) => {
    process.stderr.write(`hub client: ${String(err)}\n`);
    process.exit(1);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The benchmark side.

interface NodeSeen {
  added?: number;
  podCIDR?: string;
  cidrAt?: number;
}

interface HubClient {
  /** Creates the Node; resolves with the client's send and 201 stamps (monotonic ms). */
  create(node: object): Promise<{ sent: number; acked: number }>;
  /** What the hub's Node watch showed of each Node so far, by name. */
  readonly seen: ReadonlyMap<string, NodeSeen>;
  /** Throws if the client died or its watch ended. */
  check(): void;
  stop(): Promise<void>;
}

async function startHubClient(ctx: BenchContext, cluster: KubeCluster): Promise<HubClient> {
  const proc = spawnTracked('ip', ['netns', 'exec', cluster.topology.hub.name, process.execPath, SELF, HUB_CLIENT_FLAG, cluster.files.adminKubeconfig],
    { stdio: ['pipe', 'pipe', 'pipe'] }, SELF);
  const stop = async (): Promise<void> => {
    proc.child.stdin?.end();
    await proc.stop('SIGTERM', 3000);
  };
  ctx.defer(stop);
  const pending = new Map<number, { resolve: (v: { sent: number; acked: number }) => void; reject: (err: Error) => void }>();
  const seen = new Map<string, NodeSeen>();
  let fatal: string | undefined;
  let ready: (() => void) | undefined;
  const readyP = new Promise<void>((r) => (ready = r));
  createInterface({ input: proc.child.stdout! }).on('line', (line) => {
    const msg = JSON.parse(line) as { ready?: boolean; fatal?: string; id?: number; sent?: number; acked?: number; error?: string; watch?: string; name?: string; podCIDR?: string; at?: number };
    if (msg.ready) ready?.();
    if (msg.fatal !== undefined) fatal = msg.fatal;
    if (msg.watch !== undefined && msg.name !== undefined && msg.at !== undefined) {
      const s = seen.get(msg.name) ?? {};
      if (msg.watch === 'ADDED') s.added ??= msg.at;
      if (msg.podCIDR && s.cidrAt === undefined) {
        s.podCIDR = msg.podCIDR;
        s.cidrAt = msg.at;
      }
      seen.set(msg.name, s);
    }
    if (msg.id === undefined) return;
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error !== undefined || msg.sent === undefined || msg.acked === undefined) p?.reject(new Error(`creating a Node: ${msg.error}`));
    else p?.resolve({ sent: msg.sent, acked: msg.acked });
  });
  const why = (): string => proc.output().split('\n').filter((l) => !l.startsWith('{')).join('\n').slice(-500);
  void proc.exited.then((code) => {
    fatal ??= `hub client exited with ${code}: ${why()}`;
    for (const p of pending.values()) p.reject(new Error(fatal));
    pending.clear();
  });
  await Promise.race([
    readyP,
    proc.exited.then((code) => Promise.reject(new Error(`hub client exited with ${code}: ${why()}`))),
    new Promise((_, reject) => setTimeout(() => reject(new Error('hub client not ready in 15 s')), 15_000).unref()),
  ]);
  let nextId = 1;
  return {
    create(node) {
      const id = nextId++;
      const done = new Promise<{ sent: number; acked: number }>((resolve, reject) => pending.set(id, { resolve, reject }));
      proc.child.stdin!.write(`${JSON.stringify({ id, node })}\n`);
      return done;
    },
    seen,
    check() {
      if (fatal !== undefined) throw new Error(fatal);
    },
    stop,
  };
}

/** First arrival (monotonic ms) of each route, neighbour and FDB entry on flannel.1 in one host, keyed "<kind> <key>". */
function recordEntries(watch: KernelWatch, offset: number): Map<string, number> {
  const first = new Map<string, number>();
  watch.subscribe((line) => {
    const parsed = parseKernelLine(line.text);
    if (!parsed || parsed.deleted) return;
    const key = `${parsed.kind} ${parsed.key}`;
    if (!first.has(key)) first.set(key, line.at + offset);
  });
  return first;
}

/** Polls in-memory state only (no system calls), so a short interval costs nothing the measurement would see. */
async function until<T>(what: string, check: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

const mean = (v: readonly number[]): number => (v.length === 0 ? Number.NaN : v.reduce((a, b) => a + b, 0) / v.length);
const statCells = (v: readonly number[]): string[] => [String(v.length), ms(percentile(v, 50)), ms(percentile(v, 99)), ms(v.length ? Math.max(...v) : Number.NaN), ms(mean(v))];


const peerNode = (i: number): { name: string; mac: string; publicIp: string; node: object } => {
  const name = `bench-${String(i).padStart(3, '0')}`;
  const mac = `0a:00:00:00:01:${i.toString(16).padStart(2, '0')}`;
  const publicIp = `192.0.2.${100 + i}`;
  return {
    name, mac, publicIp,
    node: {
      apiVersion: 'v1', kind: 'Node',
      metadata: {
        name,
        annotations: {
          [`${P}kube-subnet-manager`]: 'true', [`${P}backend-type`]: 'vxlan',
          [`${P}backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: mac }), [`${P}public-ip`]: publicIp,
        },
      },
    },
  };
};

interface Sample {
  readonly name: string;
  readonly sent: number;
  readonly acked: number;
  readonly added?: number;
  readonly cidrAt?: number;
  /** Route arrival per host; undefined where it did not arrive in time. */
  readonly routes: readonly (number | undefined)[];
  /** Arrival of the last of route, neighbour and FDB entry per host. */
  readonly entries: readonly (number | undefined)[];
}

function benchmark(): void {
  benchMain({
    tag: 'kn',
    title: `Kubernetes mode: Node creation → route on every peer (${HOSTS.length} hosts, ${NODES} Nodes, real control plane)`,
    deadlineMs: 200_000,
    body: async (ctx) => {
      let cluster: KubeCluster | undefined;
      ctx.defer(async () => cluster?.stop());
      cluster = await startKubeCluster(ctx.run, { hosts: HOSTS.length, netConf: { Network: NETWORK, Backend: { Type: 'vxlan' } } });
      const c = cluster;
      ctx.note('control plane up');
      // performance.now() and hrtime are both CLOCK_MONOTONIC; the smallest of a few differences is the offset.
      const offset = Math.min(...Array.from({ length: 5 }, () => mono() - now()));

      const hosts = HOSTS.map((h) => c.topology.host(h));
      const watches: KernelWatch[] = [];
      for (const h of hosts) {
        const w = await startKernelWatch(h.ns);
        ctx.defer(() => w.stop());
        watches.push(w);
      }
      const entries = watches.map((w) => recordEntries(w, offset));
      for (const h of HOSTS) {
        await c.registerNode(h);
        c.start(h);
      }
      const hostCidr: string[] = [];
      for (const h of HOSTS) {
        await c.waitForSubnetEnv(h, 60_000);
        hostCidr.push((await c.node(h))?.spec?.podCIDR ?? '');
      }
      await until('every host to route to the other hosts', () =>
        entries.every((e, i) => hostCidr.every((cidr, j) => i === j || e.has(`route ${cidr}`))) ? true : undefined, 30_000);
      ctx.note(`flanneld up on ${HOSTS.join(', ')} (${hostCidr.join(', ')}), full mesh of routes`);

      const client = await startHubClient(ctx, c);
      const samples: Sample[] = [];
      const warm: Sample[] = [];
      const missed: string[] = [];
      for (let i = 0; i < WARMUP + NODES; i++) {
        if (ctx.remainingMs() < 40_000) {
          ctx.note(`stopping after ${samples.length} Nodes: deadline near`);
          break;
        }
        client.check();
        const p = peerNode(i);
        const { sent, acked } = await client.create(p.node);
        const network = (cidr: string): string => cidr.replace(/\/\d+$/, '');
        const allIn = (): boolean | undefined => {
          const cidr = client.seen.get(p.name)?.podCIDR;
          if (cidr === undefined) return undefined;
          const keys = [`route ${cidr}`, `neigh ${network(cidr)}`, `fdb ${p.mac} ${p.publicIp}`];
          return entries.every((e) => keys.every((k) => e.has(k))) ? true : undefined;
        };
        const landed = await until(`${p.name} on every host`, allIn, NODE_TIMEOUT_MS).catch(() => false);
        const s = client.seen.get(p.name) ?? {};
        const cidr = s.podCIDR;
        const sample: Sample = {
          name: p.name, sent, acked,
          ...(s.added !== undefined ? { added: s.added } : {}),
          ...(s.cidrAt !== undefined ? { cidrAt: s.cidrAt } : {}),
          routes: entries.map((e) => (cidr === undefined ? undefined : e.get(`route ${cidr}`))),
          entries: entries.map((e) => {
            if (cidr === undefined) return undefined;
            const at = [e.get(`route ${cidr}`), e.get(`neigh ${network(cidr)}`), e.get(`fdb ${p.mac} ${p.publicIp}`)];
            return at.every((t) => t !== undefined) ? Math.max(...(at as number[])) : undefined;
          }),
        };
        if (!landed) missed.push(`${p.name} (${cidr ?? 'no podCIDR'})`);
        (i < WARMUP ? warm : samples).push(sample);
        await sleep(gapMs(i, 50, 150));
      }
      client.check();
      for (const h of HOSTS) {
        const d = c.daemon(h);
        if (d && d.child.exitCode !== null) throw new Error(`flanneld on ${h} exited during the measurement: ${d.output().slice(-2000)}`);
      }
      if (watches.some((w) => w.overran())) throw new Error('an ip monitor overran; arrival stamps are incomplete');

      ctx.note('kubectl side by side');
      const kubectlClient = await timed(KUBECTL_RUNS, () => c.kubectl.run(['version', '--client', '-o', 'json']));
      const kubectlReadyz = await timed(KUBECTL_RUNS, () => c.kubectl.run(['get', '--raw', '/readyz']));
      const versions = JSON.parse(await c.kubectl.run(['version', '-o', 'json'])) as { clientVersion?: { gitVersion?: string }; serverVersion?: { gitVersion?: string } };
      const etcdVersion = /etcd Version: (\S+)/.exec(await c.topology.hub.exec(c.spec.tools.etcd, ['--version']))?.[1] ?? 'unknown';
      const nodeCount = (await c.kubectl.nodes()).length;

      const of = (f: (s: Sample) => number | undefined): number[] => samples.map(f).filter((v): v is number => v !== undefined && Number.isFinite(v));
      const lastOf = (v: readonly (number | undefined)[]): number | undefined => (v.every((t) => t !== undefined) ? Math.max(...(v as number[])) : undefined);
      const firstOf = (v: readonly (number | undefined)[]): number | undefined => {
        const got = v.filter((t): t is number => t !== undefined);
        return got.length ? Math.min(...got) : undefined;
      };
      const minus = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || b === undefined ? undefined : a - b);
      const perHost = samples.flatMap((s) => s.routes.map((r) => minus(r, s.cidrAt))).filter((v): v is number => v !== undefined);
      const primary = of((s) => minus(lastOf(s.routes), s.sent));
      ctx.note(`${primary.length}/${samples.length} Nodes routed on every host; p50 ${ms(percentile(primary, 50))}, p99 ${ms(percentile(primary, 99))}`);

      const head = ['measure', 'samples', 'p50', 'p99', 'max', 'mean'];
      const main = table(head, [
        ['floor: apiserver answers the POST (201), warm connection in the hub', ...statCells(of((s) => s.acked - s.sent))],
        ['floor: a Node watch in the hub sees it ADDED', ...statCells(of((s) => minus(s.added, s.sent)))],
        ['node IPAM: the watch in the hub sees spec.podCIDR', ...statCells(of((s) => minus(s.cidrAt, s.sent)))],
        ['create → route on the first host', ...statCells(of((s) => minus(firstOf(s.routes), s.sent)))],
        ['**create → route on every host**', ...statCells(primary)],
        ['create → route, neighbour and FDB entry on every host', ...statCells(of((s) => minus(lastOf(s.entries), s.sent)))],
      ]);
      const shares = table(head, [
        ['node IPAM: ADDED → podCIDR (its watch, allocation and write)', ...statCells(of((s) => minus(s.cidrAt, s.added)))],
        ['flanneld: podCIDR seen in the hub → route, each host', ...statCells(perHost)],
        ['flanneld: podCIDR seen in the hub → route on every host', ...statCells(of((s) => minus(lastOf(s.routes), s.cidrAt)))],
      ]);
      const clients = table(['client cost, not in t0 (kubectl in the hub namespace, via `ip netns exec`)', 'runs', 'median', 'p99'], [
        ['`kubectl version --client` (start-up, no request)', String(kubectlClient.length), ms(median(kubectlClient)), ms(percentile(kubectlClient, 99))],
        ['`kubectl get --raw /readyz` (start-up, TLS handshake, one request)', String(kubectlReadyz.length), ms(median(kubectlReadyz)), ms(percentile(kubectlReadyz, 99))],
      ]);
      // By means, not per Node: the hub's watch and flanneld's get the same event, and whichever process is scheduled
      // first stamps first, so a single Node's podCIDR can look later than its route.
      const ipamMean = mean(of((s) => minus(s.cidrAt, s.sent)));
      const share = `node IPAM (create → podCIDR seen) is ${(100 * ipamMean / mean(primary)).toFixed(0)} % of the mean create → route on every host ` +
        `(${ms(ipamMean)} of ${ms(mean(primary))}); the rest is flanneld's watch event, its programming and the kernel.`;
      const warmText = warm.map((s) => `${s.name} ${ms(minus(lastOf(s.routes), s.sent) ?? Number.NaN)}`).join(', ');
      const notes = [
        `Versions: kube-apiserver ${versions.serverVersion?.gitVersion ?? 'unknown'}, kubectl ${versions.clientVersion?.gitVersion ?? 'unknown'}, ` +
          `etcd ${etcdVersion}, Node ${process.version}; flanneld from this tree (vxlan, --kube-subnet-mgr).`,
        `Cluster: ${HOSTS.length} hosts running flanneld, then ${WARMUP} warm-up Nodes (not counted: ${warmText}) and ${samples.length} measured Nodes, ` +
          `${nodeCount} Nodes at the end; each Node created after the previous one reached every host, 50–150 ms apart.`,
        't0: just before the hub client writes the POST on a warm keep-alive HTTPS connection (no kubectl start-up, see the last table). ' +
          't1: arrival of the route\'s `ip monitor` notification in the host namespace. podCIDR and ADDED: arrival of the watch event at the hub client ' +
          '(flanneld\'s own watch gets the same event over the underlay, so "podCIDR → route" is flanneld\'s share give or take scheduling). p99 is by nearest rank: over 50 samples it is the maximum.',
        share,
        `Nodes not on every host within ${NODE_TIMEOUT_MS / 1000} s: ${missed.length}${missed.length ? ` (${missed.slice(0, 5).join(', ')})` : ''}.`,
      ];
      return `${main}\n\n${shares}\n\n${clients}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
    },
  });
}

if (process.argv[2] === HUB_CLIENT_FLAG) hubClient(process.argv[3] ?? '');
else benchmark();
