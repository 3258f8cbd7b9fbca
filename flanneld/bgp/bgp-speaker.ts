/**
 * The node's export-only BGP speaker (docs/operations.md#announcing-pod-subnets-over-bgp): one session per
 * configured router, all announcing this node's lease subnet(s) with the node's public address as next hop. A lease
 * change re-announces; each session withdraws or keeps the routes when the daemon stops, as its graceful restart
 * setting says. Nothing a router announces reaches this node's kernel, and a router being away never stops the node.
 */
import type { Logger } from 'pino';
import { formatIp, ipAddress, type Family, type IpAddress } from '../ip/address.js';
import { formatCidr } from '../ip/cidr.js';
import type { Lease } from '../lease/lease.js';
import type { Clock } from '../runtime/clock.js';
import type { Random } from '../runtime/random.js';
import { BgpSession, type BgpConnector, type BgpPeer, type SessionStatus } from './bgp-session.js';
import type { Announcement } from './bgp-update.js';

export interface BgpSpeakerOptions {
  readonly localAs: number;
  readonly peers: readonly BgpPeer[];
  /** 0 turns graceful restart off. */
  readonly gracefulRestartSec: number;
  readonly holdTimeSec: number;
  readonly connect: BgpConnector;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly onStatus?: ((status: SessionStatus) => void) | undefined;
}

/** What the daemon drives: the lease to announce, and the sessions' lifetime. */
export interface LeaseAnnouncer {
  announce(lease: Lease): void;
  run(signal: AbortSignal): Promise<void>;
  status(): readonly SessionStatus[];
}

export class BgpSpeaker implements LeaseAnnouncer {
  private readonly sessions: BgpSession[] = [];
  private started = false;
  private announced = '';

  constructor(private readonly options: BgpSpeakerOptions) {}

  /** The first lease also makes the sessions: which routers can be reached depends on the node's addresses. */
  announce(lease: Lease): void {
    const wanted = announcementsOf(lease);
    if (!this.started) this.start(lease, wanted);
    for (const s of this.sessions) s.setWanted(wanted);
    // Renewals hand the same lease back every few hours; only a change is worth a line.
    const prefixes = [...wanted.entries()].map(([p, a]) => `${p} via ${formatIp(a.nextHop)}`).join(', ');
    if (prefixes !== this.announced) this.options.log.info({ prefixes, peers: this.sessions.length }, 'announcing the lease over BGP');
    this.announced = prefixes;
  }

  private start(lease: Lease, wanted: ReadonlyMap<string, Announcement>): void {
    this.started = true;
    const families = [...new Set([...wanted.values()].map((a) => a.prefix.family))];
    const peerFamilies = new Set(this.options.peers.map((p) => p.address.family));
    for (const peer of this.options.peers) {
      const local = peer.address.family === 4 ? lease.attrs.publicIP : lease.attrs.publicIPv6;
      if (!local) {
        this.options.log.error({ peer: formatIp(peer.address) }, `BGP peer ${formatIp(peer.address)} is IPv${peer.address.family} and this node has no public IPv${peer.address.family} address; this router is left out`);
        continue;
      }
      // Each family over the sessions of its own family, so a router with a session per family learns each prefix
      // once; a family with no router of its own rides on the others' sessions (MP-BGP), or it would not be heard.
      const carried = families.filter((f) => f === peer.address.family || !peerFamilies.has(f));
      if (carried.length === 0) {
        this.options.log.warn({ peer: formatIp(peer.address) }, `BGP peer ${formatIp(peer.address)} would carry nothing: the lease has no IPv${peer.address.family} subnet and the other family has its own routers; this router is left out`);
        continue;
      }
      this.sessions.push(this.session(peer, lease, local, carried));
    }
  }

  async run(signal: AbortSignal): Promise<void> {
    await Promise.allSettled(this.sessions.map((s) => s.run(signal)));
  }

  status(): readonly SessionStatus[] {
    return this.sessions.map((s) => s.current());
  }

  private session(peer: BgpPeer, lease: Lease, local: IpAddress, families: readonly Family[]): BgpSession {
    const o = this.options;
    return new BgpSession({
      peer,
      localAs: o.localAs,
      routerId: routerIdOf(lease),
      localAddress: local,
      holdTimeSec: o.holdTimeSec,
      families,
      gracefulRestartSec: o.gracefulRestartSec > 0 ? o.gracefulRestartSec : undefined,
      connect: o.connect,
      clock: o.clock,
      random: o.random,
      log: o.log,
      onStatus: o.onStatus,
    });
  }
}

/** The lease's subnets, each with the node's public address of its family as next hop. */
export function announcementsOf(lease: Lease): ReadonlyMap<string, Announcement> {
  const wanted = new Map<string, Announcement>();
  const add = (prefix: Lease['subnet'], nextHop: IpAddress | undefined): void => {
    if (prefix && nextHop && nextHop.family === prefix.family) wanted.set(formatCidr(prefix), { prefix, nextHop });
  };
  add(lease.subnet, lease.attrs.publicIP);
  add(lease.ipv6Subnet, lease.attrs.publicIPv6);
  return wanted;
}

/**
 * The BGP identifier: the node's public IPv4 address, or on an IPv6-only node the low 32 bits of its IPv6 address
 * (never 0, which the RFC forbids), so every node's is unique as long as their addresses are.
 */
export function routerIdOf(lease: Lease): IpAddress {
  if (lease.attrs.publicIP) return lease.attrs.publicIP;
  const low = Number((lease.attrs.publicIPv6?.value ?? 1n) & 0xffffffffn);
  return ipAddress(4, BigInt(low === 0 ? 1 : low));
}
