#!/usr/bin/env node
/**
 * Single-stream TCP throughput (iperf3, about 5 s per measurement) and what it costs in CPU, on three paths in one
 * run, alternating them for five rounds (about 80 s in all):
 *  - the floor: host to host over the underlay (the same veths and bridge, no encapsulation);
 *  - pod to pod over flanneld's vxlan overlay (kernel encapsulation);
 *  - pod to pod over flanneld's udp overlay (TUN device flannel0 and userspace encapsulation in flanneld's native
 *    proxy threads, UDP port 8285).
 * vxlan and udp each get their own cluster (hub, etcd, two hosts, two daemons, one pod per host), so both are up at
 * once and nothing is re-configured between rounds; the floor is measured between the vxlan cluster's hosts.
 * Per path: the rounds, the median and its ratio to the host floor; udp/vxlan against the issue's target (udp at
 * least 25 % of vxlan) as a pass/FAIL verdict. CPU: the machine's busy time (/proc/stat over all CPUs,
 * user+nice+system+irq+softirq, idle and iowait excluded) across each iperf3 client run, divided by the gigabits
 * the run moved (duration × Gbit/s): CPU-seconds per Gbit. Also the flanneld processes' own CPU seconds
 * (/proc/<pid>/stat utime+stime, all threads) during each overlay run: the udp proxy threads live in them.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { NetnsRun, sh, type Netns } from '../helpers/netns.js';
import { spawnTracked, waitFor } from '../helpers/processes.js';
import { addPod, ping, type Pod } from '../helpers/topology.js';
import { benchMain, median, now, ratio, table, verdict, type BenchContext } from './bench-kit.js';

const ROUNDS = 5;
const SECONDS = 5;
const PORT = 5201;
/** The issue's target: pod-to-pod throughput over udp at least this share of vxlan's. */
const UDP_VS_VXLAN_TARGET = 0.25;
/** flanneld's health/metrics port in the udp cluster, for the proxy's drop counters (read outside the runs). */
const HEALTHZ_PORT = 9102;
/** A round's three measurements take about 3 × (SECONDS + 1) s, at worst 3 × (SECONDS + 25) s; no round starts without that left. */
const ROUND_BUDGET_MS = 3 * (SECONDS + 25) * 1000;

interface Iperf {
  readonly gbps: number;
  readonly retransmits: number;
  /** Gigabits the receiver got: duration × Gbit/s. */
  readonly gbit: number;
  /** Wall-clock seconds of the measurement window (the iperf3 client, start to exit). */
  readonly wallSec: number;
  /** Busy CPU seconds of the whole machine in that window. */
  readonly cpuSec: number;
  /** CPU seconds of each watched process (the flanneld daemons) in that window, in the order given. */
  readonly procSec: readonly number[];
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
    const procBefore = watch.map(processTicks);
    const busyBefore = machineBusyTicks();
    const started = now();
    const text = await sh('ip', ['netns', 'exec', client.name, 'timeout', String(SECONDS + 20), 'iperf3', '-c', serverIp, '-p', String(PORT),
      '-t', String(SECONDS), '-J', '--connect-timeout', '3000']);
    const wallSec = (now() - started) / 1000;
    const cpuSec = (machineBusyTicks() - busyBefore) / clockTicks;
    const procSec = watch.map((pid, i) => (processTicks(pid) - (procBefore[i] as number)) / clockTicks);
    const report = JSON.parse(text) as {
      end?: { sum_received?: { bits_per_second?: number; seconds?: number }; sum_sent?: { retransmits?: number } };
      error?: string;
    };
    const bps = report.end?.sum_received?.bits_per_second;
    const seconds = report.end?.sum_received?.seconds;
    if (typeof bps !== 'number' || typeof seconds !== 'number') throw new Error(`iperf3 gave no result: ${report.error ?? text.slice(0, 500)}`);
    return { gbps: bps / 1e9, retransmits: report.end?.sum_sent?.retransmits ?? 0, gbit: (bps / 1e9) * seconds, wallSec, cpuSec, procSec };
  } finally {
    await srv.stop('SIGTERM', 2000);
  }
}

interface Overlay {
  readonly cluster: Cluster;
  readonly mtu: number;
  readonly p1: Pod;
  readonly p2: Pod;
  /** flanneld PIDs on h1 (sender) and h2 (receiver). */
  readonly daemons: readonly [number, number];
}

