/**
 * The rtnetlink message builders against what iproute2 sends for the same operation. Each fixture in
 * test/fixtures/netlink is one request `ip` or `bridge` made in a throwaway namespace, captured with strace and
 * accepted by the kernel (capture.sh there says how, and captures them all again); the device indexes below are
 * the ones its headers list.
 *
 * A builder is called with ip's sequence number and both leave nlmsg_pid 0 (the kernel fills in the sender), so
 * the header needs no normalising beyond the flags a case declares. Every case lists how the builder's message
 * differs from ip's and why that does not matter; with nothing listed the bytes must be identical. Where only
 * attribute order or an attribute one side adds differs, the comparison is of decoded attributes: the kernel
 * parses attributes by type, so their order carries nothing.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO, NLMSG_HDRLEN, NLM_F_ACK, RTA_TABLE, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK,
  RTM_NEWROUTE, RT_TABLE_MAIN,
} from '../../../../backends/datapath/netlink/constants.js';
import { addAddress, deleteAddress, dumpAddresses } from '../../../../backends/datapath/netlink/address.js';
import { createVxlan, deleteLink, dumpLinks, getLinkByName, setLinkMtuUp, setLinkUp } from '../../../../backends/datapath/netlink/link.js';
import { decodeAttrs, decodeMessages, u32, type RawMessage } from '../../../../backends/datapath/netlink/message.js';
import {
  deleteFdb, deleteNeigh, dumpNeighbours, replaceFdb, replaceNeigh,
} from '../../../../backends/datapath/netlink/neighbour.js';
import {
  addBlackholeRoute, createRoute, deleteRoute, dumpRoutes, replaceRoute,
} from '../../../../backends/datapath/netlink/route.js';
import type { MessageBuilder } from '../../../../backends/datapath/netlink/socket.js';
import { parseIp, type IpAddress } from '../../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';

const FIXTURES = new URL('../../../fixtures/netlink/', import.meta.url);

// Device indexes and addresses as in the fixtures' commands.
const NL0 = 3;
const FLANNEL_1 = 4;
const FLANNEL_V6_1 = 5;
const MAC = '02:00:5e:00:53:01';
const PEER_MAC = '02:00:5e:00:53:02';
const IFLA_EXT_MASK = 29;
const RTEXT_FILTER_VF = 1;

const ip = (text: string): IpAddress => parseIp(text) as IpAddress;
const cidr = (text: string): IpNet => parseCidr(text) as IpNet;

type Difference =
  /** A header flag only one side sets. */
  | { readonly kind: 'flag'; readonly side: 'ip' | 'ours'; readonly flag: number; readonly why: string }
  /** One byte of the fixed family struct (ifinfomsg, ifaddrmsg, rtmsg, ndmsg). */
  | { readonly kind: 'fixed'; readonly offset: number; readonly ip: number; readonly ours: number; readonly why: string }
  /**
   * An attribute, by its types from the top level down, that only one side sends (the other's value absent) or
   * that the two send with different payloads.
   */
  | { readonly kind: 'attr'; readonly path: readonly number[]; readonly ip?: Buffer; readonly ours?: Buffer; readonly why: string }
  /** The same attributes in another order. */
  | { readonly kind: 'order'; readonly why: string };

interface Case {
  readonly fixture: string;
  readonly build: MessageBuilder;
  readonly differences?: readonly Difference[];
}

const BATCHED: Difference = {
  kind: 'flag',
  side: 'ip',
  flag: NLM_F_ACK,
  why: 'entries go to the kernel in a batch closed by one acked NLMSG_NOOP; the kernel reports failures anyway, and an ack per success would only fill the receive buffer',
};
const TABLE_ATTR: Difference = {
  kind: 'attr',
  path: [RTA_TABLE],
  ours: u32(RT_TABLE_MAIN),
  why: 'repeats rtm_table (main): the kernel prefers the attribute to the byte, and iproute2 sends it only for tables above 255',
};
const LINK_FAMILY: Difference = {
  kind: 'fixed',
  offset: 0,
  ip: 17,
  ours: 0,
  why: 'ip asks as AF_PACKET, which has no link handler, so the kernel falls back to the AF_UNSPEC one ours asks directly',
};
const EXT_MASK: Difference = {
  kind: 'attr',
  path: [IFLA_EXT_MASK],
  ip: u32(RTEXT_FILTER_VF),
  why: 'asks for SR-IOV virtual function details, which nothing here reads',
};
const FDB_NOARP = (why: string): Difference => ({ kind: 'fixed', offset: 8, ip: 0xc0, ours: 0x80, why });
const FDB_STATE =
  'bridge adds NUD_NOARP to NUD_PERMANENT; the vxlan driver needs PERMANENT (or REACHABLE) and treats PERMANENT alone the same: never aged out, never moved by snooping';
