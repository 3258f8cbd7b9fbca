/**
 * The OPEN message (RFC 4271 4.2) with the capabilities this speaker uses (RFC 5492): multiprotocol (RFC 4760) for
 * IPv4 and IPv6 unicast, 4-octet AS numbers (RFC 6793), graceful restart (RFC 4724) and route refresh (RFC 2918).
 * A peer's OPEN is checked as the RFC says and refused with the matching NOTIFICATION; capabilities we do not
 * know are skipped.
 */
import { ipAddress, type Family, type IpAddress } from '../ip/address.js';
import {
  BgpProtocolError, ERR_OPEN, MSG_OPEN, SUB_OPEN_BAD_BGP_ID, SUB_OPEN_BAD_PEER_AS, SUB_OPEN_UNACCEPTABLE_HOLD, SUB_OPEN_UNSUPPORTED_VERSION,
  encodeMessage,
} from './bgp-wire.js';

export const AS_TRANS = 23456;
export const AFI_IPV4 = 1;
export const AFI_IPV6 = 2;
export const SAFI_UNICAST = 1;

const PARAM_CAPABILITIES = 2;
const CAP_MULTIPROTOCOL = 1;
const CAP_ROUTE_REFRESH = 2;
const CAP_GRACEFUL_RESTART = 64;
const CAP_FOUR_OCTET_AS = 65;
const GR_RESTART_STATE = 0x8;
const GR_FORWARDING_PRESERVED = 0x80;
const MAX_GR_TIME = 4095;

export interface GracefulRestartCapability {
  /** How long the peer may keep our routes while we come back, in seconds (12 bits). */
  readonly restartTimeSec: number;
  /** Set in the OPEN after a restart (R bit): the peer must not wait for our End-of-RIB before its own. */
  readonly restarting: boolean;
  /** The families whose forwarding survived the restart (F bit per AFI/SAFI). */
  readonly preserved: readonly Family[];
  /** The families graceful restart applies to. */
  readonly families: readonly Family[];
}

export interface OpenMessage {
  /** The speaker's AS, from the 4-octet AS capability when it sent one. */
  readonly asn: number;
  readonly holdTimeSec: number;
  readonly routerId: IpAddress;
  /** Unicast families it speaks; IPv4 alone when it sent no multiprotocol capability (RFC 4760 section 1). */
  readonly families: readonly Family[];
  readonly fourOctetAs: boolean;
  readonly routeRefresh: boolean;
  readonly gracefulRestart?: GracefulRestartCapability;
}

const afiOf = (family: Family): number => (family === 4 ? AFI_IPV4 : AFI_IPV6);
const familyOf = (afi: number, safi: number): Family | undefined =>
  safi !== SAFI_UNICAST ? undefined : afi === AFI_IPV4 ? 4 : afi === AFI_IPV6 ? 6 : undefined;

function capability(code: number, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([code, value.length]), value]);
}

/** The multiprotocol capability's value: AFI (2 bytes), reserved (1), SAFI (1). */
function multiprotocolValue(family: Family): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(afiOf(family));
  b.writeUInt8(SAFI_UNICAST, 3);
  return b;
}

/** One family of the graceful restart capability: AFI (2 bytes), SAFI (1), flags (1). */
function restartFamily(family: Family, flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(afiOf(family));
  b.writeUInt8(SAFI_UNICAST, 2);
  b.writeUInt8(flags, 3);
  return b;
}

function gracefulRestartValue(gr: GracefulRestartCapability): Buffer {
  const head = Buffer.alloc(2);
  head.writeUInt16BE(((gr.restarting ? GR_RESTART_STATE : 0) << 12) | Math.min(gr.restartTimeSec, MAX_GR_TIME));
  const families = gr.families.map((f) => restartFamily(f, gr.preserved.includes(f) ? GR_FORWARDING_PRESERVED : 0));
  return Buffer.concat([head, ...families]);
}

export function encodeOpen(open: OpenMessage): Buffer {
  const fixed = Buffer.alloc(10);
  fixed.writeUInt8(4, 0);
  fixed.writeUInt16BE(open.asn > 0xffff ? AS_TRANS : open.asn, 1);
  fixed.writeUInt16BE(open.holdTimeSec, 3);
  fixed.writeUInt32BE(Number(open.routerId.value), 5);
  const asValue = Buffer.alloc(4);
  asValue.writeUInt32BE(open.asn);
  const caps = [
    ...open.families.map((f) => capability(CAP_MULTIPROTOCOL, multiprotocolValue(f))),
    ...(open.routeRefresh ? [capability(CAP_ROUTE_REFRESH, Buffer.alloc(0))] : []),
    ...(open.gracefulRestart ? [capability(CAP_GRACEFUL_RESTART, gracefulRestartValue(open.gracefulRestart))] : []),
    capability(CAP_FOUR_OCTET_AS, asValue),
  ];
  const capBytes = Buffer.concat(caps);
  const params = Buffer.concat([Buffer.from([PARAM_CAPABILITIES, capBytes.length]), capBytes]);
  fixed.writeUInt8(params.length, 9);
  return encodeMessage(MSG_OPEN, Buffer.concat([fixed, params]));
}

