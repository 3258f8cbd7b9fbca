/**
 * What backend unit tests build a backend on: an eth0 in a FakeDatapath, a fake subnet manager that grants this
 * node `subnet` (and `ipv6Subnet` when the lease asks with a public IPv6 address), a manual clock, a memory log, the
 * reconciler's progress hooks, and the BackendDeps that tie them together.
 */
import { expect, vi } from 'vitest';
import type { BackendDeps, Network } from '../../backends/backend.js';
import type { HostView, ExternalInterface } from '../../flanneld/ip/external-interface.js';
import { parseCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import { seededRandom } from '../../flanneld/runtime/random.js';
import type { LeaseRequest } from '../../flanneld/subnet/subnet-manager.js';
import { FakeDatapath } from './fake-datapath.js';
import { FakeSubnetManager } from './fake-subnet-manager.js';
import { ManualClock } from './manual-clock.js';
import { reconcilerProgress } from './reconciler-progress.js';
import { memoryLog } from './test-log.js';

export interface BackendHarnessOptions {
  readonly mtu?: number;
  /** The host's directly connected networks (host-gw and DirectRouting look). */
  readonly connected?: readonly string[];
  /** This node's lease. */
  readonly subnet: string;
  readonly ipv6Subnet?: string;
  readonly resyncMs: number;
}

export interface RunningNetwork {
  readonly abort: AbortController;
  readonly done: Promise<unknown>;
}

const net = (text: string): IpNet => parseCidr(text) as IpNet;

export function backendHarness(opts: BackendHarnessOptions) {
  const dp = new FakeDatapath();
  const mtu = opts.mtu ?? 1500;
  const eth0 = dp.addLink({ name: 'eth0', mtu });
  const host: HostView = {
    interfaces: () => Promise.resolve([]),
    defaultRouteInterface: () => Promise.resolve('eth0'),
    routeTo: () => Promise.resolve(undefined),
    connectedNetworks: () => Promise.resolve((opts.connected ?? []).map(net)),
  };
  const clock = new ManualClock();
  const subnets = new FakeSubnetManager();
  subnets.acquire.otherwise((request: LeaseRequest) => ({
    subnet: net(opts.subnet),
    ...(opts.ipv6Subnet && request.attrs.publicIPv6 ? { ipv6Subnet: net(opts.ipv6Subnet) } : {}),
    attrs: request.attrs,
    reservation: false,
  }));
  const { log, lines } = memoryLog();
  const progress = reconcilerProgress(subnets, clock, opts.resyncMs);
  const running: RunningNetwork[] = [];

  /** The deps a daemon would hand a backend on this host. */
  const deps = (extIface: ExternalInterface, extra: Partial<BackendDeps> = {}): BackendDeps => ({
    findPreviousLease: (publicIP, signal) => subnets.findPreviousLease(publicIP, signal),
    extIface,
    peerLeases: (_own, signal) => subnets.watchLeases(signal),
    acquireLease: (attrs, signal) => subnets.acquireLease({ attrs }, signal),
    datapath: dp,
    host,
    clock,
    random: seededRandom(7),
    log,
    resyncMs: opts.resyncMs,
    observer: progress.observer,
    ...extra,
  });

  /** Starts `run` and waits until it follows the leases (and, unless told otherwise, the kernel's notices) and the timer. */
  const run = async (network: Network, { kernelEvents = true } = {}): Promise<RunningNetwork> => {
    const abort = new AbortController();
    const entry = { abort, done: network.run(abort.signal) };
    running.push(entry);
    await vi.waitFor(() => {
      expect(subnets.leaseWatchers).toBe(1);
      if (kernelEvents) expect(dp.eventSubscribers).toBe(1);
      expect(clock.pending).toBe(1);
    });
    return entry;
  };

  /** For afterEach: stops every network started with `run`. */
  const stopAll = async (): Promise<void> => {
    for (const r of running.splice(0)) {
      r.abort.abort();
      await r.done;
    }
  };

  return { dp, eth0, mtu, host, clock, subnets, log, lines, progress, deps, run, stopAll, push: progress.push, resync: progress.resync };
}

export type BackendHarness = ReturnType<typeof backendHarness>;
