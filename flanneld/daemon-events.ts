/**
 * What the daemon reports as it runs, and where each report goes: readiness, the loop monitor, the status view and
 * metrics are updated here and nowhere else. Without ops (tests that do not look at them) every report goes nowhere,
 * so the daemon's run has no branches for it.
 */
import type { Network } from '../backends/backend.js';
import type { ReconcilerObserver } from '../backends/peer-reconciler.js';
import { combineObservers, type DaemonStatus, type ProbeState } from './health/daemon-status.js';
import type { LoopMonitor } from './health/loop-monitor.js';
import type { Readiness } from './health/readiness.js';
import type { IpAddress } from './ip/address.js';
import { formatCidr, networkAddress, type IpNet } from './ip/cidr.js';
import type { Lease } from './lease/lease.js';
import { peerGuardMetrics, reconcilerMetrics, type FlanneldMetrics } from './metrics/metrics.js';
import type { Clock } from './runtime/clock.js';
import type { PeerGuardObserver } from './subnet/peer-guard.js';

type ProbeTarget = { readonly key: string; readonly address: IpAddress; readonly subnet: IpNet; readonly publicIP?: IpAddress };

/** The peer prober as the daemon drives it: targets follow the peer set, results feed status and metrics. */
export interface ProberPort {
  updateTargets(changes: ReadonlyMap<string, ProbeTarget | undefined>): void;
  state(): ReadonlyMap<string, ProbeState>;
  run(signal: AbortSignal): Promise<void>;
}

export interface DaemonOps {
  readonly loops: LoopMonitor;
  readonly readiness: Readiness;
  readonly status: DaemonStatus;
  readonly metrics?: FlanneldMetrics;
  readonly prober?: ProberPort;
}

export interface DaemonEvents {
  /** The backend registered the network: this node's lease and MTU are known. */
  networkUp(network: Network, backendType: string): void;
  rulesInPlace(manager: 'iptables' | 'nftables', periodMs: number): void;
  subnetFileWritten(): void;
  leaseRenewed(lease: Lease): void;
  leaseLost(message: string): void;
  rulesChecked(): void;
  rulesRepaired(manager: 'iptables' | 'nftables'): void;
  /** A backend's device went down with its process (`problem` says how), or is back (undefined). */
  deviceProcess(device: string, problem: string | undefined): void;
  /** A userspace data path's drop counters, by reason, to read at each scrape. */
  userspaceDrops(source: () => Readonly<Record<string, number>> | undefined): void;
  /** The reconciler's hooks; creating them starts watching the reconciler for stalls. */
  reconciler(resyncMs: number): ReconcilerObserver | undefined;
  readonly peerGuard: PeerGuardObserver;
  /** Runs the peer prober until `signal` aborts, if there is one. */
  runProber(signal: AbortSignal): Promise<void>;
}

export function daemonEvents(ops: DaemonOps | undefined, clock: Clock, renewMarginMs: number): DaemonEvents {
  if (!ops) return NO_EVENTS;
  const { loops, readiness, status, metrics, prober } = ops;
  // Only what a report shows: the prober's own records may carry more.
  if (prober) status.probes = () => new Map([...prober.state()].map(([key, r]) => [key, { reachable: r.reachable, ...(r.rttMs !== undefined ? { rttMs: r.rttMs } : {}), at: r.at }]));
  const leaseTimes = (lease: Lease): void => {
    status.lease = lease;
    if (lease.expiresAt === undefined) {
      loops.unregister('lease-keeper');
      return;
    }
    metrics?.leaseExpiry.set(lease.expiresAt / 1000);
    // The keeper is watched for stalls only when it has a renewal to make.
    loops.register('lease-keeper', Math.max(1000, lease.expiresAt - renewMarginMs - clock.now()));
  };
  return {
    networkUp(network, backendType) {
      status.backend = { type: backendType, mtu: network.mtu };
      leaseTimes(network.lease);
    },
    rulesInPlace(manager, periodMs) {
      status.rulesManager = manager;
      loops.register('traffic-rules', periodMs);
    },
    subnetFileWritten: () => readiness.set('started', undefined),
    leaseRenewed(lease) {
      metrics?.leaseRenewals.inc();
      leaseTimes(lease);
    },
    leaseLost: (message) => readiness.set('lease', `lease lost: ${message}`),
    rulesChecked() {
      loops.beat('traffic-rules');
      status.lastRulesCheck = clock.now();
    },
    rulesRepaired(manager) {
      metrics?.trafficRuleRepairs.inc({ manager });
      status.ruleRepairs++;
    },
    deviceProcess: (device, problem) => loops.processDown(`device ${device}`, problem),
    userspaceDrops: (source) => metrics?.trackUdpDrops(source),
    reconciler: (resyncMs) => opsObserver(ops, clock, resyncMs),
    peerGuard: combinePeerGuardObservers(metrics && peerGuardMetrics(metrics), status.guardObserver()),
    runProber: (signal) => prober?.run(signal) ?? Promise.resolve(),
  };
}

