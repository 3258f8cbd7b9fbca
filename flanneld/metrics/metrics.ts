/**
 * flanneld's Prometheus metrics, on a registry the caller owns (no prom-client global), and adapters from the hooks
 * the daemon's parts already expose (reconciler observer, rule keeper, lease keeper, prober) onto them.
 */
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import type { ReconcilerObserver } from '../../backends/peer-reconciler.js';
import { REFUSAL_REASONS, type RefusalReason } from '../lease/peer-checks.js';
import type { PeerGuardObserver } from '../subnet/peer-guard.js';
import type { Clock } from '../runtime/clock.js';
import { SESSION_STATES, type SessionStatus } from '../bgp/bgp-session.js';

export interface FlanneldMetrics {
  readonly ready: Gauge;
  readonly leaseExpiry: Gauge;
  readonly leaseRenewals: Counter;
  readonly subnetManagerErrors: Counter<'op'>;
  readonly peers: Gauge;
  readonly datapathEntries: Gauge<'kind'>;
  readonly datapathRepairs: Counter<'kind'>;
  readonly inputStreamFailures: Counter<'stream'>;
  readonly applyDuration: Histogram;
  readonly resyncDuration: Histogram;
  readonly leaseEventLatency: Histogram;
  readonly trafficRuleRepairs: Counter<'manager'>;
  readonly probeRtt: Histogram;
  readonly peerReachable: Gauge<'peer'>;
  readonly peerRefusals: Counter<'reason'>;
  readonly refusedPeers: Gauge<'reason'>;
  /**
   * Registers flanneld_udp_dropped_packets_total{reason}, read from `source` at each scrape (the udp backend's
   * native counters); only nodes running udp export it. Every reason `source` names now starts at 0.
   */
  trackUdpDrops(source: () => Readonly<Record<string, number>> | undefined): void;
  /** Registers flanneld_netlink_overruns_total{socket}, read from the datapath's totals at each scrape. */
  trackNetlinkOverruns(source: () => Readonly<Record<string, number>>): void;
  /** Registers the flanneld_bgp_* series, read from the sessions at each scrape (docs/operations.md#metrics). */
  trackBgpSessions(source: () => readonly SessionStatus[], now: () => number): void;
}

/**
 * A counter fed by totals kept elsewhere (native code, the datapath), read at each scrape: it adds what they gained
 * since the last. A source that restarted from 0 (a udp proxy re-created with its device) shows a value below the
 * last one, which is all new. Every label value the source names at registration starts at 0.
 */
function counterFromTotals(registers: Registry[], name: string, help: string, label: string, source: () => Readonly<Record<string, number>> | undefined): void {
  const values = Object.keys(source() ?? {});
  const seen = new Map<string, number>();
  const counter: Counter<string> = new Counter({
    name, help, labelNames: [label], registers,
    collect() {
      const now = source();
      if (!now) return;
      for (const value of values) {
        const total = now[value] ?? 0;
        const last = seen.get(value) ?? 0;
        const gained = total >= last ? total - last : total;
        if (gained > 0) counter.inc({ [label]: value }, gained);
        seen.set(value, total);
      }
    },
  });
  for (const value of values) counter.inc({ [label]: value }, 0);
}

const EVENT_LOOP_SAMPLE_MS = 1000;

