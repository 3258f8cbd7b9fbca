#!/usr/bin/env node
/**
 * Repair latency with 5000 vxlan peers programmed: a peer route deleted by hand (through a persistent `ip -batch`
 * in the host namespace) until flanneld has put it back, 100 times, both ends seen by `ip monitor`. Floor, same
 * run: a reference repairer in a namespace holding the same 15000 entries, which re-adds the route through a
 * persistent `ip -batch` the moment `ip monitor` reports the deletion. Upstream flannel's flanneld gets the same
 * deletions on a host of its own, fewer of them: it programs a route once per lease event and never looks again, so
 * each of its samples waits out the timeout, and the table says how many came back.
 */
import { benchMain, benchPeers, gapMs, latencyCells, ms, now, percentile, sleep, table, type BenchContext } from './bench-kit.js';
import { batchFloor, startIpBatch, type IpBatch } from './floors.js';
import { startKernelWatch, type KernelWatch } from './kernel-watch.js';
import { describeCrashes, startLoadedHub, startProgrammedDaemon, type DaemonKind, type DaemonRun, type LoadedHub } from './loaded-host.js';
import type { Host } from '../helpers/topology.js';
import type { PeerLease } from './peer-leases.js';

const PEERS = benchPeers();
const DELETIONS = 100;
/** Upstream's deletions: enough to show whether it repairs, few enough that waiting out each timeout stays short. */
const UPSTREAM_DELETIONS = 10;
const TIMEOUT_MS = 3000;

interface RepairSample {
  /** From the deletion's notification to the re-added route's. */
  readonly repair: number[];
  /** From writing the deletion to the re-added route's notification. */
  readonly fromIssue: number[];
  readonly missed: string[];
}

/** Deletes each victim's route and waits for it to come back; `repairer` (if any) re-adds it when told of the deletion. */
async function measureRepairs(ctx: BenchContext, watch: KernelWatch, batch: IpBatch, victims: readonly PeerLease[], repairer?: IpBatch): Promise<RepairSample> {
  const out: RepairSample = { repair: [], fromIssue: [], missed: [] };
  for (const [i, p] of victims.entries()) {
    if (ctx.remainingMs() < 30_000) break;
    const deletedLine = `Deleted ${p.subnet} via`;
    const off = repairer
      ? watch.subscribe((line) => {
          if (line.text.startsWith(deletedLine)) repairer.send(`route replace ${p.subnet} via ${p.gateway} dev flannel.1 onlink`);
        })
      : () => undefined;
    const deleted = watch.waitLine((t) => t.startsWith(deletedLine), TIMEOUT_MS, `deletion of ${p.subnet}`).catch(() => undefined);
    const back = watch.waitLine((t) => t.startsWith(`${p.subnet} via`), TIMEOUT_MS, `repair of ${p.subnet}`).catch(() => undefined);
    const sent = batch.send(`route del ${p.subnet}`);
    const [deletedAt, backAt] = await Promise.all([deleted, back]);
    off();
    if (deletedAt !== undefined && backAt !== undefined) {
      out.repair.push(backAt - deletedAt);
      out.fromIssue.push(backAt - sent);
    } else {
      out.missed.push(p.subnet);
    }
    await sleep(gapMs(i, 10, 40));
  }
  return out;
}

interface Repairs {
  readonly sample: RepairSample;
  readonly daemon: DaemonRun;
  /** Of the routes not back within the timeout, those still missing when the daemon's deletions were over. */
  readonly stillMissing: number;
  readonly checkedAfterMs: number;
}

