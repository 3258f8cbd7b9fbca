#!/usr/bin/env node
/**
 * Cold start with 5000 vxlan peers, ours against upstream flannel's flanneld (v0.28.9, built by tools/build.sh):
 * from spawning the daemon in a fresh host namespace until all 15000 peer entries (routes, permanent neighbours, FDB
 * entries on flannel.1) are in its kernel, spawn → subnet.env written, and the daemon's peak RSS. Floors, measured
 * in the same run: the same entries through `ip -batch` + `bridge -batch` in a fresh namespace with an equivalent
 * flannel.1, and `node -e 0` in the host namespace. Three runs, each with one daemon of each kind on a host namespace
 * of its own, the order alternating per run so drift hits both alike.
 */
import { benchMain, benchPeers, mb, median, ms, now, ratio, sleep, table, verdict, type BenchContext } from './bench-kit.js';
import { batchFloor, nodeStartFloor } from './floors.js';
import { countEntries, startKernelWatch } from './kernel-watch.js';
import { daemonSubnet, describeCrashes, memoryOf, startLoadedHub, startProgrammedDaemon, type DaemonCrash, type DaemonKind, type LoadedHub } from './loaded-host.js';
import { ETCD_PREFIX } from './peer-leases.js';
import type { Host } from '../helpers/topology.js';

const PEERS = benchPeers();
const RUNS = 3;
const TARGET_RATIO = 3;
const TARGET_MS = 1000;
const TARGET_RSS_KIB = 120 * 1024;
/** Ours against upstream's: ahead on time, and peak RSS at most this multiple of upstream's. */
const TARGET_RSS_VS_UPSTREAM = 1.5;
const KINDS: readonly DaemonKind[] = ['ours', 'upstream'];

interface DaemonResult {
  readonly ms: number;
  readonly envMs: number;
  readonly hwmKiB: number;
  readonly phases: Map<string, number>;
  readonly via: string;
  readonly crashes: readonly DaemonCrash[];
}

interface RunResult {
  readonly floorMs: number;
  readonly floorBatchMs: number;
  readonly nodeMs: number;
  readonly ours: DaemonResult;
  readonly upstream: DaemonResult;
}

/** One daemon's cold start on `host`; afterwards the store holds only the synthetic peers and the host's kernel is empty again. */
async function coldStart(ctx: BenchContext, hub: LoadedHub, host: Host, kind: DaemonKind): Promise<DaemonResult> {
  const watch = await startKernelWatch(host.ns);
  ctx.defer(() => watch.stop());
  const daemon = await startProgrammedDaemon(ctx, hub, host, watch, PEERS, 60_000, { daemon: kind });
  await sleep(1000);
  const { hwmKiB } = memoryOf(daemon.proc.pid);
  const counts = await countEntries(host.ns);
  if (counts.route !== PEERS || counts.neigh !== PEERS || counts.fdb !== PEERS) {
    throw new Error(`${host.name} (${kind}) holds ${counts.route}/${counts.neigh}/${counts.fdb} routes/neighbours/fdb, expected ${PEERS} each`);
  }
  await watch.stop();
  const stopped = now();
  await daemon.proc.stop('SIGTERM', 3000);
  if (now() - stopped > 2500) ctx.note(`${kind} flanneld on ${host.name} took ${ms(now() - stopped)} to stop`);
  await hub.writer.del([`${ETCD_PREFIX}/subnets/${daemonSubnet(daemon).replace('/', '-')}`]);
  await host.ns.ip('link', 'del', 'flannel.1');
  return {
    ms: daemon.reached.at - daemon.spawnedAt, envMs: daemon.subnetFileAt - daemon.spawnedAt, hwmKiB,
    phases: daemon.firstPhases, via: daemon.reached.via, crashes: daemon.crashes,
  };
}

benchMain({
  tag: 'cs',
  title: `Cold start with ${PEERS} vxlan peers, ours and upstream's`,
  deadlineMs: 230_000,
  body: async (ctx) => {
    const hub = await startLoadedHub(ctx, KINDS.length * RUNS, PEERS);
    const results: RunResult[] = [];
    for (let k = 0; k < RUNS; k++) {
      const floor = await batchFloor(ctx, `floor${k + 1}`, hub.peers, hub.dir);
      await floor.watch.stop();
      await floor.ns.ip('link', 'del', 'flannel.1');
      const nodeMs = median(await nodeStartFloor(hub.topology.hosts[2 * k]!.ns, 3));
      const order = k % 2 === 0 ? KINDS : [...KINDS].reverse();
      const byKind = new Map<DaemonKind, DaemonResult>();
      for (const [i, kind] of order.entries()) byKind.set(kind, await coldStart(ctx, hub, hub.topology.hosts[2 * k + i]!, kind));
      const run = { floorMs: floor.ms, floorBatchMs: floor.batchMs, nodeMs, ours: byKind.get('ours')!, upstream: byKind.get('upstream')! };
      results.push(run);
      ctx.note(`run ${k + 1}: floor ${ms(run.floorMs)}, node -e 0 ${ms(nodeMs)}, ours ${ms(run.ours.ms)} (${mb(run.ours.hwmKiB)}), ` +
        `upstream ${ms(run.upstream.ms)} (${mb(run.upstream.hwmKiB)})`);
    }
    return report(hub, results);
  },
});

