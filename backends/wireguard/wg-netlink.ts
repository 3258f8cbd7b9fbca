/**
 * The WireGuard generic netlink family (linux/wireguard.h) as pure encode/decode: the SET_DEVICE messages that
 * apply a peer change to a kernel device, and the GET_DEVICE dump decoded into the same WgDeviceState the
 * userspace path reads over UAPI. Keys are base64 on this side and raw 32 bytes on the wire.
 *
 * Nested attributes carry NLA_F_NESTED (the kernel's nla_parse_nested refuses them without it), and the elements
 * of an array (peers, allowed IPs) are numbered from 0 within each message, as wgctrl does; the kernel ignores
 * the numbers.
 */
import { FlannelError } from '../../flanneld/runtime/errors.js';
import { ipNet, networkAddress, type IpNet } from '../../flanneld/ip/cidr.js';
import { AF_INET, AF_INET6, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_HDRLEN } from '../datapath/netlink/constants.js';
import { afOf, ipBytes, ipFromBytes } from '../datapath/netlink/family.js';
import { decodeGenl, encodeGenl, GENL_HDRLEN } from '../datapath/netlink/genetlink.js';
import { align4, attrLength, str, u16, u16be, u32, u8, type Attr, type RawMessage } from '../datapath/netlink/message.js';
import type { MessageBuilder } from '../datapath/netlink/socket.js';
import type { WgInterfaceConfig, WgPeerChanges } from './wg-device.js';
import { encodeWgKey } from './wg-key.js';
import { keyToHex, type WgDeviceState, type WgEndpoint, type WgPeerConfig, type WgPeerState } from './uapi.js';

export const WG_GENL_NAME = 'wireguard';
export const WG_GENL_VERSION = 1;

export const WG_CMD_GET_DEVICE = 0;
export const WG_CMD_SET_DEVICE = 1;

export const WGDEVICE_A_IFINDEX = 1;
export const WGDEVICE_A_IFNAME = 2;
export const WGDEVICE_A_PRIVATE_KEY = 3;
export const WGDEVICE_A_PUBLIC_KEY = 4;
export const WGDEVICE_A_FLAGS = 5;
export const WGDEVICE_A_LISTEN_PORT = 6;
export const WGDEVICE_A_FWMARK = 7;
export const WGDEVICE_A_PEERS = 8;
export const WGDEVICE_F_REPLACE_PEERS = 1;

export const WGPEER_A_PUBLIC_KEY = 1;
export const WGPEER_A_PRESHARED_KEY = 2;
export const WGPEER_A_FLAGS = 3;
export const WGPEER_A_ENDPOINT = 4;
export const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL = 5;
export const WGPEER_A_LAST_HANDSHAKE_TIME = 6;
export const WGPEER_A_RX_BYTES = 7;
export const WGPEER_A_TX_BYTES = 8;
export const WGPEER_A_ALLOWEDIPS = 9;
export const WGPEER_A_PROTOCOL_VERSION = 10;
export const WGPEER_F_REMOVE_ME = 1;
export const WGPEER_F_REPLACE_ALLOWEDIPS = 2;
export const WGPEER_F_UPDATE_ONLY = 4;

export const WGALLOWEDIP_A_FAMILY = 1;
export const WGALLOWEDIP_A_IPADDR = 2;
export const WGALLOWEDIP_A_CIDR_MASK = 3;

export const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = 0x3fff;

const KEY_BYTES = 32;
const SOCKADDR_IN_BYTES = 16;
const SOCKADDR_IN6_BYTES = 28;
const TIMESPEC_BYTES = 16;
const MAX_U16 = 0xffff;
const NO_KEY = Buffer.alloc(KEY_BYTES);

/**
 * The most one SET message may hold. The kernel takes any size up to the socket's send buffer, but it handles a
 * message whole under the device's update lock and rtnl, in one linear allocation: wg(8) keeps each message in
 * one page and wgctrl at 32 peers. 32 KiB is about 170 typical flannel peers (an endpoint, one IPv4 and one IPv6
 * allowed IP each), so a 1,000-node cluster is six messages, each a modest allocation and a short hold of the lock.
 */
export const SET_MESSAGE_BUDGET = 32 * 1024;

