/**
 * What `flanneld status` shows, kept up to date from the same hooks that feed the metrics: the lease, the backend,
 * every peer with its probe state, datapath drift and repairs, and the traffic rules. Served as JSON on /status.
 */
import { formatIp } from '../ip/address.js';
import { formatCidr } from '../ip/cidr.js';
import type { Lease } from '../lease/lease.js';
import type { ReconcilerObserver } from '../../backends/peer-reconciler.js';
import { bounded, type Refusal, type RefusalReason } from '../lease/peer-checks.js';
import type { PeerGuardObserver } from '../subnet/peer-guard.js';
import type { SessionStatus } from '../bgp/bgp-session.js';

export interface ProbeState {
  readonly reachable: boolean;
  readonly rttMs?: number;
  /** ms since the epoch */
  readonly at: number;
}

export interface PeerReport {
  /** Absent for IPv6-only peers, like the lease's. */
  readonly subnet?: string;
  readonly ipv6Subnet?: string;
  readonly publicIP?: string;
  readonly publicIPv6?: string;
  readonly vtepMAC?: string;
  readonly probe?: ProbeState;
}

export interface StatusReport {
  readonly ready: boolean;
  readonly notReady: readonly string[];
  readonly stalled: readonly string[];
  readonly lease?: {
    readonly subnet?: string;
    readonly ipv6Subnet?: string;
    readonly expiresAt?: string;
    readonly publicIP?: string;
    readonly publicIPv6?: string;
  };
  readonly backend?: { readonly type: string; readonly mtu: number };
  readonly peers: readonly PeerReport[];
  readonly datapath: { readonly entries: Readonly<Record<string, number>>; readonly lastDrift?: number; readonly lastResyncAt?: string; readonly repairs: Readonly<Record<string, number>>; readonly problem?: string };
  readonly trafficRules: { readonly manager?: string; readonly repairs: number; readonly lastCheckAt?: string };
  /** Peer leases refused before they reached the datapath (never a reason for this node to be unready). */
  readonly refusedPeers: readonly RefusedPeerReport[];
  /** One per router this node announces to; absent without --bgp-as. Never a reason to be unready. */
  readonly bgpSessions?: readonly BgpSessionReport[];
}

export interface BgpSessionReport {
  readonly peer: string;
  readonly remoteAs: number;
  readonly state: string;
  readonly establishedAt?: string;
  readonly uptimeSec?: number;
  readonly prefixes: readonly string[];
  readonly lastError?: string;
  readonly establishments: number;
}

export interface RefusedPeerReport {
  /** The lease's key as the store holds it (bounded in length). */
  readonly peer: string;
  readonly reason: RefusalReason;
  readonly detail: string;
}

const iso = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : new Date(ms).toISOString());

/** IPv6-only peers sort by their IPv6 subnet. */
const sortKey = (p: PeerReport): string => p.subnet ?? p.ipv6Subnet ?? '';

function publicAddresses(lease: Lease): { publicIP?: string; publicIPv6?: string } {
  const { publicIP, publicIPv6 } = lease.attrs;
  return { ...(publicIP ? { publicIP: formatIp(publicIP) } : {}), ...(publicIPv6 ? { publicIPv6: formatIp(publicIPv6) } : {}) };
}

function vtepMac(data: unknown): string | undefined {
  const mac = (data as { VtepMAC?: unknown } | undefined)?.VtepMAC;
  return typeof mac === 'string' ? mac : undefined;
}

export class DaemonStatus {
  lease: Lease | undefined;
  backend: { type: string; mtu: number } | undefined;
  rulesManager: string | undefined;
  ruleRepairs = 0;
  lastRulesCheck: number | undefined;
  probes: (() => ReadonlyMap<string, ProbeState>) | undefined;
  bgpSessions: (() => readonly SessionStatus[]) | undefined;
  private peers: ReadonlyMap<string, Lease> = new Map();
  private entries: Record<string, number> = {};
  private repairs: Record<string, number> = {};
  private lastDrift: number | undefined;
  private lastResync: number | undefined;
  private problem: string | undefined;
  private refused: ReadonlyMap<string, Refusal> = new Map();
  private collided: ReadonlyMap<string, string> = new Map();

  constructor(private readonly now: () => number) {}

  /** The peer guard's hook that the status view needs. */
  guardObserver(): PeerGuardObserver {
    return {
      refusedChanged: (refused) => {
        this.refused = refused;
      },
    };
  }

