/**
 * Sees route, neighbour and FDB changes in a namespace as they happen, without polling: one `ip monitor route
 * neigh` per namespace (its netlink socket lives in that namespace, never in the root one), read as a line stream
 * and stamped on arrival. `ip monitor` shows vxlan FDB entries as AF_BRIDGE neighbours, so one stream covers all
 * three kinds. Dump counts are the fallback when the monitor overruns, and the final check.
 */
import { createInterface } from 'node:readline';
import { sh, type Netns } from '../helpers/netns.js';
import { spawnTracked, type TrackedProcess } from '../helpers/processes.js';
import { now, sleep } from './bench-kit.js';

export interface KernelLine {
  readonly text: string;
  /** performance.now() when the line arrived. */
  readonly at: number;
}

export interface KernelWatch {
  readonly process: TrackedProcess;
  /** Calls `fn` for every line from now on; returns the unsubscribe function. */
  subscribe(fn: (line: KernelLine) => void): () => void;
  /** Arrival time of the first line from now on that `match` accepts; rejects after `timeoutMs`. */
  waitLine(match: (text: string) => boolean, timeoutMs: number, what: string): Promise<number>;
  /** True once ip reported lost notifications (its receive buffer overran). */
  overran(): boolean;
  stop(): Promise<void>;
}

const PROBE = '203.0.113.77';

export async function startKernelWatch(ns: Netns): Promise<KernelWatch> {
  // 4 MiB (net.core.rmem_max here) so a 64 KiB netlink batch from flanneld cannot overrun the monitor.
  const proc = spawnTracked('ip', ['-n', ns.name, '-rcvbuf', '4194304', 'monitor', 'route', 'neigh'], {}, ns.name);
  const listeners = new Set<(line: KernelLine) => void>();
  let overran = false;
  proc.child.stderr?.on('data', (chunk: Buffer) => {
    if (/No buffer space|ENOBUFS/i.test(chunk.toString())) overran = true;
  });
  createInterface({ input: proc.child.stdout! }).on('line', (text) => {
    const line = { text, at: now() };
    for (const fn of listeners) fn(line);
  });
  const watch: KernelWatch = {
    process: proc,
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    waitLine(match, timeoutMs, what) {
      return new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => {
          off();
          reject(new Error(`no kernel notification for ${what} within ${timeoutMs} ms`));
        }, timeoutMs);
        const off = watch.subscribe((line) => {
          if (!match(line.text)) return;
          clearTimeout(timer);
          off();
          resolve(line.at);
        });
      });
    },
    overran: () => overran,
    stop: async () => {
      await proc.stop('SIGTERM', 2000);
    },
  };
  // `ip monitor` has no ready signal: add a probe route until its notification shows up, then remove it.
  try {
    const deadline = now() + 5000;
    for (let seen = false; !seen; ) {
      if (proc.child.exitCode !== null || now() > deadline) throw new Error(`ip monitor in ${ns.name} did not start: ${proc.output()}`);
      const line = watch.waitLine((t) => t.startsWith(`${PROBE} dev lo`), 200, 'probe').catch(() => undefined);
      await ns.ip('route', 'replace', `${PROBE}/32`, 'dev', 'lo');
      seen = (await line) !== undefined;
      await ns.ip('route', 'del', `${PROBE}/32`, 'dev', 'lo').catch(() => undefined);
    }
  } catch (err) {
    await watch.stop();
    throw err;
  }
  return watch;
}

export type EntryKind = 'route' | 'neigh' | 'fdb';

export interface ParsedLine {
  readonly kind: EntryKind;
  /** route: the destination CIDR; neigh: the IP; fdb: "<mac> <dst>". */
  readonly key: string;
  readonly deleted: boolean;
}

/** A vxlan device flanneld programs peers on, and how to tell its neighbours (overlay) from FDB dsts (underlay). */
export interface OverlayDevice {
  readonly name: string;
  readonly family: 4 | 6;
  /** How every overlay (neighbour) address starts; FDB dsts are underlay addresses, which never do. */
  readonly overlayPrefix: string;
  readonly routeLine: RegExp;
  readonly neighLine: RegExp;
}

function overlayDevice(name: string, family: 4 | 6, overlayPrefix: string): OverlayDevice {
  const dev = name.replace(/\./g, '\\.');
  return {
    name,
    family,
    overlayPrefix,
    routeLine: new RegExp(`^(Deleted )?(\\S+\\/\\d+) via \\S+ dev ${dev} .*onlink`),
    neighLine: new RegExp(`^(Deleted )?(\\S+) dev ${dev} lladdr (\\S+) .*PERMANENT`),
  };
}

export const FLANNEL_V4 = overlayDevice('flannel.1', 4, '10.');
/** flannel-v6.1 with the benchmarks' IPv6 network (peer-leases.ts DUAL_NETWORK_CONFIG, 2001:db8:a::/48). */
export const FLANNEL_V6 = overlayDevice('flannel-v6.1', 6, '2001:db8:a:');

