/**
 * The set-up the kernel-facing benchmarks share: the hub/host topology with etcd on the hub holding thousands of
 * vxlan peer leases (written by etcd-writer.js inside the hub), and a real flanneld on a host, timed from spawn
 * until every peer's route, neighbour and FDB entry is in that host's kernel. Everything is registered for
 * teardown with the benchmark's context.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, watch as watchDir } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { EtcdServer } from '../helpers/etcd-server.js';
import { startFlanneld, startUpstreamFlanneld } from '../helpers/flanneld-process.js';
import type { Netns } from '../helpers/netns.js';
import { spawnTracked, type TrackedProcess } from '../helpers/processes.js';
import { buildTopology, startEtcdOnHub, type Host, type Topology } from '../helpers/topology.js';
import { formatSubnetKey } from '../../flanneld/lease/subnet-key.js';
import { previousSubnets } from '../../flanneld/subnet/subnet-env.js';
import { now, sleep, type BenchContext } from './bench-kit.js';
import { countEntries, FLANNEL_V4, FLANNEL_V6, watchEntries, type EntriesReached, type EntryCounts, type KernelWatch } from './kernel-watch.js';
import { DUAL_ETCD_PREFIX, DUAL_NETWORK_CONFIG, ETCD_PREFIX, NETWORK_CONFIG, peerLeases, type PeerLease } from './peer-leases.js';

const WRITER = fileURLToPath(new URL('./etcd-writer.js', import.meta.url));

export interface EtcdWriter {
  put(kvs: readonly (readonly [string, string])[]): Promise<void>;
  /** One put; `sent` is performance.now() just before the request went to the writer, `acked` when etcd confirmed it. */
  putOne(key: string, value: string): { readonly sent: number; readonly acked: Promise<number> };
  del(keys: readonly string[]): Promise<void>;
  stop(): Promise<void>;
}

export async function startEtcdWriter(hub: Netns, endpoint: string): Promise<EtcdWriter> {
  const proc = spawnTracked('ip', ['netns', 'exec', hub.name, process.execPath, WRITER, endpoint], { stdio: ['pipe', 'pipe', 'pipe'] }, WRITER);
  const pending = new Map<number, { resolve: (at: number) => void; reject: (err: Error) => void }>();
  let nextId = 1;
  let ready: (() => void) | undefined;
  const readyP = new Promise<void>((r) => (ready = r));
  createInterface({ input: proc.child.stdout! }).on('line', (line) => {
    const at = now();
    const msg = JSON.parse(line) as { id?: number; ok?: boolean; error?: string; ready?: boolean };
    if (msg.ready) ready?.();
    if (msg.id === undefined) return;
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error !== undefined) p?.reject(new Error(`etcd-writer: ${msg.error}`));
    else p?.resolve(at);
  });
  // Its output holds our replies as well; only the rest says why it stopped.
  const why = (): string => proc.output().split('\n').filter((l) => !l.startsWith('{"id"')).join('\n').slice(-500);
  void proc.exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`etcd-writer exited: ${why()}`));
    pending.clear();
  });
  const send = (req: object): { sent: number; acked: Promise<number> } => {
    const id = nextId++;
    const acked = new Promise<number>((resolve, reject) => pending.set(id, { resolve, reject }));
    const sent = now();
    proc.child.stdin!.write(`${JSON.stringify({ id, ...req })}\n`);
    return { sent, acked };
  };
  await Promise.race([
    readyP,
    proc.exited.then((code) => Promise.reject(new Error(`etcd-writer exited with ${code}: ${why()}`))),
    new Promise((_, reject) => setTimeout(() => reject(new Error('etcd-writer not ready in 15 s')), 15_000).unref()),
  ]);
  return {
    put: async (kvs) => void (await send({ op: 'put', kvs }).acked),
    putOne: (key, value) => send({ op: 'put', kvs: [[key, value]] }),
    del: async (keys) => void (await send({ op: 'del', keys }).acked),
    stop: async () => {
      proc.child.stdin!.end();
      await proc.stop('SIGTERM', 3000);
    },
  };
}