interface Caps {
  families: Family[];
  sawMultiprotocol: boolean;
  fourOctetAs: number | undefined;
  routeRefresh: boolean;
  gracefulRestart: GracefulRestartCapability | undefined;
}

/** A peer's OPEN body, checked: version 4, a hold time of 0 or at least 3 s, a non-zero router id. */
export function decodeOpen(body: Buffer): OpenMessage {
  const version = body.readUInt8(0);
  if (version !== 4) throw new BgpProtocolError(ERR_OPEN, SUB_OPEN_UNSUPPORTED_VERSION, `BGP version ${version}; this speaker has 4`, Buffer.from([0, 4]));
  const shortAs = body.readUInt16BE(1);
  const holdTimeSec = body.readUInt16BE(3);
  if (holdTimeSec === 1 || holdTimeSec === 2) throw new BgpProtocolError(ERR_OPEN, SUB_OPEN_UNACCEPTABLE_HOLD, `hold time ${holdTimeSec} s (must be 0 or at least 3)`);
  const id = body.readUInt32BE(5);
  if (id === 0) throw new BgpProtocolError(ERR_OPEN, SUB_OPEN_BAD_BGP_ID, 'BGP identifier 0.0.0.0');
  const paramsLen = body.readUInt8(9);
  if (10 + paramsLen !== body.length) throw malformedOpen(`optional parameters of ${paramsLen} bytes in an OPEN of ${body.length}`);
  const caps = readParams(body.subarray(10));
  const asn = caps.fourOctetAs ?? shortAs;
  if (asn === 0) throw new BgpProtocolError(ERR_OPEN, SUB_OPEN_BAD_PEER_AS, 'AS 0');
  return {
    asn,
    holdTimeSec,
    routerId: ipAddress(4, BigInt(id)),
    families: caps.sawMultiprotocol ? caps.families : [4],
    fourOctetAs: caps.fourOctetAs !== undefined,
    routeRefresh: caps.routeRefresh,
    ...(caps.gracefulRestart ? { gracefulRestart: caps.gracefulRestart } : {}),
  };
}

function malformedOpen(why: string): BgpProtocolError {
  return new BgpProtocolError(ERR_OPEN, 0, `malformed OPEN: ${why}`);
}

function readParams(params: Buffer): Caps {
  const caps: Caps = { families: [], sawMultiprotocol: false, fourOctetAs: undefined, routeRefresh: false, gracefulRestart: undefined };
  for (const { type, value } of tlvs(params, 'optional parameter')) {
    // Other parameter types (authentication, long gone) are skipped rather than refused: nothing here needs them.
    if (type === PARAM_CAPABILITIES) for (const cap of tlvs(value, 'capability')) readCapability(caps, cap.type, cap.value);
  }
  return caps;
}

function* tlvs(buf: Buffer, what: string): Generator<{ type: number; value: Buffer }> {
  let at = 0;
  while (at < buf.length) {
    if (at + 2 > buf.length) throw malformedOpen(`a truncated ${what}`);
    const len = buf.readUInt8(at + 1);
    if (at + 2 + len > buf.length) throw malformedOpen(`a ${what} of ${len} bytes overruns its container`);
    yield { type: buf.readUInt8(at), value: buf.subarray(at + 2, at + 2 + len) };
    at += 2 + len;
  }
}

function readCapability(caps: Caps, code: number, value: Buffer): void {
  if (code === CAP_MULTIPROTOCOL && value.length === 4) {
    caps.sawMultiprotocol = true;
    const family = familyOf(value.readUInt16BE(0), value.readUInt8(3));
    if (family && !caps.families.includes(family)) caps.families.push(family);
  } else if (code === CAP_FOUR_OCTET_AS && value.length === 4) {
    caps.fourOctetAs = value.readUInt32BE(0);
  } else if (code === CAP_ROUTE_REFRESH) {
    caps.routeRefresh = true;
  } else if (code === CAP_GRACEFUL_RESTART && value.length >= 2 && (value.length - 2) % 4 === 0) {
    caps.gracefulRestart = readGracefulRestart(value);
  }
}

function readGracefulRestart(value: Buffer): GracefulRestartCapability {
  const head = value.readUInt16BE(0);
  const families: Family[] = [];
  const preserved: Family[] = [];
  for (let at = 2; at < value.length; at += 4) {
    const family = familyOf(value.readUInt16BE(at), value.readUInt8(at + 2));
    if (!family) continue;
    families.push(family);
    if (value.readUInt8(at + 3) & GR_FORWARDING_PRESERVED) preserved.push(family);
  }
  return { restartTimeSec: head & MAX_GR_TIME, restarting: ((head >> 12) & GR_RESTART_STATE) !== 0, families, preserved };
}
