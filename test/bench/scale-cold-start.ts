#!/usr/bin/env node
/**
 * How cold start grows with the store: one etcd holds 5,000 vxlan peer leases under one prefix and 25,000 under
 * another (~5.5 MB of values, past gRPC's default 4 MiB receive limit, which a restarted daemon used to hit before it
 * wrote subnet.env); a fresh flanneld on its own host namespace joins each network. Measured per size: spawn →
 * subnet.env written (its "wrote subnet file" log line), spawn → every route, neighbour and FDB entry in the kernel,
 * and peak RSS, next to the same entries through `ip -batch` (the kernel's own cost); then the 25k/5k ratios, printed,
 * not asserted (what matters here is the growth, not a target).
 */
import { benchMain, mb, ms, now, sleep, table } from './bench-kit.js';
import { batchFloor } from './floors.js';
import { countEntries, startKernelWatch } from './kernel-watch.js';
import { describeCrashes, memoryOf, startLoadedHub, startProgrammedDaemon, type DaemonRun } from './loaded-host.js';
import { ETCD_PREFIX, NETWORK_CONFIG, peerLeases } from './peer-leases.js';

const SMALL = 5_000;
const LARGE = 25_000;
const LARGE_PREFIX = '/bench-scale/network';

interface SizeResult {
  readonly peers: number;
  /** The same entries through `ip -batch` + `bridge -batch` in a fresh namespace: the kernel's own cost. */
  readonly floorMs: number;
  readonly envMs: number;
  readonly kernelMs: number;
  readonly hwmKiB: number;
  readonly run: DaemonRun;
}

benchMain({
  tag: 'sc',
  title: `Cold start with ${LARGE.toLocaleString('en')} peers next to ${SMALL.toLocaleString('en')}`,
  deadlineMs: 230_000,
  body: async (ctx) => {
    const hub = await startLoadedHub(ctx, 2, SMALL);
    const etcdctl = (...args: string[]): Promise<string> => hub.topology.hub.exec('etcdctl', [`--endpoints=${hub.etcd.endpoint}`, ...args]);
    await etcdctl('put', `${LARGE_PREFIX}/config`, JSON.stringify(NETWORK_CONFIG));
    const seeded = now();
    await hub.writer.put(peerLeases(LARGE).map((p) => [p.key.replace(ETCD_PREFIX, LARGE_PREFIX), p.value] as const));
    const largeSeedMs = now() - seeded;
    const count = (JSON.parse(await etcdctl('get', '--prefix', '--limit=1', '-w', 'json', `${LARGE_PREFIX}/subnets/`)) as { count?: unknown }).count;
    if (Number(count) !== LARGE) throw new Error(`etcd holds ${String(count)} leases under ${LARGE_PREFIX}, expected ${LARGE}`);
    ctx.note(`${LARGE} leases written under ${LARGE_PREFIX} in ${ms(largeSeedMs)}`);

    const measure = async (index: number, peers: number, args: readonly string[]): Promise<SizeResult> => {
      const host = hub.topology.hosts[index]!;
      const floor = await batchFloor(ctx, `floor${index + 1}`, peerLeases(peers), hub.dir);
      await floor.watch.stop();
      await floor.ns.ip('link', 'del', 'flannel.1');
      const watch = await startKernelWatch(host.ns);
      ctx.defer(() => watch.stop());
      const run = await startProgrammedDaemon(ctx, hub, host, watch, peers, 150_000, { args, maxRestarts: 0 });
      const kernelMs = run.reached.at - run.spawnedAt;
      await sleep(1000);
      const { hwmKiB } = memoryOf(run.proc.pid);
      const counts = await countEntries(host.ns);
      if (counts.route !== peers || counts.neigh !== peers || counts.fdb !== peers) {
        throw new Error(`${host.name} holds ${counts.route}/${counts.neigh}/${counts.fdb} routes/neighbours/fdb, expected ${peers} each`);
      }
      const envMs = run.firstPhases.get('wrote subnet file');
      if (envMs === undefined) throw new Error(`flanneld on ${host.name} never logged "wrote subnet file"`);
      ctx.note(`${peers} peers: floor ${ms(floor.ms)}, subnet.env ${ms(envMs)}, kernel ${ms(kernelMs)}, VmHWM ${mb(hwmKiB)}`);
      await watch.stop();
      await run.proc.stop('SIGTERM', 3000);
      return { peers, floorMs: floor.ms, envMs, kernelMs, hwmKiB, run };
    };
    const small = await measure(0, SMALL, []);
    const large = await measure(1, LARGE, [`--etcd-prefix=${LARGE_PREFIX}`]);

    const growth = (f: (r: SizeResult) => number): string => `${(f(large) / f(small)).toFixed(2)}×`;
    const row = (name: string, f: (r: SizeResult) => number, fmt: (v: number) => string): string[] => [name, fmt(f(small)), fmt(f(large)), growth(f)];
    const main = table(['measure', `${SMALL.toLocaleString('en')} peers`, `${LARGE.toLocaleString('en')} peers`, `growth (peers ×${LARGE / SMALL})`], [
      row('floor: `ip -batch` + `bridge -batch`, fresh namespace', (r) => r.floorMs, ms),
      row('flanneld: spawn → subnet.env written', (r) => r.envMs, ms),
      row('flanneld: spawn → all entries in the kernel', (r) => r.kernelMs, ms),
      row('flanneld: subnet.env → all entries in the kernel', (r) => r.kernelMs - r.envMs, ms),
      row('flanneld peak RSS (VmHWM)', (r) => r.hwmKiB, mb),
    ]);
    const messages = [...small.run.firstPhases.keys()].filter((m) => large.run.firstPhases.has(m));
    const phases = table(['flanneld log line (ms from its spawn)', `${SMALL.toLocaleString('en')} peers`, `${LARGE.toLocaleString('en')} peers`], [
      ...messages.map((m) => [m, ms(small.run.firstPhases.get(m) ?? Number.NaN), ms(large.run.firstPhases.get(m) ?? Number.NaN)]),
      ['(all entries seen in the kernel)', ms(small.kernelMs), ms(large.kernelMs)],
    ]);
    const notes = [
      `${SMALL} and ${LARGE} vxlan peer leases in one etcd on the hub (prefixes ${ETCD_PREFIX} and ${LARGE_PREFIX}), written in ${ms(hub.seedMs)} and ${ms(largeSeedMs)}; ` +
        'one run per size, each flanneld on a fresh host namespace of its own, one after the other.',
      `Entries: ${3 * SMALL} and ${3 * LARGE} (route, permanent neighbour and FDB entry per peer); completion is the last entry's \`ip monitor\` ` +
        `notification (via ${small.run.reached.via} / ${large.run.reached.via}), then checked by dump.`,
      `Ratios are not targets. Linear growth would be ${(LARGE / SMALL).toFixed(2)}×; the floor row shows what the kernel alone does with ` +
        `${(LARGE / SMALL).toFixed(0)}× the entries (flanneld's kernel time is ${(large.kernelMs / large.floorMs).toFixed(2)}× the floor at ${LARGE}, ` +
        `${(small.kernelMs / small.floorMs).toFixed(2)}× at ${SMALL}); start-up costs that do not grow with peers (Node, config, the vxlan device) ` +
        'pull flanneld\'s ratios below the floor\'s.',
      `Crashes on the way: ${describeCrashes([...small.run.crashes, ...large.run.crashes])}.`,
    ];
    return `${main}\n\n${phases}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