export interface LoadedHub {
  readonly topology: Topology;
  readonly etcd: EtcdServer;
  readonly writer: EtcdWriter;
  readonly peers: readonly PeerLease[];
  /** Scratch directory (subnet.env files, batch files), removed at teardown. */
  readonly dir: string;
  /** How long writing the peer leases took. */
  readonly seedMs: number;
  /** With `dualStack`: the same peers with IPv6 subnets too, in a network of their own (DUAL_ETCD_PREFIX). */
  readonly dual?: { readonly peers: readonly PeerLease[]; readonly seedMs: number };
}

export interface LoadedHubOptions {
  /**
   * Also an IPv6 underlay (2001:db8:2::/64 on every host's eth0, no DAD) and a dual-stack network beside the
   * IPv4-only one, holding the same number of dual-stack peer leases, for daemons started with `dualStack`.
   */
  readonly dualStack?: boolean;
}

/** `hosts` host namespaces on the hub, etcd with the network config and `peerCount` vxlan peer leases. */
export async function startLoadedHub(ctx: BenchContext, hosts: number, peerCount: number, opts: LoadedHubOptions = {}): Promise<LoadedHub> {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-bench-'));
  ctx.defer(async () => rmSync(dir, { recursive: true, force: true }));
  const topology = await buildTopology(ctx.run, { hosts, stack: opts.dualStack ? 'dual' : 'v4' });
  const etcd = await startEtcdOnHub(topology);
  ctx.defer(() => etcd.stop());
  const writer = await startEtcdWriter(topology.hub, etcd.endpoint);
  ctx.defer(() => writer.stop());
  const etcdctl = (...args: string[]): Promise<string> => topology.hub.exec('etcdctl', [`--endpoints=${etcd.endpoint}`, ...args]);
  const seed = async (prefix: string, config: object, peers: readonly PeerLease[]): Promise<number> => {
    await etcdctl('put', `${prefix}/config`, JSON.stringify(config));
    const started = now();
    await writer.put(peers.map((p) => [p.key, p.value] as const));
    const seedMs = now() - started;
    const count = (JSON.parse(await etcdctl('get', '--prefix', '--limit=1', '-w', 'json', `${prefix}/subnets/`)) as { count?: unknown }).count;
    if (Number(count ?? 0) !== peerCount) throw new Error(`etcd holds ${count} leases under ${prefix} after seeding, expected ${peerCount}`);
    ctx.note(`${peerCount} leases written to etcd under ${prefix} in ${seedMs.toFixed(0)} ms`);
    return seedMs;
  };
  const peers = peerLeases(peerCount);
  const seedMs = await seed(ETCD_PREFIX, NETWORK_CONFIG, peers);
  if (!opts.dualStack) return { topology, etcd, writer, peers, dir, seedMs };
  const dualPeers = peerLeases(peerCount, 0, new Set(), 'dual');
  return { topology, etcd, writer, peers, dir, seedMs, dual: { peers: dualPeers, seedMs: await seed(DUAL_ETCD_PREFIX, DUAL_NETWORK_CONFIG, dualPeers) } };
}

/** A daemon process that ended before its entries were all in the kernel. */
export interface DaemonCrash {
  /** From that process's spawn. */
  readonly afterMs: number;
  readonly exit: number | string;
  /** On flannel.1 (on flannel-v6.1 too: `entriesV6`, for a dual-stack daemon). */
  readonly entries: EntryCounts;
  readonly entriesV6?: EntryCounts;
  /** Its VmHWM as last sampled (every 50 ms) before it died, in KiB; a lower bound of its peak. */
  readonly hwmKiB: number;
  /** The last lines it wrote (stderr and log). */
  readonly tail: string;
}

export interface DaemonRun {
  readonly host: Host;
  /** The process that got there (the last one, after restarts). */
  readonly proc: TrackedProcess;
  /** performance.now() just before the first spawn. */
  readonly spawnedAt: number;
  /** Date.now() just before the last spawn (the origin of logPhases). */
  readonly spawnedEpoch: number;
  readonly reached: EntriesReached;
  readonly envFile: string;
  /** The etcd prefix of the daemon's network. */
  readonly prefix: string;
  /** Earlier processes that died on the way, each restarted at once as a supervisor would. */
  readonly crashes: readonly DaemonCrash[];
  /** The first process's log lines as offsets from its spawn (the cold start proper, even if it crashed); empty for upstream's daemon. */
  readonly firstPhases: Map<string, number>;
  /** performance.now() when the subnet file appeared (an inotify event in the bench process, for either daemon). */
  readonly subnetFileAt: number;
}

