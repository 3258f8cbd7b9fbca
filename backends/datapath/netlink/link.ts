/** RTM_*LINK: ifinfomsg plus attributes, including the VXLAN IFLA_INFO_DATA block. */
import type { LinkInfo, VxlanLinkSpec } from '../datapath.js';
import { NetlinkRequestError, type RtnlSocket } from './socket.js';
import {
  AF_UNSPEC, IFF_UP, IFLA_ADDRESS, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_MTU,
  IFLA_VXLAN_GBP, IFLA_VXLAN_ID, IFLA_VXLAN_LEARNING, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6,
  IFLA_VXLAN_PORT, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, RTM_DELLINK, RTM_GETLINK,
  RTM_NEWLINK,
} from './constants.js';
import { ipBytes, ipFromBytes, macBytes, macFromBytes } from './family.js';
import { decodeAttrs, encodeMessage, flag, str, u16be, u32, u8, type Attr, type RawMessage } from './message.js';

function ifinfomsg(index: number, flags = 0, change = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(AF_UNSPEC, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags, 8);
  b.writeUInt32LE(change, 12);
  return b;
}

export const getLinkByName = (name: string) => (seq: number): Buffer =>
  encodeMessage(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, ifinfomsg(0), [{ type: IFLA_IFNAME, value: str(name) }]);

export const dumpLinks = () => (seq: number): Buffer =>
  encodeMessage(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, ifinfomsg(0), []);

export const deleteLink = (index: number) => (seq: number): Buffer =>
  encodeMessage(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, ifinfomsg(index), []);

export const setLinkUp = (index: number) => (seq: number): Buffer =>
  encodeMessage(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, ifinfomsg(index, IFF_UP, IFF_UP), []);

export const setLinkMtuUp = (index: number, mtu: number) => (seq: number): Buffer =>
  encodeMessage(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, ifinfomsg(index, IFF_UP, IFF_UP), [{ type: IFLA_MTU, value: u32(mtu) }]);

export const createVxlan = (spec: VxlanLinkSpec) => (seq: number): Buffer => {
  const data: Attr[] = [
    { type: IFLA_VXLAN_ID, value: u32(spec.vni) },
    { type: IFLA_VXLAN_LINK, value: u32(spec.underlayIndex) },
    { type: spec.local.family === 4 ? IFLA_VXLAN_LOCAL : IFLA_VXLAN_LOCAL6, value: ipBytes(spec.local) },
    { type: IFLA_VXLAN_LEARNING, value: u8(spec.learning ? 1 : 0) },
  ];
  if (spec.port !== 0) data.push({ type: IFLA_VXLAN_PORT, value: u16be(spec.port) });
  if (spec.gbp) data.push({ type: IFLA_VXLAN_GBP, value: flag() });
  return encodeMessage(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, ifinfomsg(0), [
    { type: IFLA_IFNAME, value: str(spec.name) },
    { type: IFLA_MTU, value: u32(spec.mtu) },
    { type: IFLA_ADDRESS, value: macBytes(spec.mac) },
    {
      type: IFLA_LINKINFO,
      value: [
        { type: IFLA_INFO_KIND, value: str('vxlan') },
        { type: IFLA_INFO_DATA, value: data },
      ],
    },
  ]);
};

export const WIREGUARD_KIND = 'wireguard';

/**
 * A `wireguard` link, down and with the kernel's default MTU: its owner sets both once the device is configured.
 * It has no IFLA_INFO_DATA; everything else about it is set over the wireguard generic netlink family.
 */
export const createWireguard = (name: string) => (seq: number): Buffer =>
  encodeMessage(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, ifinfomsg(0), [
    { type: IFLA_IFNAME, value: str(name) },
    { type: IFLA_LINKINFO, value: [{ type: IFLA_INFO_KIND, value: str(WIREGUARD_KIND) }] },
  ]);

/** The link named `name`, or undefined when there is none (the kernel answers ENODEV). */
export async function findLink(sock: RtnlSocket, name: string): Promise<LinkInfo | undefined> {
  try {
    const [msg] = await sock.request(getLinkByName(name), `get link ${name}`);
    return msg ? decodeLink(msg) : undefined;
  } catch (err) {
    if (err instanceof NetlinkRequestError && err.errno === 'ENODEV') return undefined;
    throw err;
  }
}

export function decodeLink(msg: RawMessage): LinkInfo | undefined {
  if (msg.type !== RTM_NEWLINK && msg.type !== RTM_DELLINK) return undefined;
  const index = msg.payload.readInt32LE(4);
  const flags = msg.payload.readUInt32LE(8);
  const attrs = decodeAttrs(msg.payload.subarray(16));
  const name = attrs.get(IFLA_IFNAME)?.toString().replace(/\0.*$/s, '') ?? '';
  const mac = attrs.get(IFLA_ADDRESS);
  const mtu = attrs.get(IFLA_MTU);
  const linkInfo = attrs.get(IFLA_LINKINFO);
  const info = linkInfo ? decodeAttrs(linkInfo) : undefined;
  const kind = info?.get(IFLA_INFO_KIND)?.toString().replace(/\0.*$/s, '');
  const data = kind === 'vxlan' && info?.get(IFLA_INFO_DATA) ? decodeAttrs(info.get(IFLA_INFO_DATA) as Buffer) : undefined;
  const local = data?.get(IFLA_VXLAN_LOCAL) ?? data?.get(IFLA_VXLAN_LOCAL6);
  const localIp = local ? ipFromBytes(local) : undefined;
  return {
    index,
    name,
    mtu: mtu ? mtu.readUInt32LE(0) : 0,
    mac: mac && mac.length === 6 ? macFromBytes(mac) : '',
    up: (flags & IFF_UP) !== 0,
    ...(kind ? { kind } : {}),
    ...(data
      ? {
          vxlan: {
            vni: data.get(IFLA_VXLAN_ID)?.readUInt32LE(0) ?? 0,
            port: data.get(IFLA_VXLAN_PORT)?.readUInt16BE(0) ?? 0,
            ...(localIp && localIp.value !== 0n ? { local: localIp } : {}),
            ...(data.get(IFLA_VXLAN_LINK) ? { underlayIndex: (data.get(IFLA_VXLAN_LINK) as Buffer).readUInt32LE(0) } : {}),
            learning: (data.get(IFLA_VXLAN_LEARNING)?.readUInt8(0) ?? 0) !== 0,
            gbp: data.has(IFLA_VXLAN_GBP),
          },
        }
      : {}),
  };
}
