/**
 * Route lookups from /proc/net/route and /proc/net/ipv6_route: the main-table routes of this process's network
 * namespace, read without spawning `ip`. Enough for choosing the external interface (default route,
 * --iface-can-reach); the datapath itself talks rtnetlink.
 */
import { containsIp, ipNet, type IpNet } from './cidr.js';
import type { Family, IpAddress } from './address.js';

export interface ProcRoute {
  readonly dst: IpNet;
  readonly dev: string;
  readonly metric: number;
  /** False for routes to directly connected networks (no next hop). */
  readonly viaGateway: boolean;
}

const RTF_UP = 0x1;
const RTF_GATEWAY = 0x2;
const RTF_REJECT = 0x200;

/** /proc/net/route stores addresses as host-order (little-endian) hex of the network-order value. */
function swap32(hex: string): bigint {
  const v = parseInt(hex, 16) >>> 0;
  return BigInt((((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0);
}

function prefixLenOfMask(mask: bigint): number {
  let len = 0;
  for (let bit = 31n; bit >= 0n && (mask >> bit) & 1n; bit--) len++;
  return len;
}

export function parseProcRoutes(v4Text: string, v6Text: string): ProcRoute[] {
  const out: ProcRoute[] = [];
  for (const line of v4Text.split('\n').slice(1)) {
    const c = line.trim().split(/\s+/);
    if (c.length < 8 || !(parseInt(c[3] as string, 16) & RTF_UP)) continue;
    const prefixLen = prefixLenOfMask(swap32(c[7] as string));
    const viaGateway = (parseInt(c[3] as string, 16) & RTF_GATEWAY) !== 0;
    out.push({ dst: ipNet(4, swap32(c[1] as string), prefixLen), dev: c[0] as string, metric: Number(c[6]), viaGateway });
  }
  for (const line of v6Text.split('\n')) {
    const c = line.trim().split(/\s+/);
    if (c.length < 10) continue;
    const flags = parseInt(c[8] as string, 16);
    if (!(flags & RTF_UP) || flags & RTF_REJECT || c[9] === 'lo') continue;
    out.push({
      dst: ipNet(6, BigInt(`0x${c[0]}`), parseInt(c[1] as string, 16)),
      dev: c[9] as string,
      metric: parseInt(c[5] as string, 16),
      viaGateway: (flags & RTF_GATEWAY) !== 0,
    });
  }
  return out;
}

/** Longest prefix wins, then the lowest metric: the kernel's choice within one table. */
export function lookupRoute(routes: readonly ProcRoute[], dst: IpAddress): ProcRoute | undefined {
  let best: ProcRoute | undefined;
  for (const r of routes) {
    if (!containsIp(r.dst, dst)) continue;
    if (!best || r.dst.prefixLen > best.dst.prefixLen || (r.dst.prefixLen === best.dst.prefixLen && r.metric < best.metric)) best = r;
  }
  return best;
}

export function defaultRouteDev(routes: readonly ProcRoute[], family: Family): string | undefined {
  return routes
    .filter((r) => r.dst.family === family && r.dst.prefixLen === 0)
    .sort((a, b) => a.metric - b.metric)[0]?.dev;
}

/** Networks reachable without a gateway (what DirectRouting and host-gw need a peer to be on). */
export function connectedNetworks(routes: readonly ProcRoute[]): IpNet[] {
  return routes.filter((r) => !r.viaGateway && r.dst.prefixLen > 0 && r.dev !== 'lo').map((r) => r.dst);
}