/** One SET_DEVICE request: the interface config always, the peer change split over as many messages as needed. */
export interface WgSetRequest extends WgPeerChanges {
  readonly ifname: string;
  readonly iface: WgInterfaceConfig;
  /** Drop every peer the device has before adding these (WGDEVICE_F_REPLACE_PEERS, first message only). */
  readonly replacePeers?: boolean;
}

const nested = (type: number, value: readonly Attr[]): Attr => ({ type: type | NLA_F_NESTED, value });
/** Array elements, numbered from 0. */
const elements = (items: readonly (readonly Attr[])[]): Attr[] => items.map((attrs, i) => nested(i, attrs));

function keyBytes(base64: string): Buffer {
  return Buffer.from(keyToHex(base64), 'hex');
}

function checkedU16(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U16) {
    throw new FlannelError('ERR_CONFIG_INVALID', `WireGuard ${what} must be an integer in 0..${MAX_U16} (got ${value})`);
  }
  return value;
}

/** struct sockaddr_in / sockaddr_in6: family in host order, port in network order, then the address. */
export function sockaddr(endpoint: WgEndpoint): Buffer {
  const v4 = endpoint.ip.family === 4;
  const b = Buffer.alloc(v4 ? SOCKADDR_IN_BYTES : SOCKADDR_IN6_BYTES);
  b.writeUInt16LE(v4 ? AF_INET : AF_INET6, 0);
  u16be(checkedU16(endpoint.port, 'endpoint port')).copy(b, 2);
  ipBytes(endpoint.ip).copy(b, v4 ? 4 : 8);
  return b;
}

function allowedIpAttrs(net: IpNet): Attr[] {
  return [
    { type: WGALLOWEDIP_A_FAMILY, value: u16(afOf(net.family)) },
    { type: WGALLOWEDIP_A_IPADDR, value: ipBytes(networkAddress(net)) },
    { type: WGALLOWEDIP_A_CIDR_MASK, value: u8(net.prefixLen) },
  ];
}

function interfaceAttrs(req: WgSetRequest): Attr[] {
  const attrs: Attr[] = [
    { type: WGDEVICE_A_IFNAME, value: str(req.ifname) },
    { type: WGDEVICE_A_PRIVATE_KEY, value: keyBytes(req.iface.privateKey) },
    { type: WGDEVICE_A_LISTEN_PORT, value: u16(checkedU16(req.iface.listenPort, 'listen port')) },
  ];
  if (req.replacePeers) attrs.push({ type: WGDEVICE_A_FLAGS, value: u32(WGDEVICE_F_REPLACE_PEERS) });
  return attrs;
}

const removalAttrs = (publicKey: string): Attr[] => [
  { type: WGPEER_A_PUBLIC_KEY, value: keyBytes(publicKey) },
  { type: WGPEER_A_FLAGS, value: u32(WGPEER_F_REMOVE_ME) },
];

/** A written peer's own attributes; the allowed IPs follow, possibly over several pieces. */
function writtenPeerAttrs(peer: WgPeerConfig): Attr[] {
  const attrs: Attr[] = [
    { type: WGPEER_A_PUBLIC_KEY, value: keyBytes(peer.publicKey) },
    // Sent even when unset (zeros), like the keepalive: a key or interval from before cannot survive the write.
    { type: WGPEER_A_PRESHARED_KEY, value: peer.presharedKey === undefined ? NO_KEY : keyBytes(peer.presharedKey) },
    { type: WGPEER_A_FLAGS, value: u32(WGPEER_F_REPLACE_ALLOWEDIPS) },
  ];
  if (peer.endpoint) attrs.push({ type: WGPEER_A_ENDPOINT, value: sockaddr(peer.endpoint) });
  attrs.push({ type: WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, value: u16(checkedU16(peer.persistentKeepalive ?? 0, 'persistent keepalive')) });
  return attrs;
}

const sizeOf = (attrs: readonly Attr[]): number => attrs.reduce((n, a) => n + align4(attrLength(a)), 0);
/** What an element adds to the message: its nest header and its attributes. */
const elementSize = (attrs: readonly Attr[]): number => 4 + sizeOf(attrs);

/**
 * A written peer as one or more pieces that each fit in `room` bytes: the first has all its attributes, the rest
 * only its public key and the allowed IPs that did not fit, which the kernel adds to the same peer (no
 * REPLACE_ALLOWEDIPS there, or it would drop the first piece's).
 */
