#!/usr/bin/env node
/**
 * Single-stream TCP throughput (iperf3, about 5 s per measurement) and what it costs in CPU, on six paths in one
 * run, alternating them for five rounds (about three and a half minutes in all, set-up included):
 *  - the floor: host to host over the underlay (the same veths and bridge, no encapsulation);
 *  - pod to pod over our flanneld's vxlan overlay (kernel encapsulation);
 *  - pod to pod over our flanneld's udp overlay (TUN device flannel0 and userspace encapsulation in flanneld's native
 *    proxy threads, UDP port 8285);
 *  - pod to pod over our flanneld's wireguard overlay (Mode separate, IPv4): on a kernel without WireGuard the
 *    devices run in wireguard-go, child processes of flanneld, which encrypt in Go;
 *  - vxlan and udp over upstream flannel's flanneld (v0.28.9, a Go program; its udp backend encapsulates in Go);
 *    upstream's wireguard backend needs the kernel module, so where ours had to fall back to wireguard-go upstream's
 *    is not run, and its row says so.
 * Each overlay gets its own cluster (hub, etcd, two hosts, two daemons of one kind, one pod per host), so all five are
 * up at once and nothing is re-configured between rounds; the floor is measured between our vxlan cluster's hosts. Per
 * path: the rounds, the median and its ratio to the host floor; as pass/FAIL verdicts our udp against the target (at
 * least 25 % of vxlan, docs/benchmarks.md) and against upstream's udp (at least as fast); our vxlan against upstream's
 * is reported only (the kernel does that work on both); our wireguard against our vxlan and udp is reported only (no
 * target exists for it). CPU: the machine's busy time (/proc/stat over all CPUs,
 * user+nice+system+irq+softirq, idle and iowait excluded) across each iperf3 client run, divided by the gigabits the
 * run moved (duration × Gbit/s): CPU-seconds per Gbit. Also the flanneld processes' CPU seconds (/proc/<pid>/stat
 * utime+stime, all threads) during each overlay run, with their child processes' (by PID from
 * /proc/<pid>/task/<tid>/children): the udp proxy threads live in flanneld, wireguard's encryption in its wireguard-go
 * children.
 */
import { readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { upstreamFlanneld } from '../../lab/kube/kube-tools.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { NetnsRun, sh, type Netns } from '../helpers/netns.js';
import { childPids, spawnTracked, waitFor } from '../helpers/processes.js';
import { addPod, ping, type Pod } from '../helpers/topology.js';
import { benchMain, median, now, ratio, table, verdict, type BenchContext } from './bench-kit.js';

const ROUNDS = 5;
const SECONDS = 5;
const PORT = 5201;
/** The target: pod-to-pod throughput over udp at least this share of vxlan's. */
const UDP_VS_VXLAN_TARGET = 0.25;
/** Our udp against upstream's: at least as fast. */
const UDP_VS_UPSTREAM_TARGET = 1;
/** Our flanneld's health/metrics port in our udp cluster, for the proxy's drop counters (read outside the runs). */
const HEALTHZ_PORT = 9102;
/** Measurements per round: the floor and five overlays. */
const PATHS = 6;
/** A round's measurements take about PATHS × (SECONDS + 1) s, at worst PATHS × (SECONDS + 25) s; no round starts without that left. */
const ROUND_BUDGET_MS = PATHS * (SECONDS + 25) * 1000;
/** Set-up, every round at its usual pace, and the last round's worst case on top (see run-all.ts's limit). */
const DEADLINE_MS = 390_000;

interface Iperf {
  readonly gbps: number;
  readonly retransmits: number;
  /** Gigabits the receiver got: duration × Gbit/s. */
  readonly gbit: number;
  /** Wall-clock seconds of the measurement window (the iperf3 client, start to exit). */
  readonly wallSec: number;
  /** Busy CPU seconds of the whole machine in that window. */
  readonly cpuSec: number;
  /** CPU seconds of each watched process (the flanneld daemons) and its child processes in that window, in the order given. */
  readonly procSec: readonly number[];
  /** The child processes' part of procSec (wireguard-go's for wireguard). */
  readonly childSec: readonly number[];
}

/** Clock ticks per second of /proc/stat and /proc/<pid>/stat, from getconf (100 on every Linux we know). */
let clockTicks = 100;

/** The machine's busy ticks over all CPUs: user+nice+system+irq+softirq (idle, iowait, steal, guest excluded). */
function machineBusyTicks(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const f = line.trim().split(/\s+/);
  if (f[0] !== 'cpu' || f.length < 8) throw new Error(`/proc/stat: unexpected first line "${line}"`);
  const [user, nice, system, , , irq, softirq] = f.slice(1, 8).map(Number) as [number, number, number, number, number, number, number];
  return user + nice + system + irq + softirq;
}

/** utime+stime ticks of a process, all its threads. */
function processTicks(pid: number): number {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces and parentheses): state is field 3, utime 14, stime 15.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`/proc/${pid}/stat: cannot read utime/stime`);
  return utime + stime;
}

