/**
 * The udp backend's packet path as a port: open the TUN device, start the proxy between it and a UDP socket, edit
 * its peer table, read its counters. The real one is our N-API addon (native/udp/flannel_udp.c, compiled by
 * `npm run build` with the system C compiler): Node has no ioctl to attach to a TUN device, and moving packets
 * through the event loop would cap the backend at what one JavaScript thread can copy. Unit tests use a fake.
 */
import { closeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { IpAddress } from '../../flanneld/ip/address.js';
import type { IpNet } from '../../flanneld/ip/cidr.js';
import { FlannelError } from '../../flanneld/runtime/errors.js';
import { lazyAddon } from '../../flanneld/runtime/native-addon.js';

/**
 * Why packets were dropped, as `flanneld_udp_dropped_packets_total{reason}` names them. `tun_read_error` and
 * `udp_receive_error` count failed reads (from the TUN device, from the UDP socket), each at most one packet lost.
 */
export const UDP_DROP_REASONS = [
  'no_route', 'queue_full', 'send_error', 'ttl_expired', 'malformed', 'not_ipv4', 'tun_write', 'tun_read_error', 'udp_receive_error',
] as const;
export type UdpDropReason = (typeof UDP_DROP_REASONS)[number];

export interface UdpStats {
  /** Packets the kernel routed into the TUN device. */
  readonly tunRxPackets: number;
  readonly txPackets: number;
  readonly txBytes: number;
  readonly rxPackets: number;
  readonly rxBytes: number;
  /** Packets from peers handed to the kernel through the TUN device. */
  readonly tunTxPackets: number;
  /** ICMP net unreachable written back for packets with no peer. */
  readonly icmpSent: number;
  readonly dropped: Readonly<Record<UdpDropReason, number>>;
  /** Peer subnets in the table. */
  readonly routes: number;
}

export interface UdpProxy {
  /** Packets for `subnet` go to `peer`:`port`; replaces an earlier route for the same subnet. */
  setRoute(subnet: IpNet, peer: IpAddress, port: number): void;
  deleteRoute(subnet: IpNet): void;
  stats(): UdpStats;
  /** Stops forwarding and closes the TUN device, which removes it. */
  stop(): void;
}

export interface TunDevice {
  readonly name: string;
  readonly fd: number;
}

export interface UdpProxyOptions {
  readonly tun: TunDevice;
  readonly localAddr: IpAddress;
  readonly port: number;
  readonly mtu: number;
}

export interface UdpDataplane {
  /** Throws with the errno's name as `code` (EPERM without CAP_NET_ADMIN, EBUSY when another process holds it). */
  openTun(name: string): TunDevice;
  /** Closes a device no proxy took: the kernel removes it with its last descriptor. */
  closeTun(tun: TunDevice): void;
  /**
   * Takes ownership of `tun`, also when it throws: stopping the proxy closes it, and a failed start (the port taken,
   * with the address named; a thread that could not start) has closed it already.
   */
  start(opts: UdpProxyOptions): UdpProxy;
}

interface NativeAddon {
  openTun(name: string): { fd: number; name: string };
  startProxy(opts: { tunFd: number; localAddr: number; port: number; mtu: number }): object;
  setRoute(handle: object, network: number, prefixLen: number, peer: number, port: number): void;
  deleteRoute(handle: object, network: number, prefixLen: number): boolean;
  stats(handle: object): Record<string, number>;
  stopProxy(handle: object): void;
}

// dist/backends/udp/ in the build, backends/udp/ under vitest: the addon is built into dist/native/ either way.
const ADDON_CANDIDATES = ['../../native/flannel_udp.node', '../../dist/native/flannel_udp.node'].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));

/** The kernel removes a TUN device with its last descriptor. */
const closeTun = (tun: TunDevice): void => closeSync(tun.fd);

const v4 = (ip: IpAddress, what: string): number => {
  if (ip.family !== 4) throw new FlannelError('ERR_NO_ADDRESS', `udp backend: ${what} must be IPv4`);
  return Number(ip.value);
};

/**
 * Loads the addon on first use, so a node that never runs udp never needs it, and one without the built file fails
 * only the udp backend, with the file named. `candidates` is injectable for tests.
 */
export function nativeUdpDataplane(candidates: readonly string[] = ADDON_CANDIDATES): UdpDataplane {
  const load = lazyAddon<NativeAddon>(candidates, "the udp backend's native addon flannel_udp.node");
  return {
    openTun: (name) => load().openTun(name),
    closeTun,
    start(opts) {
      let native: NativeAddon;
      let localAddr: number;
      try {
        native = load();
        localAddr = v4(opts.localAddr, 'local address');
      } catch (err) {
        // Ownership passed with the call: the addon closes the descriptor on its own failures, this on ours.
        closeTun(opts.tun);
        throw err;
      }
      const handle = native.startProxy({ tunFd: opts.tun.fd, localAddr, port: opts.port, mtu: opts.mtu });
      return {
        setRoute: (subnet, peer, port) => native.setRoute(handle, Number(subnet.ip), subnet.prefixLen, v4(peer, 'peer address'), port),
        deleteRoute: (subnet) => void native.deleteRoute(handle, Number(subnet.ip), subnet.prefixLen),
        stats: () => fromNative(native.stats(handle)),
        stop: () => native.stopProxy(handle),
      };
    },
  };
}

/** The addon's counters as UdpStats; exported so a test can check that none of them goes unread. */
export function fromNative(raw: Record<string, number>): UdpStats {
  const n = (key: string): number => raw[key] ?? 0;
  return {
    tunRxPackets: n('tunRxPackets'), txPackets: n('txPackets'), txBytes: n('txBytes'), rxPackets: n('rxPackets'), rxBytes: n('rxBytes'),
    tunTxPackets: n('tunTxPackets'), icmpSent: n('icmpSent'), routes: n('routes'),
    dropped: {
      no_route: n('dropNoRoute'), queue_full: n('dropQueueFull'), send_error: n('dropSendError'), ttl_expired: n('dropTtlExpired'),
      malformed: n('dropMalformed'), not_ipv4: n('dropNotIpv4'), tun_write: n('dropTunWrite'),
      tun_read_error: n('tunReadErrors'), udp_receive_error: n('socketErrors'),
    },
  };
}
