#!/usr/bin/env node
/**
 * Cold start with 5000 vxlan peers: from spawning flanneld in a fresh host namespace until all 15000 peer entries
 * (routes, permanent neighbours, FDB entries on flannel.1) are in its kernel, and the daemon's peak RSS. Floors,
 * measured in the same run: the same entries through `ip -batch` + `bridge -batch` in a fresh namespace with an
 * equivalent flannel.1, and `node -e 0` in the host namespace. Three runs, each on a host namespace of its own.
 */
import { benchMain, benchPeers, mb, median, ms, now, ratio, sleep, table, verdict } from './bench-kit.js';
import { batchFloor, nodeStartFloor } from './floors.js';
import { countEntries, startKernelWatch } from './kernel-watch.js';
import { daemonSubnet, describeCrashes, memoryOf, startLoadedHub, startProgrammedDaemon, type DaemonCrash } from './loaded-host.js';
import { ETCD_PREFIX } from './peer-leases.js';

const PEERS = benchPeers();
const RUNS = 3;
const TARGET_RATIO = 3;
const TARGET_MS = 1000;
const TARGET_RSS_KIB = 120 * 1024;

interface RunResult {
  readonly floorMs: number;
  readonly floorBatchMs: number;
  readonly nodeMs: number;
  readonly flanneldMs: number;
  readonly hwmKiB: number;
  readonly phases: Map<string, number>;
  readonly via: string;
  readonly crashes: readonly DaemonCrash[];
}

benchMain({
  tag: 'cs',
  title: `Cold start with ${PEERS} vxlan peers`,
  deadlineMs: 175_000,
  body: async (ctx) => {
    const hub = await startLoadedHub(ctx, RUNS, PEERS);
    const results: RunResult[] = [];
    for (let k = 0; k < RUNS; k++) {
      const host = hub.topology.hosts[k]!;
      const floor = await batchFloor(ctx, `floor${k + 1}`, hub.peers, hub.dir);
      await floor.watch.stop();
      await floor.ns.ip('link', 'del', 'flannel.1');
      const nodeMs = median(await nodeStartFloor(host.ns, 3));

      const watch = await startKernelWatch(host.ns);
      ctx.defer(() => watch.stop());
      const daemon = await startProgrammedDaemon(ctx, hub, host, watch, PEERS, 60_000);
      const flanneldMs = daemon.reached.at - daemon.spawnedAt;
      await sleep(1000);
      const { hwmKiB } = memoryOf(daemon.proc.pid);
      const counts = await countEntries(host.ns);
      if (counts.route !== PEERS || counts.neigh !== PEERS || counts.fdb !== PEERS) {
        throw new Error(`${host.name} holds ${counts.route}/${counts.neigh}/${counts.fdb} routes/neighbours/fdb, expected ${PEERS} each`);
      }
      results.push({ floorMs: floor.ms, floorBatchMs: floor.batchMs, nodeMs, flanneldMs, hwmKiB, phases: daemon.firstPhases, via: `${floor.via}/${daemon.reached.via}`, crashes: daemon.crashes });
      ctx.note(`run ${k + 1}: floor ${ms(floor.ms)}, node -e 0 ${ms(nodeMs)}, flanneld ${ms(flanneldMs)}, VmHWM ${mb(hwmKiB)}`);

      // Leave the next run a store with exactly the synthetic peers and this host's kernel empty again.
      await watch.stop();
      const stopped = now();
      await daemon.proc.stop('SIGTERM', 3000);
      if (now() - stopped > 2500) ctx.note(`flanneld on ${host.name} took ${ms(now() - stopped)} to stop`);
      await hub.writer.del([`${ETCD_PREFIX}/subnets/${daemonSubnet(daemon).replace('/', '-')}`]);
      await host.ns.ip('link', 'del', 'flannel.1');
    }

    const col = (f: (r: RunResult) => number, fmt: (v: number) => string): string[] => [...results.map((r) => fmt(f(r))), fmt(median(results.map(f)))];
    const floorMed = median(results.map((r) => r.floorMs));
    const flanneldMed = median(results.map((r) => r.flanneldMs));
    const nodeMed = median(results.map((r) => r.nodeMs));
    const adjusted = results.map((r) => r.flanneldMs - r.nodeMs);
    const hwmMed = median(results.map((r) => r.hwmKiB));
    const crashed = results.some((r) => r.crashes.length > 0);
    const runHeads = results.map((_, i) => `run ${i + 1}`);
    const main = table(['measure', ...runHeads, 'median', '× floor', 'target', 'verdict'], [
      ['floor: `ip -batch` + `bridge -batch`, fresh namespace', ...col((r) => r.floorMs, ms), '1.00×', '', ''],
      ['floor: `node -e 0` in the host namespace', ...col((r) => r.nodeMs, ms), ratio(nodeMed, floorMed), '', ''],
      ['flanneld: spawn → all entries in the kernel' + (crashed ? ' (including restarts)' : ''), ...col((r) => r.flanneldMs, ms), ratio(flanneldMed, floorMed),
        `≤ ${TARGET_RATIO}× and < ${TARGET_MS} ms`, verdict(!crashed && flanneldMed <= TARGET_RATIO * floorMed && flanneldMed < TARGET_MS)],
      ['flanneld exits before all entries are in (exit, after, routes/neighbours/fdb by then)', ...results.map((r) => describeCrashes(r.crashes)), '', '', 'none', verdict(!crashed)],
      ['flanneld minus `node -e 0`', ...adjusted.map(ms), ms(median(adjusted)), ratio(median(adjusted), floorMed), '', ''],
      ['flanneld peak RSS (VmHWM)' + (crashed ? ' of the process that finished' : ''), ...col((r) => r.hwmKiB, mb), '', `< ${mb(TARGET_RSS_KIB)}`, verdict(hwmMed < TARGET_RSS_KIB)],
      ...(crashed
        ? [['VmHWM of the process that exited, last sample before it did (every 50 ms)', ...col((r) => r.crashes[0]?.hwmKiB ?? Number.NaN, mb), '', `< ${mb(TARGET_RSS_KIB)}`,
            verdict(median(results.map((r) => r.crashes[0]?.hwmKiB ?? 0)) < TARGET_RSS_KIB)]]
        : []),
    ]);

    const messages = [...(results[0]?.phases.keys() ?? [])].filter((m) => results.every((r) => r.phases.has(m)));
    const phases = table([`flanneld log line (first process${crashed ? ', the one that may have crashed' : ''}; ms from its spawn)`, ...runHeads, 'median'], [
      ...messages.map((m) => [m, ...col((r) => r.phases.get(m) ?? Number.NaN, ms)]),
      ...(crashed ? [['(first process exited)', ...col((r) => r.crashes[0]?.afterMs ?? Number.NaN, ms)]] : []),
      ['(all entries seen in the kernel)', ...col((r) => r.flanneldMs, ms)],
    ]);
    const notes = [
      `${PEERS} peer leases (${3 * PEERS} kernel entries: routes, permanent neighbours, FDB entries on flannel.1), written to etcd in ${ms(hub.seedMs)}; ` +
        `${RUNS} runs, each flanneld on a fresh host namespace with etcd on the hub; the floor namespace is fresh per run too.`,
      `Completion is the arrival of the last entry's \`ip monitor\` notification (observed via: ${results.map((r) => r.via).join(', ')}; floor/flanneld), ` +
        'then checked by dump. Floor batch processes alone exited after ' + results.map((r) => ms(r.floorBatchMs)).join(', ') + '.',
    ];
    return `${main}\n\n${phases}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
