/**
 * An in-memory kernel for the wireguard backend's kernel path, behind the OpenNetlinkSocket shape: NETLINK_ROUTE
 * sockets get links (RTM_NEWLINK/GETLINK/DELLINK), NETLINK_GENERIC sockets get nlctrl's GETFAMILY and the
 * wireguard family's SET_DEVICE/GET_DEVICE, kept per device as the kernel keeps them (REPLACE_PEERS, REMOVE_ME,
 * UPDATE_ONLY, REPLACE_ALLOWEDIPS, an allowed IP moving to the peer that names it last).
 *
 * It parses and builds its bytes with its own few helpers, never the product's codec, so a bug that encoder and
 * decoder share cannot cancel out. It can split a GET dump like the kernel does, and play a kernel without the
 * wireguard module (EOPNOTSUPP for the link kind, ENOENT for the family).
 */
import { constants as osConstants } from 'node:os';
import { formatIp, parseIp } from '../../flanneld/ip/address.js';
import { parseCidr } from '../../flanneld/ip/cidr.js';
import type { WgPeerConfig } from '../../backends/wireguard/uapi.js';
import type { NetlinkReceiver, NetlinkSocketOptions, NetlinkTransport, OpenNetlinkSocket } from '../../backends/datapath/netlink/native-socket.js';

const NETLINK_GENERIC = 16;
const HDR = 16;
const NESTED = 0x8000;
const F_MULTI = 0x2;
const F_ACK = 0x4;
const F_EXCL = 0x200;
const F_CREATE = 0x400;
const F_DUMP = 0x300;
const T_NOOP = 1;
const T_ERROR = 2;
const T_DONE = 3;
const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_GETLINK = 18;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_LINKINFO = 18;
const IFLA_INFO_KIND = 1;
const GENL_CTRL = 0x10;
const CTRL_GETFAMILY = 3;
const CTRL_NEWFAMILY = 1;
const WG_GET = 0;
const WG_SET = 1;
const AF4 = 2;
const AF6 = 10;
/** The id the fake hands the wireguard family; anything above nlctrl's 0x10 would do. */
export const FAKE_WG_FAMILY_ID = 0x1f;

class Errno extends Error {
  constructor(readonly errno: string) {
    super(errno);
  }
}

// ---- bytes: the fake's own minimal netlink reader and writer ----

interface Msg {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly body: Buffer;
  readonly raw: Buffer;
}

interface Nla {
  readonly type: number;
  readonly nested: boolean;
  readonly value: Buffer;
}

function readMessages(buf: Buffer): Msg[] {
  const out: Msg[] = [];
  for (let at = 0; at + HDR <= buf.length; ) {
    const len = buf.readUInt32LE(at);
    if (len < HDR || at + len > buf.length) throw new Error(`fake kernel: bad nlmsg_len ${len} at ${at}`);
    out.push({ type: buf.readUInt16LE(at + 4), flags: buf.readUInt16LE(at + 6), seq: buf.readUInt32LE(at + 8), body: buf.subarray(at + HDR, at + len), raw: buf.subarray(at, at + len) });
    at += (len + 3) & ~3;
  }
  return out;
}

/** Refuses what the kernel's nla_validate refuses: a length below the header or past the end (EINVAL). */
function readAttrs(buf: Buffer): Nla[] {
  const out: Nla[] = [];
  let at = 0;
  while (at + 4 <= buf.length) {
    const len = buf.readUInt16LE(at);
    if (len < 4 || at + len > buf.length) throw new Errno('EINVAL');
    const type = buf.readUInt16LE(at + 2);
    out.push({ type: type & 0x3fff, nested: (type & NESTED) !== 0, value: buf.subarray(at + 4, at + len) });
    at += (len + 3) & ~3;
  }
  return out;
}

function byType(buf: Buffer): Map<number, Nla> {
  return new Map(readAttrs(buf).map((a) => [a.type, a]));
}

