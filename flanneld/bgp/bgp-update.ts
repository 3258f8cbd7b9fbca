/**
 * The UPDATE messages an export-only speaker sends (RFC 4271 4.3): one prefix announced with ORIGIN IGP, our AS path
 * and the node's address as next hop; IPv6 through MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760); withdrawals; and the
 * End-of-RIB marker graceful restart waits for (RFC 4724 section 2). What peers send us is not decoded beyond its
 * framing: nothing they say reaches the kernel.
 */
import type { Family, IpAddress } from '../ip/address.js';
import { ipBytes } from '../ip/address-bytes.js';
import type { IpNet } from '../ip/cidr.js';
import { AFI_IPV4, AFI_IPV6, AS_TRANS, SAFI_UNICAST } from './bgp-open.js';
import { MSG_UPDATE, encodeMessage } from './bgp-wire.js';

const ATTR_OPTIONAL = 0x80;
const ATTR_TRANSITIVE = 0x40;
const ATTR_EXTENDED_LENGTH = 0x10;

const ATTR_ORIGIN = 1;
const ATTR_AS_PATH = 2;
const ATTR_NEXT_HOP = 3;
const ATTR_LOCAL_PREF = 5;
const ATTR_MP_REACH_NLRI = 14;
const ATTR_MP_UNREACH_NLRI = 15;
const ATTR_AS4_PATH = 17;
const ORIGIN_IGP = 0;
const AS_SEQUENCE = 2;
/** The RFC 4271 default for routes a speaker originates into its own AS. */
const DEFAULT_LOCAL_PREF = 100;

/** How this session's UPDATEs are shaped. */
export interface UpdateContext {
  readonly localAs: number;
  /** Same AS on both ends: an empty AS path and LOCAL_PREF, as iBGP wants. */
  readonly ibgp: boolean;
  /** The peer sent the 4-octet AS capability, so AS numbers travel as 4 bytes. */
  readonly fourOctetAs: boolean;
}

export interface Announcement {
  readonly prefix: IpNet;
  /** Of the prefix's family: the node's public address. */
  readonly nextHop: IpAddress;
}

function attribute(flags: number, type: number, value: Buffer): Buffer {
  if (value.length > 255) {
    const head = Buffer.alloc(4);
    head.writeUInt8(flags | ATTR_EXTENDED_LENGTH, 0);
    head.writeUInt8(type, 1);
    head.writeUInt16BE(value.length, 2);
    return Buffer.concat([head, value]);
  }
  return Buffer.concat([Buffer.from([flags, type, value.length]), value]);
}

/** A prefix as NLRI: its length in bits, then only the bytes that length covers. */
export function encodePrefix(prefix: IpNet): Buffer {
  const bytes = ipBytes({ family: prefix.family, value: prefix.ip });
  return Buffer.concat([Buffer.from([prefix.prefixLen]), bytes.subarray(0, Math.ceil(prefix.prefixLen / 8))]);
}

function asPathSegment(asns: readonly number[], width: 2 | 4): Buffer {
  const b = Buffer.alloc(2 + asns.length * width);
  b.writeUInt8(AS_SEQUENCE, 0);
  b.writeUInt8(asns.length, 1);
  asns.forEach((asn, i) => {
    if (width === 4) b.writeUInt32BE(asn, 2 + i * 4);
    else b.writeUInt16BE(asn, 2 + i * 2);
  });
  return b;
}

/**
 * AS_PATH as RFC 6793 has it: empty towards iBGP peers; our AS in 4 bytes to a peer that speaks them; in 2 bytes to
 * one that does not, with AS_TRANS and an AS4_PATH when our AS needs more than 16 bits.
 */
function asPathAttributes(ctx: UpdateContext): Buffer[] {
  const wellKnown = ATTR_TRANSITIVE;
  if (ctx.ibgp) return [attribute(wellKnown, ATTR_AS_PATH, Buffer.alloc(0))];
  if (ctx.fourOctetAs) return [attribute(wellKnown, ATTR_AS_PATH, asPathSegment([ctx.localAs], 4))];
  if (ctx.localAs <= 0xffff) return [attribute(wellKnown, ATTR_AS_PATH, asPathSegment([ctx.localAs], 2))];
  return [
    attribute(wellKnown, ATTR_AS_PATH, asPathSegment([AS_TRANS], 2)),
    attribute(ATTR_OPTIONAL | ATTR_TRANSITIVE, ATTR_AS4_PATH, asPathSegment([ctx.localAs], 4)),
  ];
}