const NO_EVENTS: DaemonEvents = {
  networkUp: () => undefined,
  rulesInPlace: () => undefined,
  subnetFileWritten: () => undefined,
  leaseRenewed: () => undefined,
  leaseLost: () => undefined,
  rulesChecked: () => undefined,
  rulesRepaired: () => undefined,
  deviceProcess: () => undefined,
  userspaceDrops: () => undefined,
  reconciler: () => undefined,
  peerGuard: {},
  runProber: () => Promise.resolve(),
};

function combinePeerGuardObservers(...observers: (PeerGuardObserver | undefined)[]): PeerGuardObserver {
  const all = observers.filter((o): o is PeerGuardObserver => o !== undefined);
  return {
    refused: (reason) => {
      for (const o of all) o.refused?.(reason);
    },
    refusedChanged: (refused) => {
      for (const o of all) o.refusedChanged?.(refused);
    },
  };
}

/**
 * The reconciler's hooks as health, status and metrics: each resync is the reconciler's heartbeat, a programming
 * problem makes the node unready, and the peer set drives the prober and the per-peer metric labels.
 */
function opsObserver(ops: DaemonOps, clock: Clock, resyncMs: number): ReconcilerObserver {
  ops.loops.register('datapath-reconciler', resyncMs);
  // Per-peer series are labelled with the peer's subnet; a peer that leaves takes its series with it.
  const labels = new Map<string, string>();
  const health: ReconcilerObserver = {
    resynced: () => ops.loops.beat('datapath-reconciler'),
    programmed: (problem) => ops.readiness.set('datapath', problem),
    peersChanged: (changed) => {
      const targets = new Map<string, ProbeTarget | undefined>();
      for (const [key, lease] of changed) {
        const old = labels.get(key);
        if (old !== undefined && (!lease || peerLabel(lease) !== old)) ops.metrics?.peerReachable.remove({ peer: old });
        if (lease) labels.set(key, peerLabel(lease));
        else labels.delete(key);
        targets.set(key, lease && probeTarget(key, lease));
      }
      ops.prober?.updateTargets(targets);
    },
  };
  return combineObservers(ops.metrics && reconcilerMetrics(ops.metrics, clock), ops.status.observer(), health);
}

/**
 * One probe per peer, over IPv4 when the peer has an IPv4 subnet, else over IPv6, so IPv6-only peers are probed
 * too. The target is the subnet's network address, which the tunnel device of vxlan and udp peers holds, so the
 * probe crosses the tunnel. A host-gw peer holds no such address (the network address of a subnet on its bridge
 * is a broadcast or anycast address that no echo answers from), and its pod traffic goes straight to its public
 * IP, so that is what is probed there.
 */
function probeTarget(key: string, lease: Lease): ProbeTarget | undefined {
  const subnet = lease.subnet ?? lease.ipv6Subnet;
  const publicIP = lease.subnet ? lease.attrs.publicIP : lease.attrs.publicIPv6;
  if (!subnet) return undefined;
  const address = lease.attrs.backendType === 'host-gw' ? publicIP : networkAddress(subnet);
  return address && { key, address, subnet, ...(publicIP ? { publicIP } : {}) };
}

/** How metrics and logs name a peer: its subnet(s) in CIDR form. */
export function peerLabel(lease: Lease): string {
  return [lease.subnet, lease.ipv6Subnet].filter((n) => n !== undefined).map((n) => formatCidr(n)).join(',');
}
