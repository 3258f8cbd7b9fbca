/**
 * Netlink notification overruns against the real kernel, inside test namespaces. A burst of route changes while
 * the listener's event loop is stalled overflows the notification socket's receive buffer: the old binding (the
 * `netlink` package) aborted the process there (exit 134). Now the datapath must live on, deliver one 'overrun'
 * event, count it, and keep both its request and its notification socket working; and a real flanneld, frozen
 * through a burst, must notice the lost notices and restore an entry whose deletion it never heard of.
 *
 * The burst is BURST routes added then deleted with `ip -batch` (2 x BURST changes; the report that started this
 * was 160,000). Only deletions reach our socket (its kernel filter drops RTM_NEW*), and BURST deletions are more
 * than the buffer holds (about 80,000 notices of ~830 bytes in NOTIFICATION_RCVBUF, which the kernel counts
 * double), so the overrun is certain.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApplyReport, LinkInfo } from '../../backends/datapath/datapath.js';
import type { NetlinkStats } from '../../backends/datapath/netlink-datapath.js';
import { NOTIFICATION_RCVBUF } from '../../backends/datapath/netlink/notifications.js';
import { parseIPv4 } from '../../flanneld/ip/address.js';
import { parseCidr } from '../../flanneld/ip/cidr.js';
import { decodeJson, encodeJson } from '../drivers/json-bigint.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, spawnTracked, waitFor, type TrackedProcess } from '../helpers/processes.js';
import { ping } from '../helpers/topology.js';

const BURST = 100_000;
const DRIVER = fileURLToPath(new URL('../../dist/test/drivers/netlink-burst.js', import.meta.url));

/** BURST /32s in 198.18.0.0/15 (the benchmarking range, 131,072 addresses), on `dev`. */
function burstScript(op: 'add' | 'del', dev: string): string {
  const lines: string[] = [];
  for (let i = 0; i < BURST; i++) lines.push(`route ${op} 198.${18 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32 dev ${dev}`);
  return `${lines.join('\n')}\n`;
}

interface Burst {
  readonly addMs: number;
  readonly delMs: number;
}

/** Adds then deletes the BURST routes in `ns`; `dir` holds the batch files. */
async function burst(ns: Netns, dev: string, dir: string): Promise<Burst> {
  const add = join(dir, `add-${dev}`);
  const del = join(dir, `del-${dev}`);
  writeFileSync(add, burstScript('add', dev));
  writeFileSync(del, burstScript('del', dev));
  let t = Date.now();
  await ns.ip('-batch', add);
  const addMs = Date.now() - t;
  t = Date.now();
  await ns.ip('-batch', del);
  return { addMs, delMs: Date.now() - t };
}

interface DriverStats {
  readonly counts: { overrun: number; entryDeleted: number; linkDeleted: number };
  readonly netlink: NetlinkStats;
  readonly lastBlock?: { blockedMs: number; flagSeen: boolean };
  readonly recentDeletedRoutes: string[];
  readonly rssBytes: number;
}

interface BurstDriver {
  readonly process: TrackedProcess;
  call<T>(method: string, ...args: unknown[]): Promise<T>;
  alive(): boolean;
  close(): Promise<void>;
}

async function startDriver(netns: string): Promise<BurstDriver> {
  const proc = spawnTracked('ip', ['netns', 'exec', netns, process.execPath, DRIVER], { stdio: ['pipe', 'pipe', 'pipe'] }, DRIVER);
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let ready: () => void = () => undefined;
  const readyP = new Promise<void>((r) => (ready = r));
  createInterface({ input: proc.child.stdout! }).on('line', (line) => {
    const msg = decodeJson(line) as { id?: number; result?: unknown; error?: string; ready?: boolean };
    if (msg.ready) ready();
    else if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error !== undefined) p?.reject(new Error(msg.error));
      else p?.resolve(msg.result);
    }
  });
  void proc.exited.then((code) => {
    for (const p of pending.values()) p.reject(new Error(`burst driver exited (${code}): ${proc.output().slice(-500)}`));
  });
  await Promise.race([readyP, proc.exited.then(() => Promise.reject(new Error(`driver failed: ${proc.output()}`)))]);
  return {
    process: proc,
    call: <T>(method: string, ...args: unknown[]) =>
      new Promise<T>((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        proc.child.stdin!.write(`${encodeJson({ id, method, args })}\n`);
      }),
    alive: () => proc.child.exitCode === null && proc.child.signalCode === null,
    async close() {
      proc.child.stdin!.end();
      await proc.stop('SIGTERM', 3000);
    },
  };
}