function report(hub: LoadedHub, results: readonly RunResult[]): string {
  const col = (f: (r: RunResult) => number, fmt: (v: number) => string): string[] => [...results.map((r) => fmt(f(r))), fmt(median(results.map(f)))];
  const med = (f: (r: RunResult) => number): number => median(results.map(f));
  const floorMed = med((r) => r.floorMs);
  const oursMed = med((r) => r.ours.ms);
  const upMed = med((r) => r.upstream.ms);
  const crashed = (kind: DaemonKind): boolean => results.some((r) => r[kind].crashes.length > 0);
  const anyCrash = crashed('ours') || crashed('upstream');
  const perRun = (f: (r: RunResult) => number): string[] => [...results.map((r) => `${f(r).toFixed(2)}×`)];
  const runHeads = results.map((_, i) => `run ${i + 1}`);
  const oursOverUp = (f: (d: DaemonResult) => number) => (r: RunResult): number => f(r.ours) / f(r.upstream);
  const main = table(['measure', ...runHeads, 'median', '× floor', 'target', 'verdict'], [
    ['floor: `ip -batch` + `bridge -batch`, fresh namespace', ...col((r) => r.floorMs, ms), '1.00×', '', ''],
    ['floor: `node -e 0` in the host namespace', ...col((r) => r.nodeMs, ms), ratio(med((r) => r.nodeMs), floorMed), '', ''],
    ['upstream flanneld: spawn → all entries in the kernel', ...col((r) => r.upstream.ms, ms), ratio(upMed, floorMed), '', ''],
    ['**flanneld-ts: spawn → all entries in the kernel**' + (crashed('ours') ? ' (including restarts)' : ''), ...col((r) => r.ours.ms, ms), ratio(oursMed, floorMed),
      `≤ ${TARGET_RATIO}× and < ${TARGET_MS} ms`, verdict(!crashed('ours') && oursMed <= TARGET_RATIO * floorMed && oursMed < TARGET_MS)],
    ['flanneld-ts / upstream (all entries)', ...perRun(oursOverUp((d) => d.ms)), ratio(oursMed, upMed), '', '< 1.00×', verdict(oursMed < upMed)],
    ['upstream flanneld: spawn → subnet.env written', ...col((r) => r.upstream.envMs, ms), '', '', ''],
    ['flanneld-ts: spawn → subnet.env written', ...col((r) => r.ours.envMs, ms), '', '', ''],
    ['flanneld-ts / upstream (subnet.env)', ...perRun(oursOverUp((d) => d.envMs)), ratio(med((r) => r.ours.envMs), med((r) => r.upstream.envMs)), '', '< 1.00×',
      verdict(med((r) => r.ours.envMs) < med((r) => r.upstream.envMs))],
    ['daemon exits before all entries are in, ours; upstream (exit, after, routes/neighbours/fdb by then)',
      ...results.map((r) => `${describeCrashes(r.ours.crashes)}; ${describeCrashes(r.upstream.crashes)}`), '', '', 'none', verdict(!anyCrash)],
    ['upstream flanneld peak RSS (VmHWM)', ...col((r) => r.upstream.hwmKiB, mb), '', '', ''],
    ['flanneld-ts peak RSS (VmHWM)' + (crashed('ours') ? ' of the process that finished' : ''), ...col((r) => r.ours.hwmKiB, mb), '', `< ${mb(TARGET_RSS_KIB)}`,
      verdict(med((r) => r.ours.hwmKiB) < TARGET_RSS_KIB)],
    ['flanneld-ts / upstream (peak RSS)', ...perRun(oursOverUp((d) => d.hwmKiB)), ratio(med((r) => r.ours.hwmKiB), med((r) => r.upstream.hwmKiB)), '',
      `≤ ${TARGET_RSS_VS_UPSTREAM.toFixed(1)}×`, verdict(med((r) => r.ours.hwmKiB) <= TARGET_RSS_VS_UPSTREAM * med((r) => r.upstream.hwmKiB))],
  ]);

  const messages = [...(results[0]?.ours.phases.keys() ?? [])].filter((m) => results.every((r) => r.ours.phases.has(m)));
  const phases = table(['flanneld-ts log line (first process; ms from its spawn)', ...runHeads, 'median'], [
    ...messages.map((m) => [m, ...col((r) => r.ours.phases.get(m) ?? Number.NaN, ms)]),
    ['(all entries seen in the kernel)', ...col((r) => r.ours.ms, ms)],
  ]);
  const notes = [
    `${PEERS} peer leases (${3 * PEERS} kernel entries: routes, permanent neighbours, FDB entries on flannel.1), written to etcd in ${ms(hub.seedMs)}; ` +
      `${results.length} runs, each with both daemons (same flags: \`--etcd-endpoints --subnet-file --iface=eth0\`) one after the other on fresh host ` +
      'namespaces with etcd on the hub, ours first in odd runs; the floor namespace is fresh per run too.',
    `Completion is the arrival of the last entry's \`ip monitor\` notification (observed via: ${results.map((r) => `${r.ours.via}/${r.upstream.via}`).join(', ')}; ` +
      'ours/upstream), then checked by dump; subnet.env is the inotify event of its rename into place. Floor batch processes alone exited after ' +
      `${results.map((r) => ms(r.floorBatchMs)).join(', ')}. Peak RSS is read 1 s after completion.`,
    `Crashes: the table counts a daemon that exits before its entries are in; a supervisor would restart it (${anyCrash ? 'it happened in this run' : 'none in this run'}).`,
  ];
  return `${main}\n\n${phases}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
}