const VXLAN_ORDER: Difference = {
  kind: 'order',
  why: 'ip puts IFLA_MTU and IFLA_ADDRESS before IFLA_IFNAME and IFLA_VXLAN_LINK before IFLA_VXLAN_ID',
};
const KIND_NUL: Difference = {
  kind: 'attr',
  path: [IFLA_LINKINFO, IFLA_INFO_KIND],
  ip: Buffer.from('vxlan'),
  ours: Buffer.from('vxlan\0'),
  why: 'ip leaves out the terminating NUL; the kernel reads the kind as a string up to the NUL or the end, so both name vxlan',
};

const route4 = { kind: 'route', dst: cidr('10.244.1.0/24'), via: ip('10.244.1.0'), linkIndex: FLANNEL_1, onlink: true } as const;
const route6 = { kind: 'route', dst: cidr('2001:db8:a:1::/64'), via: ip('2001:db8:a:1::'), linkIndex: FLANNEL_V6_1, onlink: true } as const;
const neigh4 = { kind: 'neigh', linkIndex: FLANNEL_1, ip: ip('10.244.1.0'), mac: PEER_MAC } as const;
const neigh6 = { kind: 'neigh', linkIndex: FLANNEL_V6_1, ip: ip('2001:db8:a:1::'), mac: PEER_MAC } as const;
const fdb4 = { kind: 'fdb', linkIndex: FLANNEL_1, mac: PEER_MAC, dst: ip('192.0.2.2') } as const;
const fdb6 = { kind: 'fdb', linkIndex: FLANNEL_V6_1, mac: PEER_MAC, dst: ip('2001:db8:1::2') } as const;
const address4 = { linkIndex: FLANNEL_1, address: ip('10.244.0.0'), cidr: cidr('10.244.0.0/32') };
const address6 = { linkIndex: FLANNEL_V6_1, address: ip('2001:db8:a::'), cidr: cidr('2001:db8:a::/128') };
const vxlan = { vni: 1, underlayIndex: NL0, learning: false, gbp: false, mac: MAC };

