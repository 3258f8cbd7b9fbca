#!/usr/bin/env node
/**
 * Lease event → route latency with 5000 vxlan peers already programmed on a host: a new lease is put into etcd
 * (from inside the hub) and timed until its route shows up in the host's kernel, 200 times. Floors on the same
 * puts: etcd acknowledging the put, and `etcdctl watch` in the host namespace seeing it; and the kernel floor of
 * one route written through a persistent `ip -batch` in a namespace with the same 15000 entries.
 */
import { benchMain, benchPeers, gapMs, latencyCells, ms, percentile, sleep, table, verdict } from './bench-kit.js';
import { batchFloor, routeAddFloor } from './floors.js';
import { startKernelWatch } from './kernel-watch.js';
import { startLeaseStream } from './lease-stream.js';
import { daemonSubnet, describeCrashes, startLoadedHub, startProgrammedDaemon } from './loaded-host.js';
import { peerLeases } from './peer-leases.js';

const PEERS = benchPeers();
const EVENTS = 200;
const TIMEOUT_MS = 2000;
const TARGET_P99_MS = 50;

benchMain({
  tag: 'ev',
  title: `Lease event → route latency with ${PEERS} vxlan peers`,
  deadlineMs: 175_000,
  body: async (ctx) => {
    const hub = await startLoadedHub(ctx, 1, PEERS);
    const host = hub.topology.hosts[0]!;
    const floor = await batchFloor(ctx, 'floor', hub.peers, hub.dir);
    const watch = await startKernelWatch(host.ns);
    ctx.defer(() => watch.stop());
    const daemon = await startProgrammedDaemon(ctx, hub, host, watch, PEERS, 60_000);
    ctx.note(`flanneld programmed ${PEERS} peers in ${ms(daemon.reached.at - daemon.spawnedAt)} (crashes: ${describeCrashes(daemon.crashes)})`);
    const stream = await startLeaseStream(host.ns, hub.etcd.endpoint, hub.writer);
    ctx.defer(() => stream.stop());
    await sleep(500);

    const acks: number[] = [];
    const watched: number[] = [];
    const routes: number[] = [];
    const missed: string[] = [];
    const events = peerLeases(EVENTS, PEERS, new Set([daemonSubnet(daemon)]));
    for (const [i, p] of events.entries()) {
      if (ctx.remainingMs() < 60_000) break;
      const route = watch.waitLine((t) => t.startsWith(`${p.subnet} via`), TIMEOUT_MS, `route ${p.subnet}`).catch(() => undefined);
      const seen = stream.waitKey(p.key, TIMEOUT_MS).catch(() => undefined);
      const put = hub.writer.putOne(p.key, p.value);
      const [ackAt, routeAt, seenAt] = await Promise.all([put.acked, route, seen]);
      acks.push(ackAt - put.sent);
      if (seenAt !== undefined) watched.push(seenAt - put.sent);
      if (routeAt !== undefined) routes.push(routeAt - put.sent);
      else missed.push(p.subnet);
      await sleep(gapMs(i, 10, 40));
    }
    if (daemon.proc.child.exitCode !== null) throw new Error(`flanneld exited during the measurement: ${daemon.proc.output().slice(-2000)}`);
    ctx.note(`${routes.length}/${acks.length} routes seen; p50 ${ms(percentile(routes, 50))}, p99 ${ms(percentile(routes, 99))}`);
    const kernel = await routeAddFloor(ctx, floor, EVENTS, 5);

    const p99 = percentile(routes, 99);
    const ok = missed.length === 0 && p99 < TARGET_P99_MS;
    const main = table(['measure', 'samples', 'p50', 'p99', 'max', 'p50 × floor', 'p99 × floor', 'target', 'verdict'], [
      ['floor: `etcdctl watch` in the host namespace sees the put', String(watched.length), ...latencyCells(watched, watched), '', ''],
      ['floor: etcd acknowledges the put (writer in the hub)', String(acks.length), ...latencyCells(acks, watched), '', ''],
      ['floor: one route through a persistent `ip -batch`, seen by `ip monitor`', String(kernel.length), ...latencyCells(kernel, watched), '', ''],
      ['flanneld: put → route in the host kernel', String(routes.length), ...latencyCells(routes, watched), `p99 < ${TARGET_P99_MS} ms`, verdict(ok)],
    ]);
    const notes = [
      `${acks.length} new leases, one at a time, 10–40 ms apart, on a host whose flanneld already programmed ${PEERS} peers ` +
        `(crashes while programming them, restarted at once: ${describeCrashes(daemon.crashes)}).`,
      `Ratios are against the \`etcdctl watch\` floor. Routes not seen within ${TIMEOUT_MS} ms: ${missed.length}${missed.length ? ` (${missed.slice(0, 5).join(', ')}…)` : ''}.`,
    ];
    return `${main}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
