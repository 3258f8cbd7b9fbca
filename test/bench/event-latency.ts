#!/usr/bin/env node
/**
 * Lease event → route latency with 5000 vxlan peers already programmed, ours and upstream flannel's flanneld side by
 * side on two hosts: a new lease is put into etcd (from inside the hub) and timed until its route shows up in each
 * host's kernel, 200 times; both daemons react to the same puts. Floors on the same puts: etcd acknowledging the put,
 * and `etcdctl watch` in a host namespace seeing it; and the kernel floor of one route written through a persistent
 * `ip -batch` in a namespace with the same 15000 entries.
 */
import { benchMain, benchPeers, gapMs, latencyCells, ms, percentile, ratio, sleep, table, verdict, type BenchContext } from './bench-kit.js';
import { batchFloor, routeAddFloor } from './floors.js';
import { startKernelWatch, type KernelWatch } from './kernel-watch.js';
import { startLeaseStream } from './lease-stream.js';
import { daemonSubnet, describeCrashes, startLoadedHub, startProgrammedDaemon, type DaemonKind, type DaemonRun, type LoadedHub } from './loaded-host.js';
import { peerLeases } from './peer-leases.js';

const PEERS = benchPeers();
const EVENTS = 200;
const TIMEOUT_MS = 2000;
const TARGET_P99_MS = 50;

interface Watched {
  readonly kind: DaemonKind;
  readonly daemon: DaemonRun;
  readonly watch: KernelWatch;
  readonly routes: number[];
  readonly missed: string[];
}

/** A daemon of `kind` on the hub's `index`th host, with every peer programmed and its kernel watched. */
async function programmed(ctx: BenchContext, hub: LoadedHub, index: number, kind: DaemonKind): Promise<Watched> {
  const host = hub.topology.hosts[index]!;
  const watch = await startKernelWatch(host.ns);
  ctx.defer(() => watch.stop());
  const daemon = await startProgrammedDaemon(ctx, hub, host, watch, PEERS, 90_000, { daemon: kind });
  ctx.note(`${kind} flanneld programmed ${PEERS} peers in ${ms(daemon.reached.at - daemon.spawnedAt)} (crashes: ${describeCrashes(daemon.crashes)})`);
  return { kind, daemon, watch, routes: [], missed: [] };
}

benchMain({
  tag: 'ev',
  title: `Lease event → route latency with ${PEERS} vxlan peers, ours and upstream's`,
  deadlineMs: 230_000,
  body: async (ctx) => {
    const hub = await startLoadedHub(ctx, 2, PEERS);
    const floor = await batchFloor(ctx, 'floor', hub.peers, hub.dir);
    const daemons = [await programmed(ctx, hub, 0, 'ours'), await programmed(ctx, hub, 1, 'upstream')];
    const stream = await startLeaseStream(hub.topology.hosts[0]!.ns, hub.etcd.endpoint, hub.writer);
    ctx.defer(() => stream.stop());
    await sleep(500);

    const acks: number[] = [];
    const watched: number[] = [];
    const events = peerLeases(EVENTS, PEERS, new Set(daemons.map((d) => daemonSubnet(d.daemon))));
    for (const [i, p] of events.entries()) {
      if (ctx.remainingMs() < 60_000) break;
      const routes = daemons.map((d) => d.watch.waitLine((t) => t.startsWith(`${p.subnet} via`), TIMEOUT_MS, `route ${p.subnet}`).catch(() => undefined));
      const seen = stream.waitKey(p.key, TIMEOUT_MS).catch(() => undefined);
      const put = hub.writer.putOne(p.key, p.value);
      const [ackAt, seenAt, ...routeAts] = await Promise.all([put.acked, seen, ...routes]);
      acks.push(ackAt - put.sent);
      if (seenAt !== undefined) watched.push(seenAt - put.sent);
      for (const [k, d] of daemons.entries()) {
        const at = routeAts[k];
        if (at !== undefined) d.routes.push(at - put.sent);
        else d.missed.push(p.subnet);
      }
      await sleep(gapMs(i, 10, 40));
    }
    for (const d of daemons) {
      if (d.daemon.proc.child.exitCode !== null) throw new Error(`${d.kind} flanneld exited during the measurement: ${d.daemon.proc.output().slice(-2000)}`);
      ctx.note(`${d.kind}: ${d.routes.length}/${acks.length} routes seen; p50 ${ms(percentile(d.routes, 50))}, p99 ${ms(percentile(d.routes, 99))}`);
    }
    const kernel = await routeAddFloor(ctx, floor, EVENTS, 5);
    return report(acks, watched, kernel, daemons);
  },
});

function report(acks: readonly number[], watched: readonly number[], kernel: readonly number[], daemons: readonly Watched[]): string {
  const [ours, upstream] = daemons as [Watched, Watched];
  const p99 = percentile(ours.routes, 99);
  const ok = ours.missed.length === 0 && p99 < TARGET_P99_MS;
  const ahead = (p: number): boolean => percentile(ours.routes, p) < percentile(upstream.routes, p);
  const main = table(['measure', 'samples', 'p50', 'p99', 'max', 'p50 × floor', 'p99 × floor', 'target', 'verdict'], [
    ['floor: `etcdctl watch` in a host namespace sees the put', String(watched.length), ...latencyCells(watched, watched), '', ''],
    ['floor: etcd acknowledges the put (writer in the hub)', String(acks.length), ...latencyCells(acks, watched), '', ''],
    ['floor: one route through a persistent `ip -batch`, seen by `ip monitor`', String(kernel.length), ...latencyCells(kernel, watched), '', ''],
    ['upstream flanneld: put → route in its host\'s kernel', String(upstream.routes.length), ...latencyCells(upstream.routes, watched), '', ''],
    ['**flanneld-ts: put → route in its host\'s kernel**', String(ours.routes.length), ...latencyCells(ours.routes, watched), `p99 < ${TARGET_P99_MS} ms`, verdict(ok)],
    ['flanneld-ts / upstream', '', ratio(percentile(ours.routes, 50), percentile(upstream.routes, 50)), ratio(p99, percentile(upstream.routes, 99)), '', '', '',
      'p50 and p99 < 1.00×', verdict(ahead(50) && ahead(99))],
  ]);
  const crashes = daemons.map((d) => `${d.kind} ${describeCrashes(d.daemon.crashes)}`).join(', ');
  const notes = [
    `${acks.length} new leases, one at a time, 10–40 ms apart; both daemons (same flags, one host namespace each) had already programmed ${PEERS} ` +
      `peers and react to the same puts (crashes while programming, restarted at once: ${crashes}).`,
    `Ratios are against the \`etcdctl watch\` floor. Routes not seen within ${TIMEOUT_MS} ms: ` +
      daemons.map((d) => `${d.kind} ${d.missed.length}${d.missed.length ? ` (${d.missed.slice(0, 3).join(', ')}…)` : ''}`).join(', ') + '.',
  ];
  return `${main}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
}