/** A two-host cluster with `backend`, namespaces in `run`, and a pod per host at the overlay MTU, pinging. */
async function overlay(ctx: BenchContext, run: NetnsRun, backend: string, flanneldArgs: readonly string[] = []): Promise<Overlay> {
  const cluster = await startCluster(run, { hosts: 2, config: { Network: '10.244.0.0/16', Backend: { Type: backend } }, pods: false, flanneldArgs });
  ctx.defer(() => cluster.stop());
  const [h1, h2] = [cluster.topology.host('h1'), cluster.topology.host('h2')];
  const mtu = Number(/^FLANNEL_MTU=(\d+)$/m.exec(readFileSync(join(cluster.dir, 'h1.env'), 'utf8'))?.[1]);
  if (!Number.isInteger(mtu)) throw new Error(`${backend}: h1 subnet.env has no FLANNEL_MTU`);
  // Pods get the overlay MTU, as the CNI plugin would give them.
  const p1 = await addPod(h1, 'p1', cluster.subnetOf('h1'), 1, { mtu });
  const p2 = await addPod(h2, 'p1', cluster.subnetOf('h2'), 1, { mtu });
  await waitFor(`${backend} pod-to-pod ping`, async () => ((await ping(p1.ns, p2.ip, { count: 1 })).ok ? true : undefined), 15_000, 200);
  return { cluster, mtu, p1, p2, daemons: [cluster.daemon('h1').pid, cluster.daemon('h2').pid] };
}

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