function writtenPeerPieces(peer: WgPeerConfig, room: number): Attr[][] {
  const pieces: Attr[][] = [];
  let head = writtenPeerAttrs(peer);
  let ips: Attr[][] = [];
  let size = elementSize(head) + 4; // the piece with its ALLOWEDIPS nest header
  const flush = (): void => {
    pieces.push(ips.length > 0 ? [...head, nested(WGPEER_A_ALLOWEDIPS, elements(ips))] : head);
    head = [{ type: WGPEER_A_PUBLIC_KEY, value: keyBytes(peer.publicKey) }];
    ips = [];
    size = elementSize(head) + 4;
  };
  for (const net of peer.allowedIps) {
    const ip = allowedIpAttrs(net);
    if (ips.length > 0 && size + elementSize(ip) > room) flush();
    ips.push(ip);
    size += elementSize(ip);
  }
  flush();
  return pieces;
}

/**
 * The device-level attribute lists of the SET messages for `req`, in order, each within `budget` bytes: the first
 * carries the interface config, every one the interface name and as many peers (removals first) as fit.
 */
export function planSet(req: WgSetRequest, budget = SET_MESSAGE_BUDGET): Attr[][] {
  const first = interfaceAttrs(req);
  const later: Attr[] = [first[0]!];
  const overhead = NLMSG_HDRLEN + GENL_HDRLEN + 4; // + the PEERS nest header
  const room = budget - overhead - sizeOf(first) - 4; // a piece must fit an otherwise empty first message
  const pieces = [...req.remove.map(removalAttrs), ...req.write.flatMap((peer) => writtenPeerPieces(peer, room))];
  const messages: Attr[][] = [];
  let device = first;
  let peers: Attr[][] = [];
  let used = overhead + sizeOf(device);
  for (const piece of pieces) {
    if (peers.length > 0 && used + elementSize(piece) > budget) {
      messages.push([...device, nested(WGDEVICE_A_PEERS, elements(peers))]);
      device = later;
      peers = [];
      used = overhead + sizeOf(device);
    }
    peers.push(piece);
    used += elementSize(piece);
  }
  messages.push(peers.length > 0 ? [...device, nested(WGDEVICE_A_PEERS, elements(peers))] : device);
  return messages;
}

export const setDevice = (familyId: number, attrs: readonly Attr[]): MessageBuilder => (seq) =>
  encodeGenl(familyId, NLM_F_REQUEST | NLM_F_ACK, seq, WG_CMD_SET_DEVICE, WG_GENL_VERSION, attrs);

/** The GET_DEVICE dump of one device; the kernel only answers it as a dump. */
export const getDevice = (familyId: number, ifname: string): MessageBuilder => (seq) =>
  encodeGenl(familyId, NLM_F_REQUEST | NLM_F_DUMP, seq, WG_CMD_GET_DEVICE, WG_GENL_VERSION, [{ type: WGDEVICE_A_IFNAME, value: str(ifname) }]);

// ---- decoding ----

/** Where in a reply a decode failed: "message 2, peer 1, allowed IP 3". */
type Where = readonly string[];

class MalformedReply extends Error {
  constructor(
    readonly where: Where,
    reason: string,
  ) {
    super(reason);
  }
}

function fail(where: Where, reason: string): never {
  throw new MalformedReply(where, reason);
}

interface NlAttr {
  readonly type: number;
  readonly value: Buffer;
}

/** Every attribute of one level; a length that runs past the end or below the header is refused. */
function attrList(buf: Buffer, where: Where): NlAttr[] {
  const out: NlAttr[] = [];
  let at = 0;
  while (at < buf.length) {
    if (buf.length - at < 4) fail(where, `${buf.length - at} stray bytes after the last attribute`);
    const len = buf.readUInt16LE(at);
    if (len < 4 || at + len > buf.length) fail(where, `attribute at offset ${at} has length ${len}, ${buf.length - at} bytes left`);
    out.push({ type: buf.readUInt16LE(at + 2) & NLA_TYPE_MASK, value: buf.subarray(at + 4, at + len) });
    at += align4(len);
  }
  return out;
}

/** Attributes by type, the last one winning as in the kernel's nla_parse. */
function attrMap(buf: Buffer, where: Where): Map<number, Buffer> {
  return new Map(attrList(buf, where).map((a) => [a.type, a.value]));
}