/** Seconds; from sub-millisecond netlink batches up to multi-second cold starts. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(registry: Registry, opts: { processMetrics?: boolean } = {}): FlanneldMetrics {
  const registers = [registry];
  // prom-client samples event-loop delay with a 10 ms timer by default: 100 wake-ups a second in an otherwise idle
  // daemon, most of its idle CPU. Once a second still shows a blocked loop in nodejs_eventloop_lag_*.
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  const metrics: FlanneldMetrics = {
    ready: new Gauge({ name: 'flanneld_ready', help: '1 once rules are in and subnet.env is written, 0 when not ready', registers }),
    leaseExpiry: new Gauge({ name: 'flanneld_lease_expiry_timestamp_seconds', help: "When this node's lease expires (Unix seconds); absent when it never does", registers }),
    leaseRenewals: new Counter({ name: 'flanneld_lease_renewals_total', help: 'Lease renewals (and re-claims) that succeeded', registers }),
    subnetManagerErrors: new Counter({ name: 'flanneld_subnet_manager_errors_total', help: 'Failed subnet manager calls, by operation', labelNames: ['op'], registers }),
    peers: new Gauge({ name: 'flanneld_peers', help: 'Peers the datapath is programmed for', registers }),
    datapathEntries: new Gauge({ name: 'flanneld_datapath_entries', help: 'Datapath entries wanted for peers, by kind', labelNames: ['kind'], registers }),
    inputStreamFailures: new Counter({ name: 'flanneld_datapath_input_stream_failures_total', help: "Times the datapath reconciler's kernel notifications (reopened after a pause) or lease stream failed", labelNames: ['stream'], registers }),
    datapathRepairs: new Counter({ name: 'flanneld_datapath_repairs_total', help: 'Datapath entries restored after they were removed or changed behind our back, by kind', labelNames: ['kind'], registers }),
    applyDuration: new Histogram({ name: 'flanneld_datapath_apply_duration_seconds', help: 'Time to apply one batch of datapath changes', buckets: DURATION_BUCKETS, registers }),
    resyncDuration: new Histogram({ name: 'flanneld_datapath_resync_duration_seconds', help: 'Time for one full datapath resync (dump, diff, apply)', buckets: DURATION_BUCKETS, registers }),
    leaseEventLatency: new Histogram({ name: 'flanneld_lease_event_latency_seconds', help: 'From a lease change seen to its entries applied', buckets: DURATION_BUCKETS, registers }),
    trafficRuleRepairs: new Counter({ name: 'flanneld_traffic_rules_repairs_total', help: 'Times missing traffic rules were re-applied, by manager', labelNames: ['manager'], registers }),
    probeRtt: new Histogram({ name: 'flanneld_peer_probe_rtt_seconds', help: "Round-trip time of peer probes through the overlay", buckets: DURATION_BUCKETS, registers }),
    peerReachable: new Gauge({ name: 'flanneld_peer_reachable', help: '1 when the peer answers probes through the overlay, 0 when not', labelNames: ['peer'], registers }),
    peerRefusals: new Counter({ name: 'flanneld_peer_refusals_total', help: 'Peer leases refused before reaching the datapath, by reason', labelNames: ['reason'], registers }),
    refusedPeers: new Gauge({ name: 'flanneld_refused_peers', help: 'Peer leases refused now, by reason', labelNames: ['reason'], registers }),
    trackUdpDrops(source) {
      counterFromTotals(registers, 'flanneld_udp_dropped_packets_total', 'Packets the udp backend dropped, by reason', 'reason', source);
    },
    trackBgpSessions(source, now) {
      trackBgpSessions(registers, source, now);
    },
    trackNetlinkOverruns(source) {
      counterFromTotals(registers, 'flanneld_netlink_overruns_total',
        'Times the kernel dropped netlink messages for us (notification: a full datapath resync followed; request: the requests were retried)', 'socket', source);
    },
  };
  // Counters start at 0 for every label value they can take, so a rate() query works before the first event.
  for (const kind of ['route', 'neigh', 'fdb']) metrics.datapathRepairs.inc({ kind }, 0);
  for (const stream of ['kernel-notifications', 'leases']) metrics.inputStreamFailures.inc({ stream }, 0);
  for (const manager of ['iptables', 'nftables']) metrics.trafficRuleRepairs.inc({ manager }, 0);
  for (const op of SUBNET_OPS) metrics.subnetManagerErrors.inc({ op }, 0);
  for (const reason of REFUSAL_REASONS) {
    metrics.peerRefusals.inc({ reason }, 0);
    metrics.refusedPeers.set({ reason }, 0);
  }
  return metrics;
}

/** The operations countSubnetErrors labels; its `op` is typed from this list, so the two cannot drift. */
export const SUBNET_OPS = ['get_network_config', 'find_previous_lease', 'acquire_lease', 'renew_lease', 'stored_public_ips', 'complete_lease'] as const;

