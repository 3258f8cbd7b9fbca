/**
 * Synthetic vxlan peers for the benchmarks: lease keys and values exactly as flanneld writes them (etcd/keys.ts,
 * lease/lease.ts), and the same peers as iproute2 batch files for the kernel floor. Peer i gets 10.<1+i/256>.<i%256>.0/24,
 * VTEP MAC 0e:2a:00:<i as 3 bytes> and public IP 192.0.2.<10 + i%241>, so subnets and MACs are all distinct.
 * Dual-stack peers (stored under DUAL_ETCD_PREFIX, for DUAL_NETWORK_CONFIG) add 2001:db8:a:<i+1, hex>::/64, IPv6
 * VTEP MAC 0e:2a:06:<i as 3 bytes> and public IPv6 2001:db8:2::<10 + i%241, hex> (the topology's br0 segment).
 */
import { writeFileSync } from 'node:fs';
import type { Netns } from '../helpers/netns.js';

export const ETCD_PREFIX = '/coreos.com/network';
export const NETWORK_CONFIG = { Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } } as const;
export const VNI = 1;
/** A second network beside ETCD_PREFIX, so one etcd serves IPv4-only and dual-stack daemons in the same run. */
export const DUAL_ETCD_PREFIX = '/bench-dual/network';
export const DUAL_NETWORK_CONFIG = {
  ...NETWORK_CONFIG, EnableIPv6: true, IPv6Network: '2001:db8:a::/48', IPv6SubnetLen: 64,
} as const;

/** Which subnets a synthetic peer lease holds. */
export type LeaseStack = 'v4' | 'dual';
/** The underlay address the floor namespace's vxlan device uses (what h1 has in the topology). */
const FLOOR_LOCAL_IP = '192.0.2.1';

export interface PeerLease {
  readonly index: number;
  /** "10.1.2.0/24" */
  readonly subnet: string;
  /** The subnet's network address, the onlink gateway and neighbour. */
  readonly gateway: string;
  readonly mac: string;
  readonly publicIP: string;
  /** Dual-stack leases only: the IPv6 counterparts of the four fields above. */
  readonly v6?: { readonly subnet: string; readonly gateway: string; readonly mac: string; readonly publicIP: string };
  readonly key: string;
  readonly value: string;
}

const hex = (n: number): string => (n & 255).toString(16).padStart(2, '0');

export function peerLease(index: number, stack: LeaseStack = 'v4'): PeerLease {
  if (!Number.isInteger(index) || index < 0 || index >= 250 * 256) throw new Error(`peer index ${index} out of range`);
  const gateway = `10.${1 + (index >> 8)}.${index & 255}.0`;
  const subnet = `${gateway}/24`;
  const mac = `0e:2a:00:${hex(index >> 16)}:${hex(index >> 8)}:${hex(index)}`;
  const publicIP = `192.0.2.${10 + (index % 241)}`;
  const v4 = { index, subnet, gateway, mac, publicIP };
  if (stack === 'v4') {
    return {
      ...v4,
      key: `${ETCD_PREFIX}/subnets/${gateway}-24`,
      value: JSON.stringify({ PublicIP: publicIP, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI, VtepMAC: mac } }),
    };
  }
  const gateway6 = `2001:db8:a:${(index + 1).toString(16)}::`;
  const v6 = {
    subnet: `${gateway6}/64`,
    gateway: gateway6,
    mac: `0e:2a:06:${hex(index >> 16)}:${hex(index >> 8)}:${hex(index)}`,
    publicIP: `2001:db8:2::${(10 + (index % 241)).toString(16)}`,
  };
  return {
    ...v4,
    v6,
    key: `${DUAL_ETCD_PREFIX}/subnets/${gateway}-24&${gateway6}-64`,
    value: JSON.stringify({
      PublicIP: publicIP, PublicIPv6: v6.publicIP, BackendType: 'vxlan',
      BackendData: { VNI, VtepMAC: mac }, BackendV6Data: { VNI, VtepMAC: v6.mac },
    }),
  };
}

/** `count` peers from index `from`, skipping (IPv4) subnets in `exclude` (e.g. the one a daemon under test holds). */
export function peerLeases(count: number, from = 0, exclude: ReadonlySet<string> = new Set(), stack: LeaseStack = 'v4'): PeerLease[] {
  const out: PeerLease[] = [];
  for (let i = from; out.length < count; i++) {
    const p = peerLease(i, stack);
    if (!exclude.has(p.subnet)) out.push(p);
  }
  return out;
}

/** ip -batch lines (neighbour, then route) and bridge -batch lines (FDB) for what flanneld programs per peer. */
export function batchFiles(peers: readonly PeerLease[], dir: string): { ip: string; bridge: string } {
  const ip = `${dir}/peers.ip`;
  const bridge = `${dir}/peers.bridge`;
  writeFileSync(ip, [
    ...peers.map((p) => `neigh replace ${p.gateway} lladdr ${p.mac} dev flannel.1 nud permanent`),
    ...peers.map((p) => `route replace ${p.subnet} via ${p.gateway} dev flannel.1 onlink`),
  ].join('\n') + '\n');
  writeFileSync(bridge, peers.map((p) => `fdb replace ${p.mac} dev flannel.1 dst ${p.publicIP} self permanent`).join('\n') + '\n');
  return { ip, bridge };
}

/**
 * Makes `ns` look like a flanneld host before its first peer: eth0 (a veth whose peer stays in `ns`) at
 * 192.0.2.1/24 and flannel.1 as flanneld creates it (VNI 1, port 8472, no learning, MTU 1450, up).
 */
export async function addFloorVxlan(ns: Netns): Promise<void> {
  await ns.ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p');
  await ns.ip('addr', 'add', `${FLOOR_LOCAL_IP}/24`, 'dev', 'eth0');
  await ns.ip('link', 'set', 'eth0', 'up');
  await ns.ip('link', 'set', 'eth0p', 'up');
  await ns.ip(
    'link', 'add', 'flannel.1', 'mtu', '1450', 'address', '0e:2a:ff:00:00:01', 'type', 'vxlan', 'id', String(VNI),
    'local', FLOOR_LOCAL_IP, 'dev', 'eth0', 'dstport', '8472', 'nolearning',
  );
  await ns.ip('link', 'set', 'flannel.1', 'up');
}
