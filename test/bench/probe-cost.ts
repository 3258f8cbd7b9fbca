#!/usr/bin/env node
/**
 * What peer probes and metrics cost at 5000 vxlan peers: four flanneld daemons, one per host namespace, all
 * programmed with the same 5000 peers and measured side by side over the same window, so machine noise hits them
 * alike. They differ only in what is switched on:
 *   off        --peer-probe-interval=0, no health port (nothing serves the metrics);
 *   metrics    health port on and /metrics scraped every 15 s, probes off;
 *   silent     metrics as above, probes every 30 s, and no peer answers (the fake peers' VTEPs do not exist, so
 *              every probe runs to its timeout: the worst case for timers and in-flight state);
 *   answering  the same, but a `local` host route per peer gateway in that host's namespace makes its kernel
 *              answer every probe, so replies are received, matched and recorded as well.
 * A fifth daemon is "off" with the periodic datapath resync (a dump and diff of every entry, once a minute by default)
 * made hourly, and a sixth upstream flannel's flanneld (v0.28.9) with the same peers and flags, which has neither
 * probes, metrics nor a resync: the idle cost of both "off" daemons is compared with it.
 * CPU is utime + stime from /proc over the window, RSS the mean of 1 s samples over the window.
 */
import { readFileSync } from 'node:fs';
import { startKernelWatch } from './kernel-watch.js';
import { benchMain, benchPeers, mb, ratio, sleep, table, verdict, type BenchContext } from './bench-kit.js';
import { describeCrashes, memoryOf, startLoadedHub, startProgrammedDaemon, type DaemonKind, type DaemonRun, type LoadedHub } from './loaded-host.js';
import type { Host } from '../helpers/topology.js';

const PEERS = benchPeers();
const PROBE_INTERVAL_S = 30;
const SCRAPE_EVERY_MS = 15_000;
/** A whole probe pass plus the timeouts of its last probes, so the window sees the steady state. */
const WARM_UP_MS = (PROBE_INTERVAL_S + 5) * 1000;
const WINDOW_MS = Number(process.env['BENCH_WINDOW_S'] ?? 60) * 1000;
const HEALTH_PORT = 8472 + 100;
const CLOCK_TICKS_PER_S = 100;
/** The targets for probes and metrics together (docs/benchmarks.md), over the daemon with both off. */
const TARGET_CPU_PERCENT = 2;
const TARGET_RSS_MB = 20;

interface Variant {
  readonly name: string;
  readonly daemon: DaemonKind;
  readonly what: string;
  readonly probes: boolean;
  readonly metrics: boolean;
  readonly answering: boolean;
  readonly args?: readonly string[];
}

const VARIANTS: readonly Variant[] = [
  { name: 'off', daemon: 'ours', what: 'probes off, no health port', probes: false, metrics: false, answering: false },
  { name: 'metrics', daemon: 'ours', what: `metrics scraped every ${SCRAPE_EVERY_MS / 1000} s, probes off`, probes: false, metrics: true, answering: false },
  { name: 'silent', daemon: 'ours', what: `metrics + probes every ${PROBE_INTERVAL_S} s, no peer answers`, probes: true, metrics: true, answering: false },
  { name: 'answering', daemon: 'ours', what: `metrics + probes every ${PROBE_INTERVAL_S} s, every peer answers`, probes: true, metrics: true, answering: true },
  { name: 'off, hourly resync', daemon: 'ours', what: 'as off, with --datapath-resync=3600', probes: false, metrics: false, answering: false, args: ['--datapath-resync=3600'] },
  { name: 'upstream', daemon: 'upstream', what: 'upstream flanneld v0.28.9 (no probes, no metrics)', probes: false, metrics: false, answering: false },
];
/** Ours idle ("off") against upstream's: CPU no higher, RSS at most this multiple. */
const TARGET_RSS_VS_UPSTREAM = 1.5;