function commonAttributes(ctx: UpdateContext): Buffer[] {
  const localPref = Buffer.alloc(4);
  localPref.writeUInt32BE(DEFAULT_LOCAL_PREF);
  return [
    attribute(ATTR_TRANSITIVE, ATTR_ORIGIN, Buffer.from([ORIGIN_IGP])),
    ...asPathAttributes(ctx),
    ...(ctx.ibgp ? [attribute(ATTR_TRANSITIVE, ATTR_LOCAL_PREF, localPref)] : []),
  ];
}

function afiSafi(family: Family): Buffer {
  const b = Buffer.alloc(3);
  b.writeUInt16BE(family === 4 ? AFI_IPV4 : AFI_IPV6);
  b.writeUInt8(SAFI_UNICAST, 2);
  return b;
}

function update(withdrawn: Buffer, attributes: readonly Buffer[], nlri: Buffer): Buffer {
  const attrs = Buffer.concat(attributes);
  const withdrawnLen = Buffer.alloc(2);
  withdrawnLen.writeUInt16BE(withdrawn.length);
  const attrsLen = Buffer.alloc(2);
  attrsLen.writeUInt16BE(attrs.length);
  return encodeMessage(MSG_UPDATE, Buffer.concat([withdrawnLen, withdrawn, attrsLen, attrs, nlri]));
}

export function encodeAnnouncement(a: Announcement, ctx: UpdateContext): Buffer {
  if (a.prefix.family === 4) {
    return update(Buffer.alloc(0), [...commonAttributes(ctx), attribute(ATTR_TRANSITIVE, ATTR_NEXT_HOP, ipBytes(a.nextHop))], encodePrefix(a.prefix));
  }
  const nextHop = ipBytes(a.nextHop);
  const reach = Buffer.concat([afiSafi(6), Buffer.from([nextHop.length]), nextHop, Buffer.from([0]), encodePrefix(a.prefix)]);
  return update(Buffer.alloc(0), [...commonAttributes(ctx), attribute(ATTR_OPTIONAL, ATTR_MP_REACH_NLRI, reach)], Buffer.alloc(0));
}

export function encodeWithdrawal(prefix: IpNet): Buffer {
  if (prefix.family === 4) return update(encodePrefix(prefix), [], Buffer.alloc(0));
  return update(Buffer.alloc(0), [attribute(ATTR_OPTIONAL, ATTR_MP_UNREACH_NLRI, Buffer.concat([afiSafi(6), encodePrefix(prefix)]))], Buffer.alloc(0));
}

/** "Everything of this family has been sent": an empty UPDATE for IPv4, an empty MP_UNREACH_NLRI for IPv6. */
export function encodeEndOfRib(family: Family): Buffer {
  if (family === 4) return update(Buffer.alloc(0), [], Buffer.alloc(0));
  return update(Buffer.alloc(0), [attribute(ATTR_OPTIONAL, ATTR_MP_UNREACH_NLRI, afiSafi(6))], Buffer.alloc(0));
}

/**
 * Checks what RFC 4271 6.3 says ends a session even for a speaker that ignores routes: the withdrawn-routes and
 * path-attribute lengths must fit the message. Returns undefined when they do, else the reason.
 */
export function updateLengthProblem(body: Buffer): string | undefined {
  const withdrawnLen = body.readUInt16BE(0);
  if (2 + withdrawnLen + 2 > body.length) return `withdrawn routes of ${withdrawnLen} bytes in an UPDATE of ${body.length}`;
  const attrsLen = body.readUInt16BE(2 + withdrawnLen);
  if (4 + withdrawnLen + attrsLen > body.length) return `path attributes of ${attrsLen} bytes in an UPDATE of ${body.length}`;
  return undefined;
}