function sized(value: Buffer, bytes: number, where: Where, what: string): Buffer {
  if (value.length !== bytes) fail(where, `${what} is ${value.length} bytes, not ${bytes}`);
  return value;
}

const readU16 = (v: Buffer, where: Where, what: string): number => sized(v, 2, where, what).readUInt16LE(0);
const readU32 = (v: Buffer, where: Where, what: string): number => sized(v, 4, where, what).readUInt32LE(0);
/** Counters as plain numbers: past 2^53 bytes they lose precision, which a diff of peers never looks at. */
const readU64 = (v: Buffer, where: Where, what: string): number => Number(sized(v, 8, where, what).readBigUInt64LE(0));
const readKey = (v: Buffer, where: Where, what: string): string => encodeWgKey(Buffer.from(sized(v, KEY_BYTES, where, what)));

function decodeEndpoint(v: Buffer, where: Where): WgEndpoint {
  if (v.length < 2) fail(where, `endpoint is ${v.length} bytes`);
  const family = v.readUInt16LE(0);
  if (family !== AF_INET && family !== AF_INET6) fail(where, `endpoint address family ${family} is neither AF_INET nor AF_INET6`);
  const v4 = family === AF_INET;
  sized(v, v4 ? SOCKADDR_IN_BYTES : SOCKADDR_IN6_BYTES, where, v4 ? 'sockaddr_in endpoint' : 'sockaddr_in6 endpoint');
  const ip = ipFromBytes(Buffer.from(v4 ? v.subarray(4, 8) : v.subarray(8, 24)))!;
  return { ip, port: v.readUInt16BE(2) };
}

/** Milliseconds since the epoch, or undefined for the kernel's 0/0 "never". */
function decodeHandshake(v: Buffer, where: Where): number | undefined {
  sized(v, TIMESPEC_BYTES, where, 'last handshake time');
  const sec = v.readBigInt64LE(0);
  const nsec = v.readBigInt64LE(8);
  if (sec < 0n || sec > BigInt(Number.MAX_SAFE_INTEGER) / 1000n || nsec < 0n || nsec > 999_999_999n) fail(where, `last handshake time ${sec}s ${nsec}ns is out of range`);
  return sec === 0n && nsec === 0n ? undefined : Number(sec) * 1000 + Number(nsec / 1_000_000n);
}

function decodeAllowedIp(buf: Buffer, where: Where): IpNet {
  const attrs = attrMap(buf, where);
  const need = (type: number, what: string): Buffer => attrs.get(type) ?? fail(where, `${what} is missing`);
  const af = readU16(need(WGALLOWEDIP_A_FAMILY, 'family'), where, 'family');
  if (af !== AF_INET && af !== AF_INET6) fail(where, `family ${af} is neither AF_INET nor AF_INET6`);
  const family = af === AF_INET ? 4 : 6;
  const addr = sized(need(WGALLOWEDIP_A_IPADDR, 'address'), family === 4 ? 4 : 16, where, `IPv${family} address`);
  const mask = sized(need(WGALLOWEDIP_A_CIDR_MASK, 'cidr mask'), 1, where, 'cidr mask').readUInt8(0);
  const bits = family === 4 ? 32 : 128;
  if (mask > bits) fail(where, `cidr mask ${mask} is over ${bits} for IPv${family}`);
  return ipNet(family, ipFromBytes(Buffer.from(addr))!.value, mask);
}

/** One peer element as the message has it; a continuation (allowed IPs only) leaves the rest undefined. */
interface PeerPart {
  readonly publicKey: string;
  readonly presharedKey?: string | undefined;
  readonly endpoint?: WgEndpoint;
  readonly persistentKeepalive?: number;
  readonly lastHandshakeMs?: number | undefined;
  readonly rxBytes?: number;
  readonly txBytes?: number;
  readonly allowedIps: readonly IpNet[];
}