/** A peer entry on `device` (default flannel.1) in `ip monitor` output. */
export function parseKernelLine(text: string, device: OverlayDevice = FLANNEL_V4): ParsedLine | undefined {
  const r = device.routeLine.exec(text);
  if (r) return { kind: 'route', key: r[2] as string, deleted: r[1] !== undefined };
  const n = device.neighLine.exec(text);
  if (!n) return undefined;
  const deleted = n[1] !== undefined;
  const first = n[2] as string;
  return first.startsWith(device.overlayPrefix) ? { kind: 'neigh', key: first, deleted } : { kind: 'fdb', key: `${n[3]} ${first}`, deleted };
}

export interface EntryCounts {
  readonly route: number;
  readonly neigh: number;
  readonly fdb: number;
}

/** What the kernel holds on `device` (default flannel.1) in `ns`, by dump (three iproute2 calls; not for tight loops). */
export async function countEntries(ns: Netns, device: OverlayDevice = FLANNEL_V4): Promise<EntryCounts> {
  const lines = (text: string, needle: string): number => text.split('\n').filter((l) => l.includes(needle)).length;
  const [routes, neighs, fdbs] = await Promise.all([
    sh('ip', ['-n', ns.name, `-${device.family}`, 'route', 'show', 'dev', device.name]).catch(() => ''),
    sh('ip', ['-n', ns.name, `-${device.family}`, 'neigh', 'show', 'dev', device.name]).catch(() => ''),
    sh('bridge', ['-n', ns.name, 'fdb', 'show', 'dev', device.name]).catch(() => ''),
  ]);
  return { route: lines(routes, ' onlink'), neigh: lines(neighs, 'PERMANENT'), fdb: lines(fdbs, ' dst ') };
}

export interface EntriesReached {
  /** performance.now() when the last needed entry was seen. */
  readonly at: number;
  /** 'monitor' normally; 'dump' when the monitor overran and polling took over (coarser by up to 100 ms). */
  readonly via: 'monitor' | 'dump';
}

export interface EntriesWatch {
  /** Settles once, when the counts are reached, on timeout, or (rejecting) on cancel. */
  readonly result: Promise<EntriesReached>;
  cancel(): void;
}

/**
 * Watches until `ns` holds at least `perKind` routes, neighbours and FDB entries on each of `devices` (default
 * flannel.1 alone) added since the call (entries survive a daemon restart, so a restarted daemon's additions count
 * on top). Call it before whatever programs the entries.
 */
export function watchEntries(
  watch: KernelWatch,
  ns: Netns,
  perKind: number,
  timeoutMs: number,
  devices: readonly OverlayDevice[] = [FLANNEL_V4],
): EntriesWatch {
  const seen = devices.map((device) => ({ device, sets: { route: new Set<string>(), neigh: new Set<string>(), fdb: new Set<string>() } as Record<EntryKind, Set<string>> }));
  const done = (s: Record<EntryKind, Set<string>>): boolean => s.route.size >= perKind && s.neigh.size >= perKind && s.fdb.size >= perKind;
  let reachedAt: number | undefined;
  let cancelled = false;
  const off = watch.subscribe((line) => {
    if (reachedAt !== undefined) return;
    for (const { device, sets } of seen) {
      const parsed = parseKernelLine(line.text, device);
      if (!parsed) continue;
      if (parsed.deleted) sets[parsed.kind].delete(parsed.key);
      else sets[parsed.kind].add(parsed.key);
      if (seen.every((s) => done(s.sets))) reachedAt = line.at;
      break;
    }
  });
  const reached = (c: EntryCounts): boolean => c.route >= perKind && c.neigh >= perKind && c.fdb >= perKind;
  const allReached = async (): Promise<boolean> => (await Promise.all(devices.map((d) => countEntries(ns, d)))).every(reached);
  const poll = async (): Promise<EntriesReached> => {
    const deadline = now() + timeoutMs;
    try {
      while (now() < deadline && !cancelled) {
        if (reachedAt !== undefined) return { at: reachedAt, via: 'monitor' };
        if (watch.overran()) {
          if (await allReached()) return { at: now(), via: 'dump' };
          await sleep(100);
        } else {
          await sleep(10);
        }
      }
      if (cancelled) throw new Error('entry watch cancelled');
      const status = await Promise.all(seen.map(async ({ device, sets }) => {
        const c = await countEntries(ns, device);
        return `${device.name} seen ${sets.route.size}/${sets.neigh.size}/${sets.fdb.size}, kernel ${c.route}/${c.neigh}/${c.fdb}`;
      }));
      throw new Error(`${ns.name}: ${perKind} entries per kind not reached in ${timeoutMs} ms (${status.join('; ')} routes/neighbours/fdb)`);
    } finally {
      off();
    }
  };
  const result = poll();
  result.catch(() => undefined);
  const cancel = (): void => {
    cancelled = true;
  };
  return { result, cancel };
}