/** CPU ticks of a process and of each of its child processes so far, by PID. */
interface TreeTicks {
  readonly self: number;
  readonly children: ReadonlyMap<number, number>;
}

function treeTicks(pid: number): TreeTicks {
  const children = new Map<number, number>();
  for (const child of childPids(pid)) {
    try {
      children.set(child, processTicks(child));
    } catch {
      // exited between the listing and the read: it has no CPU left to spend in the window
    }
  }
  return { self: processTicks(pid), children };
}

/**
 * The children's ticks between two snapshots: one started in between counts from zero; one that exited in between
 * loses its last stretch (a wireguard-go restart mid-run, which the daemon's own log would show).
 */
function childTicksBetween(before: TreeTicks, after: TreeTicks): number {
  let sum = 0;
  for (const [pid, ticks] of after.children) sum += ticks - (before.children.get(pid) ?? 0);
  return sum;
}

/**
 * One iperf3 run from `client` to a one-off server at `serverIp` in `server`; everything bounded by timeouts. The CPU
 * window opens once the server listens and closes when the client exits.
 */
async function iperf(server: Netns, serverIp: string, client: Netns, watch: readonly number[] = []): Promise<Iperf> {
  const srv = spawnTracked('ip', ['netns', 'exec', server.name, 'iperf3', '-s', '-1', '-B', serverIp, '-p', String(PORT), '--forceflush'], {}, server.name);
  try {
    await waitFor('iperf3 server', () => {
      if (srv.child.exitCode !== null) throw new Error(`iperf3 server exited: ${srv.output()}`);
      return srv.output().includes('Server listening') ? true : undefined;
    }, 5000, 20);
    const procBefore = watch.map(treeTicks);
    const busyBefore = machineBusyTicks();
    const started = now();
    const text = await sh('ip', ['netns', 'exec', client.name, 'timeout', String(SECONDS + 20), 'iperf3', '-c', serverIp, '-p', String(PORT),
      '-t', String(SECONDS), '-J', '--connect-timeout', '3000']);
    const wallSec = (now() - started) / 1000;
    const cpuSec = (machineBusyTicks() - busyBefore) / clockTicks;
    const procAfter = watch.map(treeTicks);
    const childSec = procAfter.map((after, i) => childTicksBetween(procBefore[i] as TreeTicks, after) / clockTicks);
    const procSec = procAfter.map((after, i) => (after.self - (procBefore[i] as TreeTicks).self) / clockTicks + (childSec[i] as number));
    const report = JSON.parse(text) as {
      end?: { sum_received?: { bits_per_second?: number; seconds?: number }; sum_sent?: { retransmits?: number } };
      error?: string;
    };
    const bps = report.end?.sum_received?.bits_per_second;
    const seconds = report.end?.sum_received?.seconds;
    if (typeof bps !== 'number' || typeof seconds !== 'number') throw new Error(`iperf3 gave no result: ${report.error ?? text.slice(0, 500)}`);
    return { gbps: bps / 1e9, retransmits: report.end?.sum_sent?.retransmits ?? 0, gbit: (bps / 1e9) * seconds, wallSec, cpuSec, procSec, childSec };
  } finally {
    await srv.stop('SIGTERM', 2000);
  }
}

type Daemon = 'ours' | 'upstream';

interface Overlay {
  readonly cluster: Cluster;
  readonly mtu: number;
  readonly p1: Pod;
  readonly p2: Pod;
  /** flanneld PIDs on h1 (sender) and h2 (receiver). */
  readonly daemons: readonly [number, number];
}

/**
 * The host's flanneld PID, checked to be the daemon's own process: `ip netns exec` (and for ours, env from the
 * shebang) exec in place, so the tracked PID should run node or upstream's binary by now; reading `ip` instead would
 * count nothing.
 */
