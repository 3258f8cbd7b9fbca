/** RTM_*ROUTE for main-table unicast routes: dst, optional gateway and device, onlink flag. */
import { ipNet, type IpNet } from '../../../flanneld/ip/cidr.js';
import type { Family } from '../../../flanneld/ip/address.js';
import type { DatapathEntry } from '../datapath.js';
import {
  NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_TABLE,
  RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE, RTN_BLACKHOLE, RTN_UNICAST, RTNH_F_ONLINK, RTPROT_BOOT, RTPROT_FLANNEL,
  RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
} from './constants.js';
import { afOf, ipBytes, ipFromBytes } from './family.js';
import { decodeAttrs, encodeMessage, u32, type Attr, type RawMessage } from './message.js';

type RouteEntry = Extract<DatapathEntry, { kind: 'route' }>;
const RT_SCOPE_NOWHERE = 255;

function rtmsg(family: number, dstLen: number, protocol: number, scope: number, type: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeUInt8(dstLen, 1);
  b.writeUInt8(RT_TABLE_MAIN, 4);
  b.writeUInt8(protocol, 5);
  b.writeUInt8(scope, 6);
  b.writeUInt8(type, 7);
  b.writeUInt32LE(flags, 8);
  return b;
}

function routeAttrs(r: RouteEntry): Attr[] {
  const attrs: Attr[] = [
    { type: RTA_TABLE, value: u32(RT_TABLE_MAIN) },
    { type: RTA_DST, value: ipBytes({ family: r.dst.family, value: r.dst.ip }) },
  ];
  if (r.via) attrs.push({ type: RTA_GATEWAY, value: ipBytes(r.via) });
  if (r.linkIndex !== undefined) attrs.push({ type: RTA_OIF, value: u32(r.linkIndex) });
  return attrs;
}

const routeFixed = (r: RouteEntry): Buffer =>
  rtmsg(afOf(r.dst.family), r.dst.prefixLen, RTPROT_FLANNEL, RT_SCOPE_UNIVERSE, RTN_UNICAST, r.onlink ? RTNH_F_ONLINK : 0);

/** Replaces a route known to be ours (its destination holds a route of our protocol). */
export const replaceRoute = (r: RouteEntry) => (seq: number): Buffer =>
  encodeMessage(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE, seq, routeFixed(r), routeAttrs(r));

/**
 * Adds a route only where the destination has none: a replace would take over whatever route is there, the
 * kernel's connected route or an operator's included. EEXIST then says someone holds the destination.
 */
export const createRoute = (r: RouteEntry) => (seq: number): Buffer =>
  encodeMessage(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, seq, routeFixed(r), routeAttrs(r));

/** Adds only: an existing route for the subnet (the cni0 bridge's) must win, so EEXIST is the quiet outcome. */
export const addBlackholeRoute = (dst: IpNet) => (seq: number): Buffer =>
  encodeMessage(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, rtmsg(afOf(dst.family), dst.prefixLen, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_BLACKHOLE, 0), [
    { type: RTA_TABLE, value: u32(RT_TABLE_MAIN) },
    { type: RTA_DST, value: ipBytes({ family: dst.family, value: dst.ip }) },
  ]);

/**
 * Deletes exactly the route we programmed: the kernel matches the protocol, gateway and device given, so a route
 * someone else put at the same destination is never the one removed (ESRCH instead).
 */
export const deleteRoute = (r: RouteEntry) => (seq: number): Buffer =>
  encodeMessage(RTM_DELROUTE, NLM_F_REQUEST, seq, rtmsg(afOf(r.dst.family), r.dst.prefixLen, RTPROT_FLANNEL, RT_SCOPE_NOWHERE, RTN_UNICAST, 0), routeAttrs(r));

/** The routing protocol of a route message (RTPROT_*), which tells whose route it is. */
export const routeProtocol = (msg: RawMessage): number => msg.payload.readUInt8(5);

export const dumpRoutes = (family: Family) => (seq: number): Buffer =>
  encodeMessage(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, rtmsg(afOf(family), 0, 0, 0, 0, 0), []);

/** Main-table unicast routes only; everything else (local, broadcast, other tables) is not ours to judge. */
export function decodeRoute(msg: RawMessage): RouteEntry | undefined {
  if (msg.type !== RTM_NEWROUTE && msg.type !== RTM_DELROUTE) return undefined;
  const p = msg.payload;
  const dstLen = p.readUInt8(1);
  const type = p.readUInt8(7);
  const flags = p.readUInt32LE(8);
  const attrs = decodeAttrs(p.subarray(12));
  const table = attrs.get(RTA_TABLE)?.readUInt32LE(0) ?? p.readUInt8(4);
  if (table !== RT_TABLE_MAIN || type !== RTN_UNICAST) return undefined;
  const dstRaw = attrs.get(RTA_DST);
  const dst = dstRaw ? ipFromBytes(dstRaw) : undefined;
  if (!dst) return undefined;
  const via = attrs.get(RTA_GATEWAY);
  const gateway = via ? ipFromBytes(via) : undefined;
  const oif = attrs.get(RTA_OIF);
  return {
    kind: 'route',
    dst: ipNet(dst.family, dst.value, dstLen),
    ...(gateway ? { via: gateway } : {}),
    ...(oif ? { linkIndex: oif.readUInt32LE(0) } : {}),
    ...(flags & RTNH_F_ONLINK ? { onlink: true } : {}),
  };
}