benchMain({
  tag: 'tp',
  title: 'TCP throughput over vxlan and udp (iperf3, one stream) and its CPU cost',
  deadlineMs: 170_000,
  body: async (ctx) => {
    clockTicks = Number((await sh('getconf', ['CLK_TCK'])).trim()) || 100;
    // The udp cluster's namespaces belong to a run of their own (fts-<pid>-tpu-…), so both clusters have a hub, h1
    // and h2; its cleanup is registered first, so it runs after that cluster's processes are stopped.
    const udpRun = new NetnsRun('tpu');
    ctx.defer(() => udpRun.cleanup());
    const [vx, ud] = await Promise.all([
      overlay(ctx, ctx.run, 'vxlan'),
      overlay(ctx, udpRun, 'udp', [`--healthz-ip=127.0.0.1`, `--healthz-port=${HEALTHZ_PORT}`]),
    ]);
    const [h1, h2] = [vx.cluster.topology.host('h1'), vx.cluster.topology.host('h2')];
    const [u1, u2] = [ud.cluster.topology.host('h1'), ud.cluster.topology.host('h2')];
    ctx.note(`clusters up: vxlan MTU ${vx.mtu}, udp MTU ${ud.mtu}`);
    const dropsBefore = await Promise.all([udpDrops(u1.ns), udpDrops(u2.ns)]);

    const hostRuns: Iperf[] = [];
    const vxRuns: Iperf[] = [];
    const udRuns: Iperf[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      if (ctx.remainingMs() < ROUND_BUDGET_MS) {
        ctx.note(`stopping after ${round} rounds: ${(ctx.remainingMs() / 1000).toFixed(0)} s left before the deadline`);
        break;
      }
      hostRuns.push(await iperf(h2.ns, h2.ip, h1.ns, vx.daemons));
      vxRuns.push(await iperf(vx.p2.ns, vx.p2.ip, vx.p1.ns, vx.daemons));
      udRuns.push(await iperf(ud.p2.ns, ud.p2.ip, ud.p1.ns, ud.daemons));
      ctx.note(`round ${round + 1}: host ${hostRuns.at(-1)?.gbps.toFixed(2)}, vxlan ${vxRuns.at(-1)?.gbps.toFixed(2)}, ` +
        `udp ${udRuns.at(-1)?.gbps.toFixed(3)} Gbit/s`);
    }
    if (hostRuns.length === 0) throw new Error('no round fitted before the deadline');
    const dropsAfter = await Promise.all([udpDrops(u1.ns), udpDrops(u2.ns)]);

    const hostMed = median(hostRuns.map((r) => r.gbps));
    const vxMed = median(vxRuns.map((r) => r.gbps));
    const udMed = median(udRuns.map((r) => r.gbps));
    const ncpu = cpus().length;
    const gbit = (v: number): string => `${v.toFixed(v < 1 ? 3 : 2)} Gbit/s`;
    const perGbit = (runs: readonly Iperf[]): number => median(runs.map((r) => r.cpuSec / r.gbit));
    const cores = (runs: readonly Iperf[]): number => median(runs.map((r) => r.cpuSec / r.wallSec));
    const daemonCpu = (runs: readonly Iperf[]): string => {
      const at = (i: number): number => median(runs.map((r) => r.procSec[i] as number));
      return `${at(0).toFixed(2)} + ${at(1).toFixed(2)} s`;
    };
    const row = (label: string, runs: readonly Iperf[], med: number, daemons: string): string[] => [
      label, ...runs.map((r) => gbit(r.gbps)), gbit(med), ratio(med, hostMed),
      `${perGbit(runs).toFixed(3)} CPU-s/Gbit`, `${cores(runs).toFixed(2)} of ${ncpu}`, daemons,
      runs.map((r) => String(r.retransmits)).join(' / '),
    ];
    const main = table(
      ['path', ...hostRuns.map((_, i) => `round ${i + 1}`), 'median', '× host floor', 'machine CPU per Gbit (median)',
        'machine CPUs busy (median)', 'flanneld CPU per run, h1 + h2 (median)', 'retransmits'],
      [
        row(`floor: host to host over the underlay (${h1.ip} → ${h2.ip}, MTU 1500)`, hostRuns, hostMed, 'n/a (not on the path)'),
        row(`pod to pod over vxlan (${vx.p1.ip} → ${vx.p2.ip}, MTU ${vx.mtu})`, vxRuns, vxMed, daemonCpu(vxRuns)),
        row(`pod to pod over udp (${ud.p1.ip} → ${ud.p2.ip}, MTU ${ud.mtu})`, udRuns, udMed, daemonCpu(udRuns)),
      ],
    );
    const perRound = (a: readonly Iperf[], b: readonly Iperf[]): string => a.map((r, i) => ratio(r.gbps, b[i]?.gbps ?? Number.NaN)).join(' / ');
    const ratios = table(['ratio of medians', 'value', 'per round', 'target', 'verdict'], [
      ['udp / vxlan', ratio(udMed, vxMed), perRound(udRuns, vxRuns), `≥ ${UDP_VS_VXLAN_TARGET.toFixed(2)}× (udp at least 25 % of vxlan)`,
        verdict(udMed >= UDP_VS_VXLAN_TARGET * vxMed)],
      ['udp / host floor', ratio(udMed, hostMed), perRound(udRuns, hostRuns), '—', '—'],
      ['vxlan / host floor', ratio(vxMed, hostMed), perRound(vxRuns, hostRuns), '—', '—'],
      ['udp / vxlan machine CPU per Gbit', ratio(perGbit(udRuns), perGbit(vxRuns)),
        udRuns.map((r, i) => ratio(r.cpuSec / r.gbit, vxRuns[i] ? vxRuns[i].cpuSec / vxRuns[i].gbit : Number.NaN)).join(' / '), '—', '—'],
    ]);
    const udWall = median(udRuns.map((r) => r.wallSec));
    const udCpu = median(udRuns.map((r) => r.cpuSec));
    const udDaemons = median(udRuns.map((r) => (r.procSec[0] as number) + (r.procSec[1] as number)));
    const drops = dropsBefore.map((b, i) => dropsBetween(b, dropsAfter[i]));
    const notes = [
      `iperf3 -t ${SECONDS}, one TCP stream, receiver-side rate; each host is a namespace on a veth into its hub's bridge; ` +
        'the three paths alternate within each round. vxlan and udp run in two separate clusters (own hub, etcd, hosts), both up throughout.',
      `machine CPU: busy time of all ${ncpu} CPUs from /proc/stat (user+nice+system+irq+softirq) between the iperf3 client's start and exit, ` +
        'divided by the gigabits received (duration × Gbit/s); it includes iperf3 itself, the kernel on both ends and anything else the machine ran then.',
      `flanneld during the udp runs (utime+stime of the whole process, /proc/<pid>/stat; the proxy threads live in it): ` +
        `h1 (sender) ${median(udRuns.map((r) => r.procSec[0] as number)).toFixed(2)} s and h2 (receiver) ` +
        `${median(udRuns.map((r) => r.procSec[1] as number)).toFixed(2)} s per ${udWall.toFixed(1)} s run (medians), ` +
        `${(udDaemons / udWall).toFixed(2)} CPUs together, ${((udDaemons / udCpu) * 100).toFixed(0)} % of the machine's busy time in those runs.`,
      `udp proxy drops over all udp runs (flanneld_udp_dropped_packets_total): h1 ${drops[0]}, h2 ${drops[1]}.`,
    ];
    return `${main}\n\n${ratios}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
