#!/usr/bin/env node
/**
 * Dual-stack cold start against IPv4-only cold start, side by side in one run, with 5000 vxlan peers: from spawning
 * flanneld in a fresh host namespace until every peer entry is in its kernel. IPv4-only: 15000 entries (route,
 * permanent neighbour, FDB entry per peer on flannel.1), as cold-start.ts measures it. Dual stack: 30000, the same
 * on flannel.1 plus flannel-v6.1 (IPv6 underlay 2001:db8:2::/64). One etcd holds both networks (peer-leases.ts);
 * three rounds, each with one daemon of each kind on a host namespace of its own, the order alternating per round.
 */
import { benchMain, benchPeers, mb, median, ms, now, sleep, table, verdict } from './bench-kit.js';
import { countEntries, FLANNEL_V4, FLANNEL_V6, startKernelWatch } from './kernel-watch.js';
import { daemonLeaseKey, describeCrashes, memoryOf, startLoadedHub, startProgrammedDaemon, type DaemonCrash } from './loaded-host.js';

const PEERS = benchPeers();
const RUNS = 3;
const TARGET_RATIO = 2.2;

type Variant = 'v4' | 'dual';
const DEVICES = { v4: [FLANNEL_V4], dual: [FLANNEL_V4, FLANNEL_V6] } as const;
const LABEL: Record<Variant, string> = { v4: 'IPv4-only', dual: 'dual-stack' };

interface RunResult {
  readonly ms: number;
  readonly hwmKiB: number;
  readonly via: string;
  readonly crashes: readonly DaemonCrash[];
}

benchMain({
  tag: 'ds',
  title: `Dual-stack cold start with ${PEERS} vxlan peers, against IPv4-only`,
  deadlineMs: 200_000,
  body: async (ctx) => {
    const hub = await startLoadedHub(ctx, 2 * RUNS, PEERS, { dualStack: true });
    const results: Record<Variant, RunResult[]> = { v4: [], dual: [] };
    let nextHost = 0;

    const coldStart = async (variant: Variant): Promise<RunResult> => {
      const host = hub.topology.hosts[nextHost++]!;
      const watch = await startKernelWatch(host.ns);
      ctx.defer(() => watch.stop());
      const daemon = await startProgrammedDaemon(ctx, hub, host, watch, PEERS, 60_000, { dualStack: variant === 'dual' });
      const took = daemon.reached.at - daemon.spawnedAt;
      await sleep(1000);
      const { hwmKiB } = memoryOf(daemon.proc.pid);
      for (const device of DEVICES[variant]) {
        const c = await countEntries(host.ns, device);
        if (c.route !== PEERS || c.neigh !== PEERS || c.fdb !== PEERS) {
          throw new Error(`${host.name} holds ${c.route}/${c.neigh}/${c.fdb} routes/neighbours/fdb on ${device.name}, expected ${PEERS} each`);
        }
      }
      ctx.note(`${LABEL[variant]} on ${host.name}: ${ms(took)}, VmHWM ${mb(hwmKiB)}`);

      // Leave the next daemon a store with exactly the synthetic peers, and the kernel without this daemon's entries.
      await watch.stop();
      const stopped = now();
      await daemon.proc.stop('SIGTERM', 3000);
      if (now() - stopped > 2500) ctx.note(`flanneld on ${host.name} took ${ms(now() - stopped)} to stop`);
      await hub.writer.del([daemonLeaseKey(daemon)]);
      for (const device of DEVICES[variant]) await host.ns.ip('link', 'del', device.name);
      return { ms: took, hwmKiB, via: daemon.reached.via, crashes: daemon.crashes };
    };

    for (let k = 0; k < RUNS; k++) {
      const order: Variant[] = k % 2 === 0 ? ['v4', 'dual'] : ['dual', 'v4'];
      for (const variant of order) results[variant].push(await coldStart(variant));
    }

    const entries = (v: Variant): number => 3 * PEERS * DEVICES[v].length;
    const med = (v: Variant, f: (r: RunResult) => number): number => median(results[v].map(f));
    const perSecond = (count: number, took: number): string => (took > 0 ? `${Math.round((count * 1000) / took)}/s` : 'n/a');
    const crashed = (v: Variant): boolean => results[v].some((r) => r.crashes.length > 0);
    const runHeads = results.v4.map((_, i) => `run ${i + 1}`);
    const v4Med = med('v4', (r) => r.ms);
    const dualMed = med('dual', (r) => r.ms);
    const ratioOf = (dual: number, v4: number): string => (v4 > 0 ? `${(dual / v4).toFixed(2)}×` : 'n/a');
    const timeRow = (v: Variant): string[] => [
      `${LABEL[v]}: spawn → all ${entries(v)} entries in the kernel${crashed(v) ? ' (including restarts)' : ''}`,
      ...results[v].map((r) => ms(r.ms)), ms(med(v, (r) => r.ms)), perSecond(entries(v), med(v, (r) => r.ms)), '', '',
    ];
    const rssRow = (v: Variant): string[] => [
      `${LABEL[v]}: flanneld peak RSS (VmHWM)${crashed(v) ? ' of the process that finished' : ''}`,
      ...results[v].map((r) => mb(r.hwmKiB)), mb(med(v, (r) => r.hwmKiB)), '', '', '',
    ];
    const anyCrash = crashed('v4') || crashed('dual');
    const main = table(['measure', ...runHeads, 'median', 'entries per second (median)', 'target', 'verdict'], [
      timeRow('v4'),
      timeRow('dual'),
      ['dual-stack / IPv4-only time (per round; median of dual-stack / median of IPv4-only)',
        ...results.dual.map((r, i) => ratioOf(r.ms, results.v4[i]!.ms)), ratioOf(dualMed, v4Med), '',
        `≤ ${TARGET_RATIO}× (twice the entries)`, verdict(!anyCrash && dualMed <= TARGET_RATIO * v4Med)],
      [`dual-stack minus IPv4-only (the ${entries('dual') - entries('v4')} flannel-v6.1 entries and IPv6 set-up; medians' difference)`,
        ...results.dual.map((r, i) => ms(r.ms - results.v4[i]!.ms)), ms(dualMed - v4Med), perSecond(entries('dual') - entries('v4'), dualMed - v4Med), '', ''],
      rssRow('v4'),
      rssRow('dual'),
      ['flanneld exits before all entries are in (IPv4-only; dual-stack)',
        ...results.v4.map((r, i) => `${describeCrashes(r.crashes)}; ${describeCrashes(results.dual[i]!.crashes)}`), '', '', 'none', verdict(!anyCrash)],
    ]);
    const notes = [
      `${PEERS} peer leases per network, written to etcd in ${ms(hub.seedMs)} (IPv4-only) and ${ms(hub.dual?.seedMs ?? Number.NaN)} (dual-stack, ` +
        `10.0.0.0/8 in /24s and 2001:db8:a::/48 in /64s); ${RUNS} rounds, each one IPv4-only and one dual-stack flanneld on fresh host ` +
        'namespaces (IPv4 + IPv6 underlay on eth0) with etcd on the hub, IPv4-only first in odd rounds, dual-stack first in even ones.',
      'Completion is the arrival of the last entry\'s `ip monitor` notification (observed via: ' +
        `${results.v4.map((r, i) => `${r.via}/${results.dual[i]!.via}`).join(', ')}; IPv4-only/dual-stack), then checked by dump per device. ` +
        'VmHWM is read 1 s after completion.',
    ];
    return `${main}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