let dir: string;

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  dir = mkdtempSync(join(tmpdir(), 'flannel-ts-burst-'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('NetlinkDatapath through a notification burst', () => {
  const run = new NetnsRun('nlo');
  let ns: Netns;
  let driver: BurstDriver;

  beforeAll(async () => {
    ns = await run.create('h1');
    await ns.ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    await ns.ip('addr', 'add', '192.0.2.1/24', 'dev', 'eth0');
    await ns.ip('link', 'set', 'eth0', 'up');
    await ns.ip('link', 'set', 'eth1', 'up');
    driver = await startDriver(ns.name);
  });

  afterAll(async () => {
    await driver?.close();
    await run.cleanup();
  });

  /** Adds and deletes `dst` until the driver reports its deletion: proves the notification socket listens. */
  const deletionSeen = (dst: string, timeoutMs: number): Promise<true> =>
    waitFor(`deletion of ${dst} reported`, async () => {
      await ns.ip('route', 'replace', dst, 'dev', 'eth0');
      await ns.ip('route', 'del', dst, 'dev', 'eth0');
      const seen = await waitFor('stats', async () => ((await driver.call<DriverStats>('stats')).recentDeletedRoutes.includes(dst) ? true : undefined), 300, 20).catch(() => undefined);
      return seen;
    }, timeoutMs, 10);

  it('turns an overrun into one counted overrun event, keeps running, and keeps both sockets working', async () => {
    await deletionSeen('203.0.113.1/32', 5000);
    const before = await driver.call<DriverStats>('stats');
    expect(before.counts.overrun).toBe(0);
    // SO_RCVBUFFORCE took (we are root in the namespace): the kernel reports twice the size asked for.
    expect(before.netlink.notificationSocket).toMatchObject({ rcvbufForced: true, rcvbuf: 2 * NOTIFICATION_RCVBUF });
    expect(before.netlink.requestSocket?.rcvbufForced).toBe(true);

    const flag = join(dir, 'unblock');
    expect(await driver.call('block', flag, 90_000)).toBe('blocking');
    let times: Burst;
    try {
      times = await burst(ns, 'eth0', dir);
    } finally {
      writeFileSync(flag, '');
    }
    const unblockedAt = Date.now();
    const after = await waitFor('an overrun event', async () => {
      const s = await driver.call<DriverStats>('stats');
      return s.counts.overrun > 0 ? s : undefined;
    }, 10_000, 20);
    const overrunAfterMs = Date.now() - unblockedAt;

    expect(driver.alive()).toBe(true);
    expect(after.lastBlock?.flagSeen).toBe(true);
    // The whole burst happened while the loop was stalled.
    expect(after.lastBlock!.blockedMs).toBeGreaterThanOrEqual(times.addMs + times.delMs);
    expect(after.counts.overrun).toBe(1);
    expect(after.netlink.notificationOverruns).toBeGreaterThanOrEqual(1);
    expect(after.netlink.notificationReopens).toBe(0);
    expect(after.netlink.requestOverruns).toBe(0);
    // Some deletions were heard (what fitted in the buffer), not all of them.
    const heard = after.counts.entryDeleted - before.counts.entryDeleted;
    expect(heard).toBeGreaterThan(0);
    expect(heard).toBeLessThan(BURST);

    // The request socket still works...
    const eth0 = (await driver.call<LinkInfo | null>('link', 'eth0'))!;
    expect(eth0.name).toBe('eth0');
    const report = await driver.call<ApplyReport>('apply', [
      { op: 'replace', entry: { kind: 'route', dst: parseCidr('203.0.113.0/24')!, via: parseIPv4('192.0.2.2')!, linkIndex: eth0.index } },
    ]);
    expect(report.failures).toEqual([]);
    expect(await ns.ip('route', 'show', '203.0.113.0/24')).toMatch(/203\.0\.113\.0\/24 via 192\.0\.2\.2 dev eth0/);
    // ...and so does the notification socket: a deletion made now is reported.
    await ns.ip('route', 'del', '203.0.113.0/24');
    await waitFor('deletion after the burst', async () => ((await driver.call<DriverStats>('stats')).recentDeletedRoutes.includes('203.0.113.0/24') ? true : undefined), 3000, 20);
    const final = await driver.call<DriverStats>('stats');
    expect(final.counts.overrun).toBe(1);
    // The overrun came after the whole backlog (nothing of the burst was heard after it) and the probe right after
    // it was heard: the kernel drops notices silently until the backlog is read, so an overrun reported earlier
    // would let a resync run while deletions were still being lost.
    expect(final.counts.entryDeleted).toBe(after.counts.entryDeleted + 1);

    console.log(
      `netlink burst: ${2 * BURST} route changes (${BURST} adds in ${times.addMs} ms, ${BURST} deletes in ${times.delMs} ms) ` +
        `with the event loop stalled ${after.lastBlock!.blockedMs} ms; ${heard} deletions heard, ${after.netlink.notificationOverruns} ` +
        `kernel overrun(s) -> ${after.counts.overrun} overrun event ${overrunAfterMs} ms after the stall; notification rcvbuf ` +
        `${after.netlink.notificationSocket?.rcvbuf} B (~${Math.round((after.netlink.notificationSocket?.rcvbuf ?? 0) / Math.max(1, heard))} B per deletion notice); ` +
        `driver RSS ${Math.round(final.rssBytes / 2 ** 20)} MiB`,
    );
  });
});

describe('flanneld through a notification burst', () => {
  const run = new NetnsRun('nlf');
  let cluster: Cluster;

  beforeAll(async () => {
    cluster = await startCluster(run, {
      hosts: 2,
      config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
      // Far beyond the test: only the resync the overrun asks for can bring the lost route back.
      flanneldArgs: ['--datapath-resync=3600'],
    });
  });

  afterAll(async () => {
    await cluster?.stop();
    await run.cleanup();
  });

  it('survives a burst it slept through and restores a route whose deletion notice was lost', async () => {
    const h1 = cluster.topology.host('h1').ns;
    const daemon = cluster.daemon('h1');
    const h2Subnet = cluster.subnetOf('h2');
    const h1Pod = cluster.pods.find((p) => p.host.name === 'h1')!;
    const h2Pod = cluster.pods.find((p) => p.host.name === 'h2')!;
    const route = async (): Promise<string> => (await h1.ip('route', 'show', h2Subnet)).trim();
    const before = await route();
    expect(before).toMatch(/dev flannel\.1/);

    // Frozen, flanneld reads nothing: the burst's deletions fill its socket, and the kernel drops what follows,
    // including the deletion of its own route to h2, which it therefore never hears about.
    process.kill(daemon.pid, 'SIGSTOP');
    let times: Burst;
    try {
      times = await burst(h1, 'eth0', dir);
      await h1.ip('route', 'del', h2Subnet);
    } finally {
      process.kill(daemon.pid, 'SIGCONT');
    }
    const resumed = Date.now();
    await waitFor('route to h2 restored', async () => ((await route()) === before ? true : undefined), 20_000, 50);
    const restoredMs = Date.now() - resumed;

    expect(daemon.child.exitCode).toBeNull();
    expect(daemon.child.signalCode).toBeNull();
    expect(daemon.output()).toMatch(/"why":"netlink notifications overran"/);
    expect((await ping(h1Pod.ns, h2Pod.ip, { count: 1, waitSec: 2 })).ok).toBe(true);
    console.log(
      `flanneld burst: frozen through ${2 * BURST} route changes (${times.addMs} + ${times.delMs} ms) and the deletion of its ` +
        `route to h2; alive, route restored ${restoredMs} ms after SIGCONT by the overrun's resync`,
    );
  });
});