function flanneldPid(cluster: Cluster, host: string, daemon: Daemon): number {
  const pid = cluster.daemon(host).pid;
  const want = realpathSync(daemon === 'upstream' ? upstreamFlanneld() : process.execPath);
  const exe = readlinkSync(`/proc/${pid}/exe`);
  if (exe !== want) throw new Error(`${host}: PID ${pid} runs ${exe}, not ${daemon} flanneld (${want})`);
  return pid;
}

/** A two-host cluster with `backend` and `daemon`'s flanneld on both hosts, namespaces in `run`, and a pod per host at the overlay MTU, pinging. */
async function overlay(ctx: BenchContext, run: NetnsRun, backend: string, daemon: Daemon, flanneldArgs: readonly string[] = []): Promise<Overlay> {
  const cluster = await startCluster(run, {
    hosts: 2, config: { Network: '10.244.0.0/16', Backend: { Type: backend } }, pods: false, flanneldArgs,
    ...(daemon === 'upstream' ? { upstream: ['h1', 'h2'] } : {}),
  });
  ctx.defer(() => cluster.stop());
  const [h1, h2] = [cluster.topology.host('h1'), cluster.topology.host('h2')];
  const mtu = Number(/^FLANNEL_MTU=(\d+)$/m.exec(readFileSync(join(cluster.dir, 'h1.env'), 'utf8'))?.[1]);
  if (!Number.isInteger(mtu)) throw new Error(`${daemon} ${backend}: h1 subnet.env has no FLANNEL_MTU`);
  // Pods get the overlay MTU, as the CNI plugin would give them.
  const p1 = await addPod(h1, 'p1', cluster.subnetOf('h1'), 1, { mtu });
  const p2 = await addPod(h2, 'p1', cluster.subnetOf('h2'), 1, { mtu });
  await waitFor(`${daemon} ${backend} pod-to-pod ping`, async () => ((await ping(p1.ns, p2.ip, { count: 1 })).ok ? true : undefined), 15_000, 200);
  return { cluster, mtu, p1, p2, daemons: [flanneldPid(cluster, 'h1', daemon), flanneldPid(cluster, 'h2', daemon)] };
}

/** One measured path: its row label, one run of iperf3 on it (reading its daemons' CPU), and the runs so far. */
interface Path {
  readonly label: string;
  readonly measure: () => Promise<Iperf>;
  readonly runs: Iperf[];
}

const overlayPath = (label: string, o: Overlay): Path => ({
  label: `${label} (${o.p1.ip} → ${o.p2.ip}, MTU ${o.mtu})`,
  measure: () => iperf(o.p2.ns, o.p2.ip, o.p1.ns, o.daemons),
  runs: [],
});

/** flanneld_udp_dropped_packets_total by reason, from the daemon's metrics; undefined if unreadable. */
async function udpDrops(host: Netns): Promise<Map<string, number> | undefined> {
  try {
    const text = await host.exec('curl', ['-sf', '--max-time', '3', `http://127.0.0.1:${HEALTHZ_PORT}/metrics`]);
    const byReason = new Map<string, number>();
    for (const m of text.matchAll(/^flanneld_udp_dropped_packets_total\{[^}]*reason="([^"]*)"[^}]*\} (\S+)$/gm)) {
      byReason.set(m[1] as string, Number(m[2]));
    }
    return byReason.size > 0 ? byReason : undefined;
  } catch {
    return undefined;
  }
}

/** "N (reason n, …)" for the drops between two scrapes. */
function dropsBetween(before: Map<string, number> | undefined, after: Map<string, number> | undefined): string {
  if (!before || !after) return 'n/a';
  const gained = [...after].map(([reason, v]) => [reason, v - (before.get(reason) ?? 0)] as const).filter(([, d]) => d !== 0);
  const total = gained.reduce((sum, [, d]) => sum + d, 0);
  return gained.length === 0 ? '0' : `${total} (${gained.map(([reason, d]) => `${reason} ${d}`).join(', ')})`;
}

/** CPU-seconds of the whole machine per gigabit moved, in one run. */
const cpuPerGbit = (r: Iperf): number => r.cpuSec / r.gbit;
/** CPU-seconds of both flanneld daemons together per gigabit moved, in one run. */
const daemonsPerGbit = (r: Iperf): number => r.procSec.reduce((sum, v) => sum + v, 0) / r.gbit;