function decodePeer(buf: Buffer, where: Where): PeerPart {
  const attrs = attrMap(buf, where);
  const key = attrs.get(WGPEER_A_PUBLIC_KEY) ?? fail(where, 'public key is missing');
  const psk = attrs.get(WGPEER_A_PRESHARED_KEY);
  const endpoint = attrs.get(WGPEER_A_ENDPOINT);
  const keepalive = attrs.get(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL);
  const handshake = attrs.get(WGPEER_A_LAST_HANDSHAKE_TIME);
  const rx = attrs.get(WGPEER_A_RX_BYTES);
  const tx = attrs.get(WGPEER_A_TX_BYTES);
  const ips = attrs.get(WGPEER_A_ALLOWEDIPS);
  return {
    publicKey: readKey(key, where, 'public key'),
    ...(psk ? { presharedKey: sized(psk, KEY_BYTES, where, 'preshared key').equals(NO_KEY) ? undefined : readKey(psk, where, 'preshared key') } : {}),
    ...(endpoint ? { endpoint: decodeEndpoint(endpoint, where) } : {}),
    ...(keepalive ? { persistentKeepalive: readU16(keepalive, where, 'persistent keepalive') } : {}),
    ...(handshake ? { lastHandshakeMs: decodeHandshake(handshake, where) } : {}),
    ...(rx ? { rxBytes: readU64(rx, where, 'rx bytes') } : {}),
    ...(tx ? { txBytes: readU64(tx, where, 'tx bytes') } : {}),
    allowedIps: ips ? attrList(ips, where).map((a, i) => decodeAllowedIp(a.value, [...where, `allowed IP ${i + 1}`])) : [],
  };
}

interface DeviceDraft {
  privateKey: string | undefined;
  listenPort: number | undefined;
  fwmark: number;
  readonly peers: Map<string, WgPeerState>;
}

/** A peer the kernel split over messages comes back as one: later parts add allowed IPs and any fields they carry. */
function mergePeer(peers: Map<string, WgPeerState>, part: PeerPart): void {
  const known = peers.get(part.publicKey);
  const base: WgPeerState = known ?? {
    publicKey: part.publicKey, presharedKey: undefined, endpoint: undefined, persistentKeepalive: 0, allowedIps: [], lastHandshakeMs: undefined, rxBytes: 0, txBytes: 0,
  };
  peers.set(part.publicKey, { ...base, ...part, allowedIps: [...base.allowedIps, ...part.allowedIps] });
}

function decodeDeviceMessage(draft: DeviceDraft, msg: RawMessage, where: Where): void {
  const genl = decodeGenl(msg) ?? fail(where, `${msg.payload.length} bytes is too short for a generic netlink header`);
  if (genl.cmd !== WG_CMD_GET_DEVICE) fail(where, `command ${genl.cmd} is not WG_CMD_GET_DEVICE`);
  const attrs = attrMap(genl.attrs, where);
  const privateKey = attrs.get(WGDEVICE_A_PRIVATE_KEY);
  const listenPort = attrs.get(WGDEVICE_A_LISTEN_PORT);
  const fwmark = attrs.get(WGDEVICE_A_FWMARK);
  const peers = attrs.get(WGDEVICE_A_PEERS);
  if (privateKey) draft.privateKey = readKey(privateKey, where, 'private key');
  if (listenPort) draft.listenPort = readU16(listenPort, where, 'listen port');
  if (fwmark) draft.fwmark = readU32(fwmark, where, 'fwmark');
  for (const [i, a] of attrList(peers ?? Buffer.alloc(0), where).entries()) mergePeer(draft.peers, decodePeer(a.value, [...where, `peer ${i + 1}`]));
}

/**
 * The device in a GET_DEVICE dump. The kernel puts the interface attributes in the first message only and may
 * split a peer's allowed IPs over messages, repeating its public key: peers are merged by key, in order of first
 * appearance. Anything malformed is an ERR_DEVICE error saying where (`what` names the request), never a key.
 */
export function decodeDevice(messages: readonly RawMessage[], what: string): WgDeviceState {
  const draft: DeviceDraft = { privateKey: undefined, listenPort: undefined, fwmark: 0, peers: new Map() };
  try {
    for (const [i, msg] of messages.entries()) decodeDeviceMessage(draft, msg, [`message ${i + 1}`]);
  } catch (err) {
    if (!(err instanceof MalformedReply)) throw err;
    throw new FlannelError('ERR_DEVICE', `${what}: malformed reply (${err.where.join(', ')}): ${err.message}`);
  }
  return { privateKey: draft.privateKey, listenPort: draft.listenPort, fwmark: draft.fwmark, peers: [...draft.peers.values()] };
}