interface Measured {
  readonly variant: Variant;
  readonly cpuSeconds: number;
  readonly rssKiB: number;
  readonly scrapes: number;
  readonly scrapeBytes: number;
  readonly probeCount: number;
}

/** utime + stime of a process, in seconds. */
function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces or parentheses: fields count from after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
}

async function scrape(host: Host): Promise<string> {
  return host.ns.exec(process.execPath, ['-e', `fetch('http://127.0.0.1:${HEALTH_PORT}/metrics').then(r => r.text()).then(t => process.stdout.write(t))`]);
}

function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

async function startVariant(ctx: BenchContext, hub: LoadedHub, host: Host, variant: Variant): Promise<DaemonRun> {
  const watch = await startKernelWatch(host.ns);
  ctx.defer(() => watch.stop());
  const args = variant.daemon === 'ours' ? [`--peer-probe-interval=${variant.probes ? PROBE_INTERVAL_S : 0}`, ...(variant.args ?? [])] : [];
  if (variant.metrics) args.push('--healthz-ip=127.0.0.1', `--healthz-port=${HEALTH_PORT}`);
  const daemon = await startProgrammedDaemon(ctx, hub, host, watch, PEERS, 90_000, { args, daemon: variant.daemon });
  await watch.stop();
  ctx.note(`${variant.name}: flanneld on ${host.name} programmed ${PEERS} peers (crashes: ${describeCrashes(daemon.crashes)})`);
  // Host routes in the local table: it is merged with main, where they beat the peers' /24 routes by length.
  if (variant.answering) {
    const batch = hub.peers.map((p) => `route add local ${p.gateway}/32 dev lo table local`).join('\n');
    await host.ns.exec('ip', ['-batch', '-'], `${batch}\n`);
  }
  return daemon;
}

