/**
 * The same-run floors the benchmarks divide by (docs/benchmarks.md explains why): the kernel taking the same entries
 * from iproute2 batches, a persistent `ip -batch -` making one change at a time, and a bare `node -e 0`. They run in
 * namespaces of the benchmark's own run and are observed through the same `ip monitor` as flanneld, so the two sides
 * pay the same observation cost.
 */
import { execFile } from 'node:child_process';
import { sh, type Netns } from '../helpers/netns.js';
import { spawnTracked, type TrackedProcess } from '../helpers/processes.js';
import { now, sleep, type BenchContext } from './bench-kit.js';
import { startKernelWatch, watchEntries, type EntriesReached, type KernelWatch } from './kernel-watch.js';
import { addFloorVxlan, batchFiles, type PeerLease } from './peer-leases.js';

export interface BatchFloor {
  readonly ns: Netns;
  readonly watch: KernelWatch;
  /** From starting `ip -batch` until the monitor saw every entry. */
  readonly ms: number;
  /** Until both batch processes had exited. */
  readonly batchMs: number;
  readonly via: EntriesReached['via'];
}

/** A fresh namespace with flannel.1, then every peer's neighbour + route (ip -batch) and FDB entry (bridge -batch). */
export async function batchFloor(ctx: BenchContext, name: string, peers: readonly PeerLease[], dir: string): Promise<BatchFloor> {
  const ns = await ctx.run.create(name);
  await addFloorVxlan(ns);
  const files = batchFiles(peers, dir);
  const watch = await startKernelWatch(ns);
  ctx.defer(() => watch.stop());
  const entries = watchEntries(watch, ns, peers.length, 30_000);
  const started = now();
  await sh('ip', ['-n', ns.name, '-batch', files.ip]);
  await sh('bridge', ['-n', ns.name, '-batch', files.bridge]);
  const batchMs = now() - started;
  const reached = await entries.result;
  return { ns, watch, ms: reached.at - started, batchMs, via: reached.via };
}

/** Wall time of `ip netns exec <ns> node -e 0`, `runs` times. */
export async function nodeStartFloor(ns: Netns, runs: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = now();
    await new Promise<void>((resolve, reject) => {
      execFile('ip', ['netns', 'exec', ns.name, process.execPath, '-e', '0'], { timeout: 10_000 }, (err) => (err ? reject(err) : resolve()));
    });
    out.push(now() - started);
  }
  return out;
}

export interface IpBatch {
  /** Writes one command; returns performance.now() just before the write. */
  send(command: string): number;
  stop(): Promise<void>;
}

/** A long-lived `ip -force -batch -` in `ns`: one change per line, no process start per change. */
export function startIpBatch(ctx: BenchContext, ns: Netns): IpBatch {
  const proc: TrackedProcess = spawnTracked('ip', ['-n', ns.name, '-force', '-batch', '-'], { stdio: ['pipe', 'pipe', 'pipe'] }, ns.name);
  const stop = async (): Promise<void> => {
    proc.child.stdin?.end();
    await proc.stop('SIGTERM', 2000);
  };
  ctx.defer(stop);
  return {
    send(command) {
      const at = now();
      proc.child.stdin!.write(`${command}\n`);
      return at;
    },
    stop,
  };
}

/**
 * Kernel floor for "a route appears": `count` new onlink routes (10.250.<i>.0/24, outside every peer's subnet),
 * each written to a persistent ip -batch and timed until the monitor shows it; `gapMs` between them.
 */
export async function routeAddFloor(ctx: BenchContext, floor: BatchFloor, count: number, gapMs: number): Promise<number[]> {
  if (count > 250) throw new Error('routeAddFloor: at most 250 routes');
  const batch = startIpBatch(ctx, floor.ns);
  const out: number[] = [];
  try {
    for (let i = 0; i < count && ctx.remainingMs() > 30_000; i++) {
      const subnet = `10.250.${i}.0/24`;
      const seen = floor.watch.waitLine((t) => t.startsWith(`${subnet} via`), 2000, `floor route ${subnet}`);
      const sent = batch.send(`route replace ${subnet} via 10.250.${i}.0 dev flannel.1 onlink`);
      out.push((await seen) - sent);
      await sleep(gapMs);
    }
  } finally {
    for (let i = 0; i < count; i++) batch.send(`route del 10.250.${i}.0/24`);
    await batch.stop();
  }
  return out;
}