const CASES: readonly Case[] = [
  // Links.
  {
    fixture: 'link-create-vxlan4',
    build: createVxlan({ ...vxlan, name: 'flannel.1', port: 8472, local: ip('192.0.2.1'), mtu: 1450 }),
    differences: [VXLAN_ORDER, KIND_NUL],
  },
  {
    fixture: 'link-create-vxlan6',
    build: createVxlan({ ...vxlan, name: 'flannel-v6.1', port: 4789, local: ip('2001:db8:1::1'), mtu: 1430 }),
    differences: [VXLAN_ORDER, KIND_NUL],
  },
  { fixture: 'link-set-mtu-up', build: setLinkMtuUp(FLANNEL_1, 1400) },
  { fixture: 'link-set-up', build: setLinkUp(FLANNEL_V6_1) },
  { fixture: 'link-delete', build: deleteLink(FLANNEL_V6_1) },
  {
    fixture: 'link-get-by-name',
    build: getLinkByName('flannel.1'),
    differences: [
      { kind: 'flag', side: 'ours', flag: NLM_F_ACK, why: 'a single request ends on its ack, which follows the reply' },
      LINK_FAMILY,
      EXT_MASK,
    ],
  },
  { fixture: 'link-dump', build: dumpLinks(), differences: [LINK_FAMILY, EXT_MASK] },
  // Addresses: ours replaces (ip addr replace), so re-adding the lease's address after a restart is no error.
  { fixture: 'addr-replace-v4', build: addAddress(address4) },
  { fixture: 'addr-replace-v6', build: addAddress(address6) },
  { fixture: 'addr-delete-v4', build: deleteAddress(address4) },
  { fixture: 'addr-delete-v6', build: deleteAddress(address6) },
  { fixture: 'addr-dump', build: dumpAddresses() },
  // Neighbours and FDB entries: batched.
  { fixture: 'neigh-replace-v4', build: replaceNeigh(neigh4), differences: [BATCHED] },
  { fixture: 'neigh-replace-v6', build: replaceNeigh(neigh6), differences: [BATCHED] },
  { fixture: 'neigh-delete-v4', build: deleteNeigh(neigh4), differences: [BATCHED] },
  { fixture: 'neigh-dump-v4', build: dumpNeighbours(4) },
  { fixture: 'fdb-replace-v4', build: replaceFdb(fdb4), differences: [BATCHED, FDB_NOARP(FDB_STATE)] },
  { fixture: 'fdb-replace-v6', build: replaceFdb(fdb6), differences: [BATCHED, FDB_NOARP(FDB_STATE)] },
  {
    fixture: 'fdb-delete-v4',
    build: deleteFdb(fdb4),
    differences: [BATCHED, FDB_NOARP('the vxlan driver matches a deletion by MAC and dst, not state')],
  },
  { fixture: 'fdb-dump', build: dumpNeighbours('bridge') },
  // Routes: batched, except the blackhole route, which is one request on its own.
  { fixture: 'route-add-v4', build: createRoute(route4), differences: [BATCHED, TABLE_ATTR] },
  { fixture: 'route-replace-v4', build: replaceRoute(route4), differences: [BATCHED, TABLE_ATTR] },
  { fixture: 'route-replace-v6', build: replaceRoute(route6), differences: [BATCHED, TABLE_ATTR] },
  {
    fixture: 'route-delete-v4',
    build: deleteRoute(route4),
    differences: [
      BATCHED,
      TABLE_ATTR,
      { kind: 'fixed', offset: 7, ip: 0, ours: 1, why: 'RTN_UNICAST where ip leaves any type: a blackhole or other route at the destination is not deleted' },
    ],
  },
  {
    fixture: 'route-delete-v6',
    build: deleteRoute(route6),
    differences: [
      BATCHED,
      TABLE_ATTR,
      { kind: 'fixed', offset: 6, ip: 0, ours: 255, why: 'IPv6 routes have no scope: the kernel ignores rtm_scope, iproute2 sends universe' },
      { kind: 'fixed', offset: 7, ip: 0, ours: 1, why: 'IPv6 turns only local and reject types into route flags, so unicast and any type ask for the same deletion' },
    ],
  },
  { fixture: 'route-blackhole-v4', build: addBlackholeRoute(cidr('10.244.0.0/24')), differences: [TABLE_ATTR] },
  { fixture: 'route-blackhole-v6', build: addBlackholeRoute(cidr('2001:db8:a::/64')), differences: [TABLE_ATTR] },
  {
    fixture: 'route-dump-v4',
    build: dumpRoutes(4),
    differences: [
      {
        kind: 'attr',
        path: [RTA_TABLE],
        ip: u32(RT_TABLE_MAIN),
        why: 'a main-table filter the kernel applies only on sockets with strict checking; decodeRoute keeps main-table routes itself',
      },
      { kind: 'fixed', offset: 4, ip: 0, ours: RT_TABLE_MAIN, why: 'our socket has no strict checking, so the kernel ignores rtm_table in a dump' },
    ],
  },
];

/** The message in a fixture: its hex, comment lines aside. */
function fixture(name: string): Buffer {
  const text = readFileSync(new URL(`${name}.hex`, FIXTURES), 'utf8');
  return Buffer.from(text.split('\n').filter((line) => !line.startsWith('#')).join(''), 'hex');
}

function onlyMessage(buf: Buffer): RawMessage {
  const messages = decodeMessages(buf);
  expect(messages).toHaveLength(1);
  expect(messages[0]?.payload.length).toBe(buf.length - NLMSG_HDRLEN);
  return messages[0] as RawMessage;
}

/** Length of the family struct before the attributes, by message type. */
function fixedLength(type: number): number {
  if (type < RTM_NEWADDR) return 16;
  if (type < RTM_NEWROUTE) return 8;
  return 12;
}