benchMain({
  tag: 'pc',
  title: `Cost of peer probes and metrics with ${PEERS} vxlan peers`,
  deadlineMs: 235_000,
  body: async (ctx) => {
    const hub = await startLoadedHub(ctx, VARIANTS.length, PEERS);
    const daemons: DaemonRun[] = [];
    for (const [i, variant] of VARIANTS.entries()) daemons.push(await startVariant(ctx, hub, hub.topology.hosts[i]!, variant));
    ctx.note(`warming up for ${WARM_UP_MS / 1000} s (one probe pass)`);
    await sleep(WARM_UP_MS);

    const pids = daemons.map((d) => d.proc.pid);
    const cpuBefore = pids.map(cpuSecondsOf);
    const rssSamples: number[][] = pids.map(() => []);
    const scrapes = VARIANTS.map(() => ({ count: 0, bytes: 0, last: '' }));
    const started = Date.now();
    let nextScrape = started;
    // Bounded by the window: one round per second.
    while (Date.now() - started < WINDOW_MS) {
      for (const [i, pid] of pids.entries()) rssSamples[i]!.push(memoryOf(pid).rssKiB);
      if (Date.now() >= nextScrape) {
        nextScrape += SCRAPE_EVERY_MS;
        for (const [i, variant] of VARIANTS.entries()) {
          if (!variant.metrics) continue;
          const text = await scrape(hub.topology.hosts[i]!);
          scrapes[i]!.count++;
          scrapes[i]!.bytes += text.length;
          scrapes[i]!.last = text;
        }
      }
      await sleep(1000);
    }
    const windowS = (Date.now() - started) / 1000;
    const cpuAfter = pids.map(cpuSecondsOf);
    for (const d of daemons) if (d.proc.child.exitCode !== null) throw new Error(`flanneld on ${d.host.name} exited: ${d.proc.output().slice(-2000)}`);

    const measured: Measured[] = VARIANTS.map((variant, i) => ({
      variant,
      cpuSeconds: cpuAfter[i]! - cpuBefore[i]!,
      rssKiB: rssSamples[i]!.reduce((a, b) => a + b, 0) / rssSamples[i]!.length,
      scrapes: scrapes[i]!.count,
      scrapeBytes: scrapes[i]!.count > 0 ? scrapes[i]!.bytes / scrapes[i]!.count : 0,
      probeCount: metricValue(scrapes[i]!.last, 'flanneld_peer_probe_rtt_seconds_count'),
    }));
    const base = measured[0]!;
    const upstream = measured.find((m) => m.variant.daemon === 'upstream')!;
    const perMinute = (m: Measured): number => (m.cpuSeconds / windowS) * 60;
    const percentOfCore = (m: Measured): number => (m.cpuSeconds / windowS) * 100;
    const hourly = measured.find((m) => m.variant.name === 'off, hourly resync')!;
    const rows = measured.filter((m) => m !== upstream && m !== hourly).map((m) => {
      const extraCpu = percentOfCore(m) - percentOfCore(base);
      const extraRssMB = (m.rssKiB - base.rssKiB) / 1024;
      const judged = m.variant.probes;
      return [
        `${m.variant.name}: ${m.variant.what}`,
        `${perMinute(m).toFixed(2)} s`,
        `${percentOfCore(m).toFixed(2)} %`,
        m === base ? '–' : `${extraCpu >= 0 ? '+' : ''}${extraCpu.toFixed(2)} %`,
        mb(m.rssKiB),
        m === base ? '–' : `${extraRssMB >= 0 ? '+' : ''}${extraRssMB.toFixed(1)} MB`,
        m.variant.metrics ? `${m.scrapes} × ${(m.scrapeBytes / 1024).toFixed(0)} KiB` : '–',
        Number.isFinite(m.probeCount) ? String(m.probeCount) : '–',
        judged ? verdict(extraCpu < TARGET_CPU_PERCENT && extraRssMB < TARGET_RSS_MB) : '–',
      ];
    });
    const versus = table(['idle, 5000 peers', 'CPU per minute', 'of one core', 'RSS (mean)', 'target', 'verdict'], [
      [`upstream flanneld: ${upstream.variant.what}`, `${perMinute(upstream).toFixed(2)} s`, `${percentOfCore(upstream).toFixed(2)} %`, mb(upstream.rssKiB), '', ''],
      ...[base, hourly].flatMap((m) => [
        [`flanneld-ts "${m.variant.name}": ${m.variant.what}`, `${perMinute(m).toFixed(2)} s`, `${percentOfCore(m).toFixed(2)} %`, mb(m.rssKiB), '', ''],
        [`flanneld-ts "${m.variant.name}" / upstream`, ratio(m.cpuSeconds, upstream.cpuSeconds), '', ratio(m.rssKiB, upstream.rssKiB),
          `CPU ≤ 1.00×, RSS ≤ ${TARGET_RSS_VS_UPSTREAM.toFixed(1)}×`,
          `CPU ${verdict(m.cpuSeconds <= upstream.cpuSeconds)}, RSS ${verdict(m.rssKiB <= TARGET_RSS_VS_UPSTREAM * upstream.rssKiB)}`],
      ]),
    ]);
    return [
      table(['daemon', 'CPU per minute', 'of one core', 'vs off', 'RSS (mean)', 'vs off', 'scrapes', 'probes answered (total)', `target (< ${TARGET_CPU_PERCENT} %, < ${TARGET_RSS_MB} MB)`], rows),
      '',
      '',
      versus,
      '',
      `Six daemons side by side (five of ours, one upstream), each holding the same ${PEERS} peers, measured over the same ${windowS.toFixed(0)} s window after ` +
        `${WARM_UP_MS / 1000} s of warm-up. "probes answered" is flanneld_peer_probe_rtt_seconds_count at the last scrape, since the daemon started. ` +
        'In "silent" every probe of the fake peers times out (their VTEPs do not exist); in "answering" local host routes make the host\'s own kernel answer them.',
    ].join('\n');
  },
});