/** A ratio row: `metric` of path a over path b, of the medians and round by round. */
function compare(label: string, a: Path, b: Path, metric: (r: Iperf) => number, target = '—', ok?: boolean): string[] {
  const perRound = a.runs.map((r, i) => ratio(metric(r), b.runs[i] ? metric(b.runs[i]) : Number.NaN)).join(' / ');
  return [label, ratio(median(a.runs.map(metric)), median(b.runs.map(metric))), perRound, target, ok === undefined ? '—' : verdict(ok)];
}

/** Median CPU seconds per run of the path's i-th watched daemon (with its child processes). */
const daemonMedian = (path: Path, i: number): number => median(path.runs.map((r) => r.procSec[i] as number));
/** Median CPU seconds per run of the child processes of the path's i-th watched daemon. */
const childMedian = (path: Path, i: number): number => median(path.runs.map((r) => r.childSec[i] as number));

/** The daemons' CPU over a path's runs, h1 (sender) and h2 (receiver), as a share of the runs' wall time and machine busy time. */
function daemonNote(label: string, path: Path): string {
  const wall = median(path.runs.map((r) => r.wallSec));
  const busy = median(path.runs.map((r) => r.cpuSec));
  const both = median(path.runs.map((r) => (r.procSec[0] as number) + (r.procSec[1] as number)));
  return `${label}: h1 (sender) ${daemonMedian(path, 0).toFixed(2)} s and h2 (receiver) ${daemonMedian(path, 1).toFixed(2)} s per ${wall.toFixed(1)} s run (medians), ` +
    `${(both / wall).toFixed(2)} CPUs together, ${((both / busy) * 100).toFixed(0)} % of the machine's busy time in those runs`;
}

/** Which implementation our daemon chose for its WireGuard devices, from its own log line. */
function wireguardImplementation(cluster: Cluster): 'wireguard-go' | 'kernel' {
  return cluster.daemon('h1').output().includes('running the devices in userspace (wireguard-go)') ? 'wireguard-go' : 'kernel';
}

/** Why upstream's wireguard has no figures in this run, as one table row of `columns` cells. */
function upstreamWireguardRow(implementation: 'wireguard-go' | 'kernel', columns: number): string[] {
  const why = implementation === 'wireguard-go'
    ? 'not run — its wireguard backend needs the kernel module, this kernel has none'
    : 'not run — this benchmark has no upstream wireguard cluster';
  return [`pod to pod over upstream's wireguard: ${why}`, ...Array.from({ length: columns - 1 }, () => '—')];
}