  /** The reconciler's hooks that the status view needs. */
  observer(): ReconcilerObserver {
    return {
      repaired: (kind, n) => {
        this.repairs[kind] = (this.repairs[kind] ?? 0) + n;
      },
      resynced: (_ms, drift) => {
        this.lastDrift = drift;
        this.lastResync = this.now();
      },
      entries: (counts) => {
        this.entries = { ...counts };
      },
      peersChanged: (_changed, peers) => {
        this.peers = peers;
      },
      programmed: (problem) => {
        this.problem = problem;
      },
      collisions: (byPeer) => {
        this.collided = byPeer;
      },
    };
  }

  report(health: { ready: boolean; notReady: readonly string[]; stalled: readonly string[] }): StatusReport {
    const probes = this.probes?.() ?? new Map<string, ProbeState>();
    const peers = [...this.peers].map(([key, lease]): PeerReport => {
      const probe = probes.get(key);
      const mac = vtepMac(lease.attrs.backendData) ?? vtepMac(lease.attrs.backendV6Data);
      return {
        ...(lease.subnet ? { subnet: formatCidr(lease.subnet) } : {}),
        ...(lease.ipv6Subnet ? { ipv6Subnet: formatCidr(lease.ipv6Subnet) } : {}),
        ...publicAddresses(lease),
        ...(mac ? { vtepMAC: mac } : {}),
        ...(probe ? { probe } : {}),
      };
    }).sort((a, b) => sortKey(a).localeCompare(sortKey(b), 'en', { numeric: true }));
    const lease = this.lease;
    const lastResyncAt = iso(this.lastResync);
    const lastCheckAt = iso(this.lastRulesCheck);
    const expiresAt = iso(lease?.expiresAt);
    return {
      ...health,
      ...(lease
        ? {
            lease: {
              ...(lease.subnet ? { subnet: formatCidr(lease.subnet) } : {}),
              ...(lease.ipv6Subnet ? { ipv6Subnet: formatCidr(lease.ipv6Subnet) } : {}),
              ...(expiresAt ? { expiresAt } : {}),
              ...publicAddresses(lease),
            },
          }
        : {}),
      ...(this.backend ? { backend: this.backend } : {}),
      peers,
      datapath: {
        entries: this.entries,
        repairs: this.repairs,
        ...(this.lastDrift !== undefined ? { lastDrift: this.lastDrift } : {}),
        ...(lastResyncAt ? { lastResyncAt } : {}),
        ...(this.problem ? { problem: this.problem } : {}),
      },
      trafficRules: { ...(this.rulesManager ? { manager: this.rulesManager } : {}), repairs: this.ruleRepairs, ...(lastCheckAt ? { lastCheckAt } : {}) },
      refusedPeers: [
        ...[...this.refused].map(([peer, r]) => ({ peer: bounded(peer, 80), reason: r.reason, detail: r.detail })),
        ...[...this.collided].map(([peer, detail]) => ({ peer, reason: 'datapath-collision' as const, detail })),
      ].sort((a, b) => a.peer.localeCompare(b.peer, 'en', { numeric: true })),
      ...(this.bgpSessions ? { bgpSessions: this.bgpSessions().map((s) => this.bgpReport(s)) } : {}),
    };
  }

  private bgpReport(s: SessionStatus): BgpSessionReport {
    const up = s.establishedAt;
    return {
      peer: s.peer,
      remoteAs: s.remoteAs,
      state: s.state,
      ...(up !== undefined ? { establishedAt: new Date(up).toISOString(), uptimeSec: Math.max(0, Math.round((this.now() - up) / 1000)) } : {}),
      prefixes: s.prefixes,
      ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
      establishments: s.establishments,
    };
  }
}

/** One observer that calls every given one, so metrics, status and health each keep their own hooks. */
export function combineObservers(...observers: readonly (ReconcilerObserver | undefined)[]): ReconcilerObserver {
  const all = observers.filter((o): o is ReconcilerObserver => o !== undefined);
  const fan = <K extends keyof ReconcilerObserver>(key: K) => (...args: Parameters<NonNullable<ReconcilerObserver[K]>>): void => {
    for (const o of all) (o[key] as ((...a: unknown[]) => void) | undefined)?.(...args);
  };
  return {
    applied: fan('applied'),
    repaired: fan('repaired'),
    resynced: fan('resynced'),
    peers: fan('peers'),
    entries: fan('entries'),
    peersChanged: fan('peersChanged'),
    programmed: fan('programmed'),
    leaseBatchApplied: fan('leaseBatchApplied'),
    collisions: fan('collisions'),
    streamFailed: fan('streamFailed'),
  };
}