/** Which attributes hold nested ones, by type, level by level: only a link's vxlan data here. */
type Nesting = ReadonlyMap<number, Nesting>;
const NO_NESTING: Nesting = new Map();
const LINK_NESTING: Nesting = new Map([[IFLA_LINKINFO, new Map([[IFLA_INFO_DATA, NO_NESTING]])]]);
const nestingOf = (type: number): Nesting => (type >= RTM_NEWLINK && type <= RTM_GETLINK ? LINK_NESTING : NO_NESTING);

/** Attributes by type, payloads as hex, nested levels decoded: order no longer counts. */
interface AttrTree {
  [type: number]: string | AttrTree;
}
function attrTree(buf: Buffer, nesting: Nesting): AttrTree {
  const tree: AttrTree = {};
  for (const [type, value] of decodeAttrs(buf)) {
    const inner = nesting.get(type);
    tree[type] = inner ? attrTree(value, inner) : value.toString('hex');
  }
  return tree;
}

interface Decoded {
  readonly type: number;
  readonly flags: number;
  readonly fixed: string;
  readonly attrs: AttrTree;
}
function decode(msg: RawMessage): Decoded {
  const fixedLen = fixedLength(msg.type);
  return {
    type: msg.type,
    flags: msg.flags,
    fixed: msg.payload.subarray(0, fixedLen).toString('hex'),
    attrs: attrTree(msg.payload.subarray(fixedLen), nestingOf(msg.type)),
  };
}

/** The level of the tree holding the attribute at `path`, and that attribute's type. */
function levelOf(tree: AttrTree, path: readonly number[]): [AttrTree, number] {
  let level = tree;
  for (const type of path.slice(0, -1)) level = level[type] as AttrTree;
  return [level, path.at(-1) as number];
}

/**
 * ip's message turned into what the builder should send, after checking that every declared difference is
 * really there on ip's side.
 */
function expectedFrom(ipMsg: RawMessage, differences: readonly Difference[]): Decoded {
  const decoded = decode(ipMsg);
  let flags = decoded.flags;
  const fixed = Buffer.from(decoded.fixed, 'hex');
  const attrs = structuredClone(decoded.attrs);
  for (const d of differences) {
    if (d.kind === 'flag') {
      expect(flags & d.flag, d.why).toBe(d.side === 'ip' ? d.flag : 0);
      flags ^= d.flag;
    } else if (d.kind === 'fixed') {
      expect(fixed[d.offset], d.why).toBe(d.ip);
      fixed[d.offset] = d.ours;
    } else if (d.kind === 'attr') {
      const [level, type] = levelOf(attrs, d.path);
      expect(level[type], d.why).toBe(d.ip?.toString('hex'));
      if (d.ours) level[type] = d.ours.toString('hex');
      else delete level[type];
    }
  }
  return { ...decoded, flags, fixed: fixed.toString('hex'), attrs };
}

/** Byte for byte once the header flags and fixed-struct bytes the case declares are carried over. */
function expectSameBytes(ipBuf: Buffer, ours: Buffer, expected: Decoded): void {
  const want = Buffer.from(ipBuf);
  want.writeUInt16LE(expected.flags, 6);
  Buffer.from(expected.fixed, 'hex').copy(want, NLMSG_HDRLEN);
  expect(ours.toString('hex')).toBe(want.toString('hex'));
}

describe('netlink message builders against iproute2 6.1', () => {
  it.each(CASES.map((c) => [c.fixture, c] as const))('%s', (_name, c) => {
    const ipBuf = fixture(c.fixture);
    const ipMsg = onlyMessage(ipBuf);
    const ours = c.build(ipMsg.seq);
    const differences = c.differences ?? [];
    const expected = expectedFrom(ipMsg, differences);
    expect(decode(onlyMessage(ours))).toEqual(expected);
    if (!differences.some((d) => d.kind === 'attr' || d.kind === 'order')) expectSameBytes(ipBuf, ours, expected);
  });

  it('covers every captured fixture', () => {
    const script = readFileSync(new URL('capture.sh', FIXTURES), 'utf8');
    const captured = new Set(Array.from(script.matchAll(/^capture (\S+) /gm), (m) => m[1]));
    expect(new Set(CASES.map((c) => c.fixture))).toEqual(captured);
  });
});