/** The reconciler's hooks as metrics; entry counts are set for every kind so absent kinds read 0, not missing. */
export function reconcilerMetrics(metrics: FlanneldMetrics, clock: Clock): ReconcilerObserver {
  let collided = 0;
  return {
    applied: (_changes, durationMs) => metrics.applyDuration.observe(durationMs / 1000),
    repaired: (kind, count) => metrics.datapathRepairs.inc({ kind }, count),
    streamFailed: (stream) => metrics.inputStreamFailures.inc({ stream }),
    resynced: (durationMs) => metrics.resyncDuration.observe(durationMs / 1000),
    peers: (count) => metrics.peers.set(count),
    entries: (counts) => {
      for (const kind of ['route', 'neigh', 'fdb'] as const) metrics.datapathEntries.set({ kind }, counts[kind] ?? 0);
    },
    leaseBatchApplied: (seenAt) => metrics.leaseEventLatency.observe(Math.max(0, clock.now() - seenAt) / 1000),
    collisions: (byPeer) => {
      const before = collided;
      collided = byPeer.size;
      if (collided > before) metrics.peerRefusals.inc({ reason: 'datapath-collision' }, collided - before);
      metrics.refusedPeers.set({ reason: 'datapath-collision' }, collided);
    },
  };
}
export type SubnetOp = (typeof SUBNET_OPS)[number];

/**
 * Per router: its state (one series per state, 1 for the current one), uptime, prefixes it holds from us and how
 * often it came up. A router's last error text is in /status only: as a label it would grow without bound.
 */
function trackBgpSessions(registers: Registry[], source: () => readonly SessionStatus[], now: () => number): void {
  const labelNames = ['peer'] as const;
  const state: Gauge<'peer' | 'state'> = new Gauge({
    name: 'flanneld_bgp_session_state', help: "1 for each BGP session's current state (idle, connect, open-sent, open-confirm, established)", labelNames: ['peer', 'state'], registers,
    collect() {
      for (const s of source()) for (const st of SESSION_STATES) state.set({ peer: s.peer, state: st }, s.state === st ? 1 : 0);
    },
  });
  const uptime: Gauge<'peer'> = new Gauge({
    name: 'flanneld_bgp_session_uptime_seconds', help: 'Seconds since the BGP session was established, 0 while it is not', labelNames, registers,
    collect() {
      for (const s of source()) uptime.set({ peer: s.peer }, s.establishedAt === undefined ? 0 : Math.max(0, now() - s.establishedAt) / 1000);
    },
  });
  const prefixes: Gauge<'peer'> = new Gauge({
    name: 'flanneld_bgp_prefixes_announced', help: 'Prefixes the router holds from this node', labelNames, registers,
    collect() {
      for (const s of source()) prefixes.set({ peer: s.peer }, s.prefixes.length);
    },
  });
  const establishments: Gauge<'peer'> = new Gauge({
    name: 'flanneld_bgp_session_establishments', help: 'Times the BGP session came up since flanneld started (a rising value is a flapping session)', labelNames, registers,
    collect() {
      for (const s of source()) establishments.set({ peer: s.peer }, s.establishments);
    },
  });
}

/** The peer guard's hooks as metrics: refusals counted as they happen, and the refused peers now, per reason. */
export function peerGuardMetrics(metrics: FlanneldMetrics): PeerGuardObserver {
  return {
    refused: (reason) => metrics.peerRefusals.inc({ reason }),
    refusedChanged: (refused) => {
      const counts = new Map<RefusalReason, number>(REFUSAL_REASONS.map((r) => [r, 0]));
      for (const { reason } of refused.values()) counts.set(reason, (counts.get(reason) ?? 0) + 1);
      for (const [reason, n] of counts) metrics.refusedPeers.set({ reason }, n);
    },
  };
}