/** The kernel's nla_parse_nested: NLA_F_NESTED is required. */
function nestedList(a: Nla | undefined): Nla[] {
  if (!a) return [];
  if (!a.nested) throw new Errno('EINVAL');
  return readAttrs(a.value);
}

const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc(((b.length + 3) & ~3) - b.length)]);

function nla(type: number, value: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16LE(4 + value.length, 0);
  h.writeUInt16LE(type, 2);
  return pad(Buffer.concat([h, value]));
}

const nest = (type: number, parts: readonly Buffer[]): Buffer => nla(type | NESTED, Buffer.concat(parts));
const le16 = (v: number): Buffer => Buffer.from([v & 0xff, v >> 8]);
function le32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}
function le64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}
const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);

function nlmsg(type: number, flags: number, seq: number, body: Buffer): Buffer {
  const h = Buffer.alloc(HDR);
  h.writeUInt32LE(HDR + body.length, 0);
  h.writeUInt16LE(type, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(seq, 8);
  return pad(Buffer.concat([h, body]));
}

const errnoNumber = (name: string): number => (osConstants.errno as Record<string, number>)[name] ?? 22;

/** NLMSG_ERROR: the negative errno (0 for an ack) and, as with NETLINK_CAP_ACK, only the request's header. */
function ack(req: Msg, errno?: string): Buffer {
  const code = Buffer.alloc(4);
  code.writeInt32LE(errno ? -errnoNumber(errno) : 0);
  return nlmsg(T_ERROR, 0, req.seq, Buffer.concat([code, req.raw.subarray(0, HDR)]));
}

const u16At = (a: Nla | undefined): number | undefined => (a && a.value.length >= 2 ? a.value.readUInt16LE(0) : undefined);
const u32At = (a: Nla | undefined): number | undefined => (a && a.value.length >= 4 ? a.value.readUInt32LE(0) : undefined);
const strAt = (a: Nla | undefined): string | undefined => a?.value.toString().replace(/\0.*$/s, '');

// ---- state ----

export interface FakeLink {
  readonly index: number;
  readonly name: string;
  readonly kind: string;
}

interface AllowedIp {
  readonly family: number;
  readonly addr: Buffer;
  readonly cidr: number;
}

interface Peer {
  readonly publicKey: Buffer;
  psk: Buffer;
  endpoint: Buffer | undefined;
  keepalive: number;
  allowedIps: AllowedIp[];
  rx: bigint;
  tx: bigint;
  handshakeSec: bigint;
}

interface Device {
  privateKey: Buffer | undefined;
  listenPort: number;
  fwmark: number;
  /** By hex public key, in the order they were added, as the kernel's peer list. */
  readonly peers: Map<string, Peer>;
  /** Which peer holds each prefix (the kernel's allowed-IPs trie): one owner per prefix. */
  readonly owners: Map<string, Peer>;
}

/** What a test reads back: the fake's own view, in text. */
export interface FakePeerView {
  readonly publicKey: string;
  readonly presharedKey: string | undefined;
  readonly endpoint: string | undefined;
  readonly keepalive: number;
  readonly allowedIps: readonly string[];
}

export interface FakeDeviceView {
  readonly privateKey: string | undefined;
  readonly listenPort: number;
  readonly peers: readonly FakePeerView[];
}

/** One SET_DEVICE message as the fake received it. */
export interface FakeSetRecord {
  readonly bytes: number;
  readonly attrs: readonly number[];
  readonly peers: number;
}

export class FakeWgKernel {
  /** False plays a kernel without the module: RTM_NEWLINK kind wireguard fails with EOPNOTSUPP. */
  linkKindSupported = true;
  /** False: GETFAMILY "wireguard" fails with ENOENT. */
  familyKnown = true;
  /** When set, a GET dump carries at most this many allowed IPs (or empty peers) per message. */
  dumpItemsPerMessage: number | undefined;
  readonly links = new Map<string, FakeLink>();
  readonly sets: FakeSetRecord[] = [];
  readonly opened: NetlinkSocketOptions[] = [];
  private readonly devices = new Map<number, Device>();
  private nextIndex = 2;

  readonly open: OpenNetlinkSocket = (opts, receiver) => {
    this.opened.push(opts);
    return this.transport(opts.protocol === NETLINK_GENERIC, receiver);
  };

  noModule(): void {
    this.linkKindSupported = false;
    this.familyKnown = false;
  }

  addLink(name: string, kind: string): FakeLink {
    const link = { index: this.nextIndex++, name, kind };
    this.links.set(name, link);
    if (kind === 'wireguard') this.devices.set(link.index, { privateKey: undefined, listenPort: 0, fwmark: 0, peers: new Map(), owners: new Map() });
    return link;
  }

  /** Traffic counters and a handshake, as if the peer had talked. */
  touchPeer(name: string, publicKey: string, stats: { rx: bigint; tx: bigint; handshakeSec: bigint }): void {
    const peer = this.deviceByName(name).peers.get(Buffer.from(publicKey, 'base64').toString('hex'));
    if (!peer) throw new Error('fake kernel: no such peer');
    Object.assign(peer, stats);
  }

  view(name: string): FakeDeviceView {
    const d = this.deviceByName(name);
    return { privateKey: d.privateKey?.toString('base64'), listenPort: d.listenPort, peers: [...d.peers.values()].map(peerView) };
  }

  private deviceByName(name: string): Device {
    const link = this.links.get(name);
    const d = link && this.devices.get(link.index);
    if (!d) throw new Error(`fake kernel: no wireguard device ${name}`);
    return d;
  }

  private transport(generic: boolean, receiver: NetlinkReceiver): NetlinkTransport {
    let closed = false;
    return {
      send: (buf) => {
        const replies = readMessages(buf).map((m) => this.answer(generic, m));
        setImmediate(() => {
          if (!closed) receiver.data(Buffer.concat(replies));
        });
      },
      info: () => ({ rcvbuf: 0, sndbuf: 0, rcvbufForced: true, portId: 1 }),
      close: () => {
        closed = true;
      },
    };
  }

  /** Every reply to one request, an error or ack last where the request asked for one (errors always). */
  private answer(generic: boolean, m: Msg): Buffer {
    try {
      const replies = generic ? this.genl(m) : this.rtnl(m);
      const wantsAck = (m.flags & F_ACK) !== 0 && (m.flags & F_DUMP) !== F_DUMP;
      return Buffer.concat([...replies, ...(wantsAck ? [ack(m)] : [])]);
    } catch (err) {
      if (!(err instanceof Errno)) throw err;
      return ack(m, err.errno);
    }
  }

  private rtnl(m: Msg): Buffer[] {
    if (m.type === T_NOOP) return [];
    const index = m.body.readInt32LE(4);
    const attrs = byType(m.body.subarray(16));
    if (m.type === RTM_GETLINK) return [this.linkMessage(m, this.linkNamed(strAt(attrs.get(IFLA_IFNAME))))];
    if (m.type === RTM_DELLINK) return this.delLink(index);
    if (m.type === RTM_NEWLINK && m.flags & F_CREATE) return this.newLink(m, attrs);
    if (m.type === RTM_NEWLINK && [...this.links.values()].some((l) => l.index === index)) return [];
    throw new Errno(m.type === RTM_NEWLINK ? 'ENODEV' : 'EOPNOTSUPP');
  }

  private linkNamed(name: string | undefined): FakeLink {
    const link = name === undefined ? undefined : this.links.get(name);
    if (!link) throw new Errno('ENODEV');
    return link;
  }

  private linkMessage(m: Msg, link: FakeLink): Buffer {
    const ifi = Buffer.alloc(16);
    ifi.writeInt32LE(link.index, 4);
    const body = Buffer.concat([ifi, nla(IFLA_IFNAME, cstr(link.name)), nla(IFLA_MTU, le32(1420)), nest(IFLA_LINKINFO, [nla(IFLA_INFO_KIND, cstr(link.kind))])]);
    return nlmsg(RTM_NEWLINK, 0, m.seq, body);
  }

  private newLink(m: Msg, attrs: Map<number, Nla>): Buffer[] {
    const name = strAt(attrs.get(IFLA_IFNAME));
    const kind = strAt(byType(attrs.get(IFLA_LINKINFO)?.value ?? Buffer.alloc(0)).get(IFLA_INFO_KIND));
    if (!name || !kind) throw new Errno('EINVAL');
    if (this.links.has(name)) throw new Errno(m.flags & F_EXCL ? 'EEXIST' : 'EOPNOTSUPP');
    if (kind === 'wireguard' && !this.linkKindSupported) throw new Errno('EOPNOTSUPP');
    this.addLink(name, kind);
    return [];
  }

  private delLink(index: number): Buffer[] {
    const link = [...this.links.values()].find((l) => l.index === index);
    if (!link) throw new Errno('ENODEV');
    this.links.delete(link.name);
    this.devices.delete(index);
    return [];
  }

  private genl(m: Msg): Buffer[] {
    const cmd = m.body.readUInt8(0);
    const attrs = byType(m.body.subarray(4));
    if (m.type === GENL_CTRL && cmd === CTRL_GETFAMILY) return [this.family(m, strAt(attrs.get(2)))];
    if (m.type !== FAKE_WG_FAMILY_ID || !this.familyKnown) throw new Errno('ENOENT');
    if (cmd === WG_SET) return this.set(m, attrs);
    // The kernel only has a dumpit for GET_DEVICE.
    if (cmd === WG_GET && (m.flags & F_DUMP) === F_DUMP) return this.get(m, attrs);
    throw new Errno('EOPNOTSUPP');
  }

  private family(m: Msg, name: string | undefined): Buffer {
    if (name !== 'wireguard' || !this.familyKnown) throw new Errno('ENOENT');
    const body = Buffer.concat([Buffer.from([CTRL_NEWFAMILY, 2, 0, 0]), nla(1, le16(FAKE_WG_FAMILY_ID)), nla(2, cstr(name))]);
    return nlmsg(GENL_CTRL, 0, m.seq, body);
  }

  private target(attrs: Map<number, Nla>): { index: number; name: string; device: Device } {
    const index = u32At(attrs.get(1));
    const name = strAt(attrs.get(2));
    const link = index !== undefined ? [...this.links.values()].find((l) => l.index === index) : name !== undefined ? this.links.get(name) : undefined;
    if (index === undefined && name === undefined) throw new Errno('EINVAL');
    if (!link) throw new Errno('ENODEV');
    const device = this.devices.get(link.index);
    if (!device) throw new Errno('EOPNOTSUPP');
    return { index: link.index, name: link.name, device };
  }

  private set(m: Msg, attrs: Map<number, Nla>): Buffer[] {
    const peers = nestedList(attrs.get(8));
    this.sets.push({ bytes: m.raw.length, attrs: [...attrs.keys()], peers: peers.length });
    const { device } = this.target(attrs);
    const flags = u32At(attrs.get(5)) ?? 0;
    if (flags & ~1) throw new Errno('EOPNOTSUPP');
    const key = attrs.get(3);
    if (key) device.privateKey = Buffer.from(exact(key.value, 32));
    const port = attrs.get(6);
    if (port) device.listenPort = exact(port.value, 2).readUInt16LE(0);
    const mark = attrs.get(7);
    if (mark) device.fwmark = exact(mark.value, 4).readUInt32LE(0);
    if (flags & 1) {
      device.peers.clear();
      device.owners.clear();
    }
    for (const p of peers) setPeer(device, p);
    return [];
  }

  private get(m: Msg, attrs: Map<number, Nla>): Buffer[] {
    const { index, name, device } = this.target(attrs);
    const head = [nla(1, le32(index)), nla(2, cstr(name)), nla(6, le16(device.listenPort)), nla(7, le32(device.fwmark))];
    if (device.privateKey) head.push(nla(3, device.privateKey));
    const pages = splitPeers([...device.peers.values()], this.dumpItemsPerMessage ?? Number.MAX_SAFE_INTEGER);
    const messages = pages.map((page, i) => {
      const body = Buffer.concat([Buffer.from([WG_GET, 1, 0, 0]), ...(i === 0 ? head : []), nest(8, page.map((part, j) => nest(j, part)))]);
      return nlmsg(FAKE_WG_FAMILY_ID, F_MULTI, m.seq, body);
    });
    const done = Buffer.alloc(4);
    return [...messages, nlmsg(T_DONE, F_MULTI, m.seq, done)];
  }
}

function exact(value: Buffer, bytes: number): Buffer {
  if (value.length !== bytes) throw new Errno('EINVAL');
  return value;
}

function setPeer(device: Device, element: Nla): void {
  if (!element.nested) throw new Errno('EINVAL');
  const a = byType(element.value);
  const key = exact(a.get(1)?.value ?? Buffer.alloc(0), 32);
  const flags = u32At(a.get(3)) ?? 0;
  if (flags & ~7) throw new Errno('EOPNOTSUPP');
  const hex = key.toString('hex');
  let peer = device.peers.get(hex);
  if (flags & 1) {
    if (peer) dropAllowedIps(device, peer);
    device.peers.delete(hex);
    return;
  }
  if (!peer && flags & 4) return;
  if (!peer) {
    peer = { publicKey: Buffer.from(key), psk: Buffer.alloc(32), endpoint: undefined, keepalive: 0, allowedIps: [], rx: 0n, tx: 0n, handshakeSec: 0n };
    device.peers.set(hex, peer);
  }
  const psk = a.get(2);
  if (psk) peer.psk = Buffer.from(exact(psk.value, 32));
  const endpoint = a.get(4);
  if (endpoint) peer.endpoint = readSockaddr(endpoint.value);
  if (flags & 2) dropAllowedIps(device, peer);
  for (const ipAttr of nestedList(a.get(9))) addAllowedIp(device, peer, readAllowedIp(ipAttr));
  const keepalive = a.get(5);
  if (keepalive) peer.keepalive = exact(keepalive.value, 2).readUInt16LE(0);
}

/**
 * The kernel keeps family, port and address only, from a sockaddr of exactly its family's size. It skips any other
 * endpoint silently; the fake refuses it (EINVAL), so an encoder bug shows.
 */
function readSockaddr(v: Buffer): Buffer {
  const family = v.length >= 2 ? v.readUInt16LE(0) : 0;
  if (family === AF4 && v.length === 16) return Buffer.concat([v.subarray(0, 8), Buffer.alloc(8)]);
  if (family === AF6 && v.length === 28) return Buffer.concat([v.subarray(0, 4), Buffer.alloc(4), v.subarray(8, 24), Buffer.alloc(4)]);
  throw new Errno('EINVAL');
}

function readAllowedIp(element: Nla): AllowedIp {
  if (!element.nested) throw new Errno('EINVAL');
  const a = byType(element.value);
  const family = u16At(a.get(1));
  const addr = a.get(2)?.value;
  const cidr = a.get(3)?.value;
  if (family === undefined || !addr || !cidr || cidr.length !== 1) throw new Errno('EINVAL');
  const bytes = family === AF4 ? 4 : family === AF6 ? 16 : 0;
  // The kernel's answer to a family, length or mask that do not go together.
  if (!bytes || addr.length !== bytes || cidr[0]! > bytes * 8) throw new Errno('EAFNOSUPPORT');
  return { family, addr: masked(addr, cidr[0]!), cidr: cidr[0]! } as AllowedIp;
}

function masked(addr: Buffer, cidr: number): Buffer {
  const out = Buffer.from(addr);
  for (let bit = cidr; bit < out.length * 8; bit++) out[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return out;
}

const prefixKey = (ip: AllowedIp): string => `${ip.family}/${ip.addr.toString('hex')}/${ip.cidr}`;

/** One prefix belongs to one peer of a device: naming it again moves it. */
function addAllowedIp(device: Device, peer: Peer, ip: AllowedIp): void {
  const k = prefixKey(ip);
  const owner = device.owners.get(k);
  if (owner) owner.allowedIps = owner.allowedIps.filter((o) => prefixKey(o) !== k);
  device.owners.set(k, peer);
  peer.allowedIps.push(ip);
}

function dropAllowedIps(device: Device, peer: Peer): void {
  for (const ip of peer.allowedIps) device.owners.delete(prefixKey(ip));
  peer.allowedIps = [];
}

const allowedIpAttrs = (ip: AllowedIp): Buffer[] => [nla(1, le16(ip.family)), nla(2, ip.addr), nla(3, Buffer.from([ip.cidr]))];

function fullPeerAttrs(p: Peer): Buffer[] {
  const handshake = Buffer.concat([le64(p.handshakeSec), le64(0n)]);
  const attrs = [nla(1, p.publicKey), nla(2, p.psk), nla(6, handshake), nla(5, le16(p.keepalive)), nla(7, le64(p.rx)), nla(8, le64(p.tx)), nla(10, le32(1))];
  if (p.endpoint) attrs.push(nla(4, p.endpoint.subarray(0, p.endpoint.readUInt16LE(0) === AF4 ? 16 : 28)));
  return attrs;
}

/**
 * The peers as the kernel's dump pages them, at most `items` allowed IPs per message: a peer cut short goes on in
 * the next message as its public key and the rest of its allowed IPs only.
 */
function splitPeers(peers: readonly Peer[], items: number): Buffer[][][] {
  const pages: Buffer[][][] = [[]];
  let room = items;
  const page = (): Buffer[][] => pages[pages.length - 1]!;
  for (const p of peers) {
    let head = fullPeerAttrs(p);
    let ips = p.allowedIps;
    do {
      if (room === 0) {
        pages.push([]);
        room = items;
      }
      const take = ips.slice(0, Math.max(room, 1));
      page().push([...head, ...(take.length > 0 ? [nest(9, take.map((ip, i) => nest(i, allowedIpAttrs(ip))))] : [])]);
      room -= Math.max(take.length, 1);
      ips = ips.slice(take.length);
      head = [nla(1, p.publicKey)];
    } while (ips.length > 0);
  }
  return pages;
}

function ipText(family: number, addr: Buffer): string {
  if (family === AF4) return [...addr].join('.');
  const groups = Array.from({ length: 8 }, (_, i) => addr.readUInt16BE(i * 2).toString(16));
  return formatIp(parseIp(groups.join(':'))!);
}

function peerView(p: Peer): FakePeerView {
  const e = p.endpoint;
  const endpoint = e && (e.readUInt16LE(0) === AF4 ? `${ipText(AF4, e.subarray(4, 8))}:${e.readUInt16BE(2)}` : `[${ipText(AF6, e.subarray(8, 24))}]:${e.readUInt16BE(2)}`);
  return {
    publicKey: p.publicKey.toString('base64'),
    presharedKey: p.psk.equals(Buffer.alloc(32)) ? undefined : p.psk.toString('base64'),
    endpoint,
    keepalive: p.keepalive,
    allowedIps: p.allowedIps.map((ip) => `${ipText(ip.family, ip.addr)}/${ip.cidr}`),
  };
}

/** A peer as flannel writes one per node (an IPv4 and an IPv6 subnet, an endpoint, a keepalive); distinct for i < 1024. */
export function nodePeerConfig(i: number): WgPeerConfig {
  const key = Buffer.alloc(32);
  key.writeUInt32BE(i + 1);
  return {
    publicKey: key.toString('base64'),
    endpoint: { ip: parseIp(`198.51.100.${(i % 250) + 1}`)!, port: 51820 },
    persistentKeepalive: 25,
    allowedIps: [parseCidr(`10.244.${i >> 2}.${(i & 3) * 64}/26`)!, parseCidr(`2001:db8:${(i + 1).toString(16)}::/64`)!],
  };
}