/** Which flanneld a benchmark starts: ours, or upstream flannel's (tools/build.sh flannel) with the same arguments. */
export type DaemonKind = 'ours' | 'upstream';

export interface ProgrammedDaemonOptions {
  readonly args?: readonly string[];
  readonly maxRestarts?: number;
  readonly dualStack?: boolean;
  readonly daemon?: DaemonKind;
}

/**
 * Starts flanneld on `host` and resolves when `perKind` routes, neighbours and FDB entries are in its kernel. A
 * daemon that dies first is restarted at once, up to `maxRestarts` times (a supervisor's job), and the crash is
 * recorded; the time still counts from the first spawn. `opts.args` are added to the daemon's command line. With
 * `opts.dualStack` (a hub started with it) the daemon joins the dual-stack network and is done when flannel-v6.1
 * holds `perKind` of each kind as well.
 */
export async function startProgrammedDaemon(
  ctx: BenchContext,
  hub: LoadedHub,
  host: Host,
  watch: KernelWatch,
  perKind: number,
  timeoutMs: number,
  opts: ProgrammedDaemonOptions = {},
): Promise<DaemonRun> {
  const maxRestarts = opts.maxRestarts ?? 2;
  if (opts.dualStack && !hub.dual) throw new Error('startProgrammedDaemon: dualStack needs a hub started with dualStack');
  const prefix = opts.dualStack ? DUAL_ETCD_PREFIX : ETCD_PREFIX;
  const envFile = join(hub.dir, `${host.name}.env`);
  rmSync(envFile, { force: true });
  const entries = watchEntries(watch, host.ns, perKind, timeoutMs, opts.dualStack ? [FLANNEL_V4, FLANNEL_V6] : [FLANNEL_V4]);
  const subnetFile = fileAppears(envFile);
  // BENCH_FLANNELD_NODE_OPTIONS (e.g. --cpu-prof) reaches the daemon's node for diagnosis.
  const nodeOptions = process.env['BENCH_FLANNELD_NODE_OPTIONS'];
  const args = [
    `--etcd-endpoints=${hub.etcd.endpoint}`, `--subnet-file=${envFile}`, '--iface=eth0',
    ...(opts.dualStack ? [`--etcd-prefix=${prefix}`] : []), ...(opts.args ?? []),
  ];
  const crashes: DaemonCrash[] = [];
  let firstPhases: (() => Map<string, number>) | undefined;
  const spawnedAt = now();
  for (let attempt = 0; ; attempt++) {
    const spawnedEpoch = Date.now();
    const attemptAt = now();
    const proc = opts.daemon === 'upstream'
      ? startUpstreamFlanneld(host.ns.name, args)
      : startFlanneld(host.ns.name, args, nodeOptions ? { NODE_OPTIONS: nodeOptions } : {});
    ctx.defer(() => proc.stop('SIGTERM', 3000));
    firstPhases ??= () => logPhases(proc.output(), spawnedEpoch);
    let hwmKiB = Number.NaN;
    const sampler = setInterval(() => {
      try {
        // A zombie's status has no VmHWM line: keep the last real sample.
        const sampled = memoryOf(proc.pid).hwmKiB;
        if (Number.isFinite(sampled)) hwmKiB = sampled;
      } catch {
        // not exec'd into node yet, or already gone
      }
    }, 50);
    let outcome: { reached: EntriesReached } | { exit: number | string };
    try {
      outcome = await Promise.race([entries.result.then((reached) => ({ reached })), proc.exited.then((exit) => ({ exit }))]);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nflanneld output:\n${proc.output().slice(-3000)}`, { cause: err });
    } finally {
      clearInterval(sampler);
    }
    if ('reached' in outcome) {
      // Both daemons write it before programming peers; a missing file is reported as n/a, not waited for.
      const subnetFileAt = await Promise.race([subnetFile.appeared, sleep(5000).then(() => Number.NaN)]);
      subnetFile.cancel();
      return { host, proc, spawnedAt, spawnedEpoch, reached: outcome.reached, envFile, prefix, crashes, firstPhases: firstPhases(), subnetFileAt };
    }
    const crash = {
      afterMs: now() - attemptAt, exit: outcome.exit, entries: await countEntries(host.ns),
      ...(opts.dualStack ? { entriesV6: await countEntries(host.ns, FLANNEL_V6) } : {}), hwmKiB, tail: proc.output().slice(-600),
    };
    crashes.push(crash);
    ctx.note(`flanneld on ${host.name} exited with ${crash.exit} after ${crash.afterMs.toFixed(0)} ms, before all entries were in ` +
      `(kernel: ${crash.entries.route} routes, ${crash.entries.neigh} neighbours, ${crash.entries.fdb} fdb)`);
    if (attempt >= maxRestarts) {
      entries.cancel();
      subnetFile.cancel();
      throw new Error(`flanneld on ${host.name} exited ${crashes.length} times before programming ${perKind} peers; last output:\n${proc.output().slice(-3000)}`);
    }
  }
}

/**
 * performance.now() of the first inotify event that leaves `path` in place, watched from now on (both daemons write
 * a temporary file and rename it, so the event is the rename). Polling would add its own period to the figure.
 */
function fileAppears(path: string): { readonly appeared: Promise<number>; cancel(): void } {
  const name = path.slice(path.lastIndexOf('/') + 1);
  let watcher: ReturnType<typeof watchDir> | undefined;
  const appeared = new Promise<number>((resolve) => {
    watcher = watchDir(path.slice(0, path.lastIndexOf('/')), (_event, file) => {
      if (file !== name || !existsSync(path)) return;
      const at = now();
      watcher?.close();
      resolve(at);
    });
  });
  return { appeared, cancel: () => watcher?.close() };
}

/** Crashes as one table cell, e.g. "SIGABRT after 998 ms (742/5000/5000)", flannel-v6.1's counts after a "+". */
export function describeCrashes(crashes: readonly DaemonCrash[]): string {
  const counts = (e: EntryCounts): string => `${e.route}/${e.neigh}/${e.fdb}`;
  return crashes.map((c) => `${c.exit} after ${c.afterMs.toFixed(0)} ms (${counts(c.entries)}${c.entriesV6 ? ` + ${counts(c.entriesV6)}` : ''})`).join('; ') || 'none';
}

/** The daemon's subnet from its subnet.env, as "10.x.y.0/24". */
export function daemonSubnet(run: DaemonRun): string {
  const m = /^FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.\d+\/(\d+)$/m.exec(readFileSync(run.envFile, 'utf8'));
  if (!m) throw new Error(`${run.envFile} has no FLANNEL_SUBNET`);
  return `${m[1]}.0/${m[2]}`;
}

/** The etcd key of the daemon's own lease (both subnets of a dual-stack one), from its subnet.env. */
export function daemonLeaseKey(run: DaemonRun): string {
  const subnets = previousSubnets(readFileSync(run.envFile, 'utf8'));
  if (!subnets.subnet && !subnets.ipv6Subnet) throw new Error(`${run.envFile} has no FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET`);
  return `${run.prefix}/subnets/${formatSubnetKey(subnets)}`;
}

/**
 * Peak and current resident set of a daemon process, in KiB: ours is node, upstream's is flanneld (`ip netns exec`
 * execs either in place, so before that the PID is still `ip` and the read is refused).
 */
export function memoryOf(pid: number): { hwmKiB: number; rssKiB: number } {
  const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  if (!comm.startsWith('node') && comm !== 'flanneld') throw new Error(`PID ${pid} is ${comm}, not node or flanneld`);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { hwmKiB: field('VmHWM'), rssKiB: field('VmRSS') };
}

/** flanneld's log lines (pino JSON) as offsets in ms from `spawnedEpoch`, first occurrence of each message. */
export function logPhases(output: string, spawnedEpoch: number): Map<string, number> {
  const phases = new Map<string, number>();
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const rec = JSON.parse(line) as { time?: unknown; msg?: unknown };
      const time = typeof rec.time === 'number' ? rec.time : typeof rec.time === 'string' ? Date.parse(rec.time) : Number.NaN;
      if (Number.isFinite(time) && typeof rec.msg === 'string' && !phases.has(rec.msg)) phases.set(rec.msg, time - spawnedEpoch);
    } catch {
      // not a log record
    }
  }
  return phases;
}