benchMain({
  tag: 'tp',
  title: 'TCP throughput over vxlan, udp and wireguard, ours and upstream flanneld\'s (iperf3, one stream), and its CPU cost',
  deadlineMs: DEADLINE_MS,
  body: async (ctx) => {
    clockTicks = Number((await sh('getconf', ['CLK_TCK'])).trim()) || 100;
    // Each further cluster's namespaces belong to a run of their own (fts-<pid>-tpu-…, -tpv-, -tpw-, -tpx-), so every
    // cluster has a hub, h1 and h2; their cleanups are registered first, so they run after the clusters' processes stop.
    const runs = ['tpu', 'tpv', 'tpw', 'tpx'].map((tag) => new NetnsRun(tag));
    for (const run of runs) ctx.defer(() => run.cleanup());
    const [udpRun, upVxRun, upUdRun, wgRun] = runs as [NetnsRun, NetnsRun, NetnsRun, NetnsRun];
    const [vx, ud, upVx, upUd, wg] = await Promise.all([
      overlay(ctx, ctx.run, 'vxlan', 'ours'),
      overlay(ctx, udpRun, 'udp', 'ours', [`--healthz-ip=127.0.0.1`, `--healthz-port=${HEALTHZ_PORT}`]),
      overlay(ctx, upVxRun, 'vxlan', 'upstream'),
      overlay(ctx, upUdRun, 'udp', 'upstream'),
      overlay(ctx, wgRun, 'wireguard', 'ours'),
    ]);
    const wgImpl = wireguardImplementation(wg.cluster);
    const [h1, h2] = [vx.cluster.topology.host('h1'), vx.cluster.topology.host('h2')];
    const [u1, u2] = [ud.cluster.topology.host('h1'), ud.cluster.topology.host('h2')];
    ctx.note(`clusters up: vxlan MTU ${vx.mtu}, udp MTU ${ud.mtu}, wireguard MTU ${wg.mtu} (${wgImpl}); upstream's vxlan MTU ${upVx.mtu}, udp MTU ${upUd.mtu}`);
    const dropsBefore = await Promise.all([udpDrops(u1.ns), udpDrops(u2.ns)]);

    const host: Path = {
      label: `floor: host to host over the underlay (${h1.ip} → ${h2.ip}, MTU 1500)`,
      measure: () => iperf(h2.ns, h2.ip, h1.ns),
      runs: [],
    };
    const ourVx = overlayPath('pod to pod over our vxlan', vx);
    const ourUd = overlayPath('pod to pod over our udp', ud);
    const theirVx = overlayPath('pod to pod over upstream\'s vxlan', upVx);
    const theirUd = overlayPath('pod to pod over upstream\'s udp', upUd);
    const ourWg = overlayPath(`pod to pod over our wireguard, ${wgImpl}`, wg);
    const paths = [host, ourVx, ourUd, ourWg, theirVx, theirUd];
    for (let round = 0; round < ROUNDS; round++) {
      if (ctx.remainingMs() < ROUND_BUDGET_MS) {
        ctx.note(`stopping after ${round} rounds: ${(ctx.remainingMs() / 1000).toFixed(0)} s left before the deadline`);
        break;
      }
      for (const path of paths) path.runs.push(await path.measure());
      ctx.note(`round ${round + 1}: host ${host.runs.at(-1)?.gbps.toFixed(2)}, vxlan ${ourVx.runs.at(-1)?.gbps.toFixed(2)} ` +
        `(upstream ${theirVx.runs.at(-1)?.gbps.toFixed(2)}), udp ${ourUd.runs.at(-1)?.gbps.toFixed(3)} ` +
        `(upstream ${theirUd.runs.at(-1)?.gbps.toFixed(3)}), wireguard ${ourWg.runs.at(-1)?.gbps.toFixed(3)} Gbit/s`);
    }
    if (host.runs.length === 0) throw new Error('no round fitted before the deadline');
    const dropsAfter = await Promise.all([udpDrops(u1.ns), udpDrops(u2.ns)]);
    const drops = dropsBefore.map((b, i) => dropsBetween(b, dropsAfter[i]));

    const gbpsMed = (p: Path): number => median(p.runs.map((r) => r.gbps));
    const ncpu = cpus().length;
    const gbit = (v: number): string => `${v.toFixed(v < 1 ? 3 : 2)} Gbit/s`;
    const daemonCpu = (p: Path): string => `${daemonMedian(p, 0).toFixed(2)} + ${daemonMedian(p, 1).toFixed(2)} s`;
    const wgCpu = `${daemonCpu(ourWg)} (of which ${wgImpl === 'wireguard-go' ? 'wireguard-go' : 'child processes'} ${childMedian(ourWg, 0).toFixed(2)} + ${childMedian(ourWg, 1).toFixed(2)} s)`;
    const row = (p: Path, daemons: string, udpDropCell: string): string[] => [
      p.label, ...p.runs.map((r) => gbit(r.gbps)), gbit(gbpsMed(p)), ratio(gbpsMed(p), gbpsMed(host)),
      `${median(p.runs.map(cpuPerGbit)).toFixed(3)} CPU-s/Gbit`, `${median(p.runs.map((r) => r.cpuSec / r.wallSec)).toFixed(2)} of ${ncpu}`,
      daemons, udpDropCell, p.runs.map((r) => String(r.retransmits)).join(' / '),
    ];
    const header = ['path', ...host.runs.map((_, i) => `round ${i + 1}`), 'median', '× host floor', 'machine CPU per Gbit (median)',
      'machine CPUs busy (median)', 'flanneld CPU per run with its child processes (wireguard: wireguard-go), h1 + h2 (median)',
      'udp proxy drops, h1 / h2 (all runs)', 'retransmits'];
    const main = table(header, [
      row(host, 'n/a (not on the path)', '—'),
      row(ourVx, daemonCpu(ourVx), '—'),
      row(ourUd, daemonCpu(ourUd), `${drops[0]} / ${drops[1]}`),
      row(ourWg, wgCpu, '—'),
      row(theirVx, daemonCpu(theirVx), '—'),
      row(theirUd, daemonCpu(theirUd), 'n/a (no metrics)'),
      upstreamWireguardRow(wgImpl, header.length),
    ]);
    const gbps = (r: Iperf): number => r.gbps;
    const ratios = table(['ratio of medians', 'value', 'per round', 'target', 'verdict'], [
      compare('our udp / upstream\'s udp', ourUd, theirUd, gbps, `≥ ${UDP_VS_UPSTREAM_TARGET.toFixed(2)}× (ours at least as fast)`,
        gbpsMed(ourUd) >= UDP_VS_UPSTREAM_TARGET * gbpsMed(theirUd)),
      compare('our vxlan / upstream\'s vxlan', ourVx, theirVx, gbps, 'reported (the kernel encapsulates for both: ≈ 1.00× expected)'),
      compare('our udp / our vxlan', ourUd, ourVx, gbps, `≥ ${UDP_VS_VXLAN_TARGET.toFixed(2)}× (udp at least 25 % of vxlan)`,
        gbpsMed(ourUd) >= UDP_VS_VXLAN_TARGET * gbpsMed(ourVx)),
      compare('upstream\'s udp / upstream\'s vxlan', theirUd, theirVx, gbps),
      compare('our udp / host floor', ourUd, host, gbps),
      compare('our vxlan / host floor', ourVx, host, gbps),
      compare('our udp / upstream\'s udp, machine CPU per Gbit', ourUd, theirUd, cpuPerGbit),
      compare('our udp / upstream\'s udp, flanneld CPU per Gbit', ourUd, theirUd, daemonsPerGbit),
      compare('our udp / our vxlan, machine CPU per Gbit', ourUd, ourVx, cpuPerGbit),
      compare('our wireguard / our vxlan', ourWg, ourVx, gbps, 'reported (no target)'),
      compare('our wireguard / our udp', ourWg, ourUd, gbps, 'reported (no target)'),
      compare('our wireguard / host floor', ourWg, host, gbps),
      compare('our wireguard / our vxlan, machine CPU per Gbit', ourWg, ourVx, cpuPerGbit),
      compare('our wireguard / our udp, machine CPU per Gbit', ourWg, ourUd, cpuPerGbit),
      compare(`our wireguard / our udp, flanneld CPU per Gbit (wireguard: with ${wgImpl === 'wireguard-go' ? 'wireguard-go' : 'its child processes'})`,
        ourWg, ourUd, daemonsPerGbit),
    ]);
    const notes = [
      `iperf3 -t ${SECONDS}, one TCP stream, receiver-side rate; each host is a namespace on a veth into its hub's bridge; ` +
        'the six paths alternate within each round. Each overlay runs in a cluster of its own (own hub, etcd, hosts, ' +
        'both hosts running the same daemon: ours or upstream flanneld v0.28.9), all five up throughout. Our wireguard: ' +
        `Mode separate, IPv4 only, devices in ${wgImpl === 'wireguard-go' ? 'wireguard-go (the kernel has no WireGuard)' : 'the kernel'}.`,
      `machine CPU: busy time of all ${ncpu} CPUs from /proc/stat (user+nice+system+irq+softirq) between the iperf3 client's start and exit, ` +
        'divided by the gigabits received (duration × Gbit/s); it includes iperf3 itself, the kernel on both ends and anything else the machine ran then.',
      'flanneld CPU: utime+stime of the whole daemon process (/proc/<pid>/stat, all threads; the PID checked to run node or ' +
        'upstream\'s binary, not `ip netns exec`) and of its child processes (by PID from /proc/<pid>/task/<tid>/children) ' +
        'during each run; the udp backends\' encapsulation runs in the daemons, our wireguard\'s encryption in the ' +
        'wireguard-go children, so for wireguard the figure includes wireguard-go.',
      `${daemonNote('our flanneld during our udp runs', ourUd)}; ${daemonNote('upstream\'s during its udp runs', theirUd)}; ` +
        `${daemonNote('our flanneld with its wireguard-go during our wireguard runs', ourWg)}.`,
      `udp proxy drops over all our udp runs (flanneld_udp_dropped_packets_total from our daemon's metrics port): h1 ${drops[0]}, h2 ${drops[1]}; ` +
        'upstream\'s flanneld publishes no such counter.',
    ];
    return `${main}\n\n${ratios}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