/** A daemon of `kind` on `host` with every peer programmed, then `victims` deleted one by one under it. */
async function repairsBy(ctx: BenchContext, hub: LoadedHub, host: Host, kind: DaemonKind, victims: readonly PeerLease[]): Promise<Repairs> {
  const watch = await startKernelWatch(host.ns);
  ctx.defer(() => watch.stop());
  const daemon = await startProgrammedDaemon(ctx, hub, host, watch, PEERS, 90_000, { daemon: kind });
  ctx.note(`${kind} flanneld programmed ${PEERS} peers in ${ms(daemon.reached.at - daemon.spawnedAt)} (crashes: ${describeCrashes(daemon.crashes)})`);
  await sleep(500);
  const firstDeletion = now();
  const sample = await measureRepairs(ctx, watch, startIpBatch(ctx, host.ns), victims);
  if (daemon.proc.child.exitCode !== null) throw new Error(`${kind} flanneld exited during the measurement: ${daemon.proc.output().slice(-2000)}`);
  ctx.note(`${kind}: p50 ${ms(percentile(sample.repair, 50))}, p99 ${ms(percentile(sample.repair, 99))}, missed ${sample.missed.length}`);
  let stillMissing = 0;
  for (const subnet of sample.missed) if ((await host.ns.ip('route', 'show', 'exact', subnet)).trim() === '') stillMissing++;
  return { sample, daemon, stillMissing, checkedAfterMs: now() - firstDeletion };
}

benchMain({
  tag: 'rp',
  title: `Repair latency with ${PEERS} vxlan peers, ours and upstream's`,
  deadlineMs: 230_000,
  body: async (ctx) => {
    const hub = await startLoadedHub(ctx, 2, PEERS);
    const victims = Array.from({ length: DELETIONS }, (_, k) => hub.peers[(k * 49 + 7) % PEERS]!);

    const floor = await batchFloor(ctx, 'floor', hub.peers, hub.dir);
    const floorSample = await measureRepairs(ctx, floor.watch, startIpBatch(ctx, floor.ns), victims, startIpBatch(ctx, floor.ns));
    ctx.note(`reference repairer: p50 ${ms(percentile(floorSample.repair, 50))}, p99 ${ms(percentile(floorSample.repair, 99))}`);

    const { sample, daemon } = await repairsBy(ctx, hub, hub.topology.hosts[0]!, 'ours', victims);
    const upstream = await repairsBy(ctx, hub, hub.topology.hosts[1]!, 'upstream', victims.slice(0, UPSTREAM_DELETIONS));

    const main = table(['measure', 'samples', 'p50', 'p99', 'max', 'p50 × floor', 'p99 × floor'], [
      ['floor: reference repairer (`ip monitor` → persistent `ip -batch`), deletion → route back', String(floorSample.repair.length), ...latencyCells(floorSample.repair, floorSample.repair)],
      ['flanneld: deletion → route back', String(sample.repair.length), ...latencyCells(sample.repair, floorSample.repair)],
      ['flanneld: `route del` written → route back', String(sample.fromIssue.length), ...latencyCells(sample.fromIssue, floorSample.fromIssue)],
      [`upstream flanneld: deletion → route back (${upstream.sample.missed.length} of ${UPSTREAM_DELETIONS} not back within ${TIMEOUT_MS} ms)`,
        String(upstream.sample.repair.length), ...(upstream.sample.repair.length > 0 ? latencyCells(upstream.sample.repair, floorSample.repair) : ['never', 'never', 'never', '', ''])],
    ]);
    const notes = [
      `${DELETIONS} distinct peer routes deleted one at a time, 10–40 ms apart; both ends are \`ip monitor\` notifications in the namespace. ` +
        `flanneld had programmed ${PEERS} peers first (crashes while doing so, restarted at once: ${describeCrashes(daemon.crashes)}).`,
      `Not repaired within ${TIMEOUT_MS} ms: flanneld ${sample.missed.length}, reference repairer ${floorSample.missed.length}. ` +
        'The third row is against the reference repairer\'s own write → back time.',
      `Upstream flanneld (same flags, its own host namespace, the first ${UPSTREAM_DELETIONS} of the same victims after programming ${PEERS} peers ` +
        `in ${ms(upstream.daemon.reached.at - upstream.daemon.spawnedAt)}): ${upstream.sample.missed.length} of ${UPSTREAM_DELETIONS} routes still missing ` +
        `${TIMEOUT_MS} ms after their deletion, ${upstream.stillMissing} still missing ${ms(upstream.checkedAfterMs)} after the first deletion: ` +
        'upstream programs a route on a lease event only, so it comes back when that peer\'s lease changes or the daemon restarts.',
    ];
    return `${main}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
