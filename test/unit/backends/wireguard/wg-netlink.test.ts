/**
 * The wireguard generic netlink codec: a small SET byte for byte against a hand-written layout, sets split within
 * their budget, what a set writes read back through the GET decoder (also when split over messages as the kernel
 * splits dumps), and malformed replies refused with where and what, never a key.
 */
import { describe, expect, it } from 'vitest';
import { parseIp } from '../../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../../flanneld/ip/cidr.js';
import { NLM_F_ACK, NLM_F_DUMP, NLM_F_MULTI, NLM_F_REQUEST } from '../../../../backends/datapath/netlink/constants.js';
import { encodeGenl } from '../../../../backends/datapath/netlink/genetlink.js';
import { decodeAttrs, decodeMessages, type Attr, type RawMessage } from '../../../../backends/datapath/netlink/message.js';
import type { WgEndpoint } from '../../../../backends/wireguard/uapi.js';
import { nodePeerConfig } from '../../../helpers/fake-wg-genl.js';
import { thrownFlannelError } from '../../../helpers/thrown-config-error.js';
import {
  NLA_F_NESTED, WG_CMD_GET_DEVICE, WGDEVICE_A_IFNAME, WGDEVICE_A_LISTEN_PORT, WGDEVICE_A_PEERS, WGDEVICE_A_PRIVATE_KEY, WGPEER_A_LAST_HANDSHAKE_TIME,
  WGPEER_A_PUBLIC_KEY, WGPEER_A_RX_BYTES, WGPEER_A_TX_BYTES, decodeDevice, getDevice, planSet, setDevice, type WgSetRequest,
} from '../../../../backends/wireguard/wg-netlink.js';

const FAMILY = 0x1f;
const key = (byte: number): string => Buffer.alloc(32, byte).toString('base64');
const PRIVATE = key(0x11);
const cidr = (text: string): IpNet => parseCidr(text)!;
const endpoint = (ip: string, port: number): WgEndpoint => ({ ip: parseIp(ip)!, port });
const iface = { privateKey: PRIVATE, listenPort: 51820 };

/** Hex with spaces, newlines and `#` comments, as the fixtures below are written. */
const hexOf = (text: string): Buffer => Buffer.from(text.replace(/#.*$/gm, '').replace(/\s+/g, ''), 'hex');

/** The planned SET messages turned into the GET replies a kernel holding that state would send. */
function asGetReplies(plan: readonly Attr[][]): RawMessage[] {
  return plan.map((attrs) => decodeMessages(encodeGenl(FAMILY, NLM_F_MULTI, 7, WG_CMD_GET_DEVICE, 1, attrs))[0]!);
}

describe('planSet / setDevice', () => {
  it('lays out a small SET as linux/wireguard.h says', () => {
    const req: WgSetRequest = {
      ifname: 'wg0',
      iface,
      remove: [key(0x33)],
      write: [{ publicKey: key(0x22), endpoint: endpoint('192.0.2.1', 51820), allowedIps: [cidr('10.244.1.0/24')] }],
    };
    const plan = planSet(req);
    expect(plan).toHaveLength(1);
    const expected = hexOf(`
      0c010000 1f00 0500 01000000 00000000  # nlmsghdr: len 268, type = family 0x1f, REQUEST|ACK, seq 1, pid 0
      01 01 0000                            # genlmsghdr: WG_CMD_SET_DEVICE, version 1
      0800 0200 77673000                    # WGDEVICE_A_IFNAME "wg0\\0"
      2400 0300 ${'11'.repeat(32)}          # WGDEVICE_A_PRIVATE_KEY, 32 bytes
      0600 0600 6cca 0000                   # WGDEVICE_A_LISTEN_PORT 51820 (host order), 2 bytes of padding
      c400 0880                             # WGDEVICE_A_PEERS | NLA_F_NESTED, 196 bytes
        3000 0080                           #   peer 0 (nested): the removal, 48 bytes
          2400 0100 ${'33'.repeat(32)}      #     WGPEER_A_PUBLIC_KEY
          0800 0300 01000000                #     WGPEER_A_FLAGS = REMOVE_ME
        9000 0180                           #   peer 1 (nested): the written peer, 144 bytes
          2400 0100 ${'22'.repeat(32)}      #     WGPEER_A_PUBLIC_KEY
          2400 0200 ${'00'.repeat(32)}      #     WGPEER_A_PRESHARED_KEY: none is 32 zero bytes
          0800 0300 02000000                #     WGPEER_A_FLAGS = REPLACE_ALLOWEDIPS
          1400 0400                         #     WGPEER_A_ENDPOINT, a 16-byte sockaddr_in:
            0200 ca6c c0000201 0000000000000000 #   AF_INET (host order), port 51820 (network order), 192.0.2.1
          0600 0500 0000 0000               #     WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL 0, padded
          2000 0980                         #     WGPEER_A_ALLOWEDIPS | NLA_F_NESTED, 32 bytes
            1c00 0080                       #       allowed IP 0 (nested), 28 bytes
              0600 0100 0200 0000           #         WGALLOWEDIP_A_FAMILY AF_INET, padded
              0800 0200 0af40100            #         WGALLOWEDIP_A_IPADDR 10.244.1.0
              0500 0300 18 000000           #         WGALLOWEDIP_A_CIDR_MASK 24, padded
    `);
    expect(setDevice(FAMILY, plan[0]!)(1).toString('hex')).toBe(expected.toString('hex'));
  });

  it('writes an IPv6 endpoint as a 28-byte sockaddr_in6 and a keepalive and preshared key when given', () => {
    const [attrs] = planSet({ ifname: 'wg0', iface, remove: [], write: [{ publicKey: key(0x22), presharedKey: key(0x44), persistentKeepalive: 25, endpoint: endpoint('2001:db8::1', 51821), allowedIps: [] }] });
    const peer = decodeAttrs(decodeAttrs(decodeAttrs(setDevice(FAMILY, attrs!)(1).subarray(20)).get(WGDEVICE_A_PEERS)!).get(0)!);
    expect(peer.get(4)!.toString('hex')).toBe(`0a00ca6d00000000${'20010db8000000000000000000000001'}00000000`);
    expect(peer.get(2)!.toString('hex')).toBe('44'.repeat(32));
    expect(peer.get(5)!.readUInt16LE(0)).toBe(25);
    expect(peer.has(9)).toBe(false);
  });

  it('sends only the interface config when there is no change', () => {
    const plan = planSet({ ifname: 'flannel-wg', iface, remove: [], write: [] });
    expect(plan).toEqual([[expect.objectContaining({ type: WGDEVICE_A_IFNAME }), expect.objectContaining({ type: WGDEVICE_A_PRIVATE_KEY }), expect.objectContaining({ type: WGDEVICE_A_LISTEN_PORT })]]);
  });

  it('splits a large set within the budget: the interface config in the first message only, removals first', () => {
    const write = Array.from({ length: 1000 }, (_, i) => nodePeerConfig(i));
    const remove = [key(0x71), key(0x72)];
    const plan = planSet({ ifname: 'flannel-wg', iface, remove, write });
    expect(plan.length).toBeGreaterThan(4);
    const messages = plan.map((attrs) => setDevice(FAMILY, attrs)(1));
    for (const msg of messages) expect(msg.length).toBeLessThanOrEqual(32 * 1024);
    const levels = messages.map((msg) => decodeAttrs(msg.subarray(20)));
    expect(levels.map((l) => l.has(WGDEVICE_A_PRIVATE_KEY))).toEqual(plan.map((_, i) => i === 0));
    expect(levels.every((l) => l.get(WGDEVICE_A_IFNAME)?.toString() === 'flannel-wg\0')).toBe(true);
    const peersPerMessage = levels.map((l) => [...decodeAttrs(l.get(WGDEVICE_A_PEERS)!).keys()]);
    // Elements are numbered from 0 in every message, and no peer is cut in two.
    for (const keys of peersPerMessage) expect(keys).toEqual(keys.map((_, i) => i));
    expect(peersPerMessage.flat()).toHaveLength(1002);
    const firstPeers = decodeAttrs(levels[0]!.get(WGDEVICE_A_PEERS)!);
    expect(decodeAttrs(firstPeers.get(0)!).get(WGPEER_A_PUBLIC_KEY)!.toString('base64')).toBe(remove[0]);
  });

  it('carries a peer with more allowed IPs than one message holds over several, without replacing them twice', () => {
    const allowedIps = Array.from({ length: 3000 }, (_, i) => cidr(`10.${(i >> 8) & 255}.${i & 255}.0/24`));
    const plan = planSet({ ifname: 'wg0', iface, remove: [], write: [{ publicKey: key(0x22), allowedIps }] });
    expect(plan.length).toBeGreaterThan(2);
    const state = decodeDevice(asGetReplies(plan), 'get');
    expect(state.peers).toHaveLength(1);
    expect(state.peers[0]!.allowedIps).toEqual(allowedIps);
    const flagsOf = (attrs: Attr[]) => decodeAttrs(decodeAttrs(setDevice(FAMILY, attrs)(1).subarray(20)).get(WGDEVICE_A_PEERS)!).get(0)!;
    expect(decodeAttrs(flagsOf(plan[0]!)).get(3)?.readUInt32LE(0)).toBe(2);
    expect(decodeAttrs(flagsOf(plan[1]!)).has(3)).toBe(false);
  });

  it('refuses bad keys and out-of-range numbers without showing the key', () => {
    const bad = 'not-a-key';
    const e1 = thrownFlannelError(() => planSet({ ifname: 'wg0', iface, remove: [bad], write: [] }));
    expect(e1.code).toBe('ERR_CONFIG_INVALID');
    expect(e1.message).not.toContain(bad);
    expect(thrownFlannelError(() => planSet({ ifname: 'wg0', iface: { ...iface, listenPort: 70000 }, remove: [], write: [] })).message).toMatch(/listen port must be an integer in 0\.\.65535 \(got 70000\)/);
    expect(thrownFlannelError(() => planSet({ ifname: 'wg0', iface, remove: [], write: [{ publicKey: key(2), persistentKeepalive: -1, allowedIps: [] }] })).message).toMatch(/persistent keepalive/);
  });

  it('asks for the device as a dump by name', () => {
    const [msg] = decodeMessages(getDevice(FAMILY, 'flannel-wg')(9));
    expect(msg).toMatchObject({ type: FAMILY, flags: NLM_F_REQUEST | NLM_F_DUMP, seq: 9 });
    expect(msg!.payload.subarray(0, 2)).toEqual(Buffer.from([WG_CMD_GET_DEVICE, 1]));
    expect(decodeAttrs(msg!.payload.subarray(4)).get(WGDEVICE_A_IFNAME)?.toString()).toBe('flannel-wg\0');
    expect(decodeMessages(setDevice(FAMILY, [])(1))[0]!.flags).toBe(NLM_F_REQUEST | NLM_F_ACK);
  });
});

describe('decodeDevice', () => {
  it('reads back what a set wrote, whole or split over messages like a kernel dump', () => {
    const write = [
      { publicKey: key(0x22), presharedKey: key(0x44), endpoint: endpoint('2001:db8::7', 51821), persistentKeepalive: 25, allowedIps: [cidr('10.244.2.0/24'), cidr('2001:db8:2::/64')] },
      { publicKey: key(0x23), allowedIps: [cidr('10.244.3.0/24')] },
      ...Array.from({ length: 300 }, (_, i) => nodePeerConfig(i)),
    ];
    const expected = write.map((p) => ({
      publicKey: p.publicKey, presharedKey: p.presharedKey, endpoint: p.endpoint, persistentKeepalive: p.persistentKeepalive ?? 0, allowedIps: p.allowedIps,
      lastHandshakeMs: undefined, rxBytes: 0, txBytes: 0,
    }));
    for (const budget of [32 * 1024, 1024]) {
      const plan = planSet({ ifname: 'wg0', iface, remove: [], write }, budget);
      const state = decodeDevice(asGetReplies(plan), 'get');
      expect(state).toEqual({ privateKey: PRIVATE, listenPort: 51820, fwmark: 0, peers: expected });
    }
  });

  it('reads handshake time and counters', () => {
    const handshake = Buffer.alloc(16);
    handshake.writeBigInt64LE(1_700_000_000n, 0);
    handshake.writeBigInt64LE(250_000_000n, 8);
    const counter = (n: bigint) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(n);
      return b;
    };
    const peer: Attr[] = [
      { type: WGPEER_A_PUBLIC_KEY, value: Buffer.alloc(32, 0x22) },
      { type: WGPEER_A_LAST_HANDSHAKE_TIME, value: handshake },
      { type: WGPEER_A_RX_BYTES, value: counter(1234n) },
      { type: WGPEER_A_TX_BYTES, value: counter(5678n) },
    ];
    const msg = decodeMessages(encodeGenl(FAMILY, NLM_F_MULTI, 1, WG_CMD_GET_DEVICE, 1, [{ type: WGDEVICE_A_PEERS | NLA_F_NESTED, value: [{ type: NLA_F_NESTED, value: peer }] }]))[0]!;
    const state = decodeDevice([msg], 'get');
    expect(state).toMatchObject({ privateKey: undefined, listenPort: undefined });
    expect(state.peers[0]).toMatchObject({ lastHandshakeMs: 1_700_000_000_250, rxBytes: 1234, txBytes: 5678, persistentKeepalive: 0 });
  });

  const SECRET = Buffer.alloc(32, 0x5a);
  const peerMsg = (peerAttrs: Attr[]): RawMessage =>
    decodeMessages(encodeGenl(FAMILY, NLM_F_MULTI, 1, WG_CMD_GET_DEVICE, 1, [{ type: WGDEVICE_A_PEERS | NLA_F_NESTED, value: [{ type: NLA_F_NESTED, value: peerAttrs }] }]))[0]!;
  const withIp = (ipAttrs: Attr[]): RawMessage =>
    peerMsg([{ type: WGPEER_A_PUBLIC_KEY, value: SECRET }, { type: 9 | NLA_F_NESTED, value: [{ type: NLA_F_NESTED, value: ipAttrs }] }]);
  const u16 = (v: number) => Buffer.from([v & 255, v >> 8]);

  it.each([
    ['a short genl header', { type: FAMILY, flags: NLM_F_MULTI, seq: 1, pid: 0, payload: Buffer.from([0, 1]) }, /message 1\): 2 bytes is too short/],
    ['another command', decodeMessages(encodeGenl(FAMILY, NLM_F_MULTI, 1, 1, 1, []))[0]!, /command 1 is not WG_CMD_GET_DEVICE/],
    ['an attribute running past the end', (() => {
      const m = decodeMessages(encodeGenl(FAMILY, NLM_F_MULTI, 1, WG_CMD_GET_DEVICE, 1, [{ type: WGDEVICE_A_LISTEN_PORT, value: u16(1) }]))[0]!;
      m.payload.writeUInt16LE(64, 4);
      return m;
    })(), /attribute at offset 0 has length 64, 8 bytes left/],
    ['a 31-byte private key', decodeMessages(encodeGenl(FAMILY, NLM_F_MULTI, 1, 0, 1, [{ type: WGDEVICE_A_PRIVATE_KEY, value: SECRET.subarray(1) }]))[0]!, /private key is 31 bytes, not 32/],
    ['a peer without a public key', peerMsg([{ type: WGPEER_A_RX_BYTES, value: Buffer.alloc(8) }]), /peer 1\): public key is missing/],
    ['a 4-byte counter', peerMsg([{ type: WGPEER_A_PUBLIC_KEY, value: SECRET }, { type: WGPEER_A_TX_BYTES, value: Buffer.alloc(4) }]), /tx bytes is 4 bytes, not 8/],
    ['an endpoint of family 7', peerMsg([{ type: WGPEER_A_PUBLIC_KEY, value: SECRET }, { type: 4, value: Buffer.concat([u16(7), Buffer.alloc(14)]) }]), /endpoint address family 7/],
    ['a short sockaddr_in6', peerMsg([{ type: WGPEER_A_PUBLIC_KEY, value: SECRET }, { type: 4, value: Buffer.concat([u16(10), Buffer.alloc(14)]) }]), /sockaddr_in6 endpoint is 16 bytes, not 28/],
    ['a nanosecond count of a second or more', peerMsg([{ type: WGPEER_A_PUBLIC_KEY, value: SECRET }, { type: WGPEER_A_LAST_HANDSHAKE_TIME, value: Buffer.from('0100000000000000' + '00ca9a3b00000000', 'hex') }]), /last handshake time 1s 1000000000ns is out of range/],
    ['an allowed IP of family 7', withIp([{ type: 1, value: u16(7) }, { type: 2, value: Buffer.alloc(4) }, { type: 3, value: Buffer.from([8]) }]), /peer 1, allowed IP 1\): family 7/],
    ['an IPv4 mask of 33', withIp([{ type: 1, value: u16(2) }, { type: 2, value: Buffer.alloc(4) }, { type: 3, value: Buffer.from([33]) }]), /cidr mask 33 is over 32 for IPv4/],
    ['an IPv6 mask of 129', withIp([{ type: 1, value: u16(10) }, { type: 2, value: Buffer.alloc(16) }, { type: 3, value: Buffer.from([129]) }]), /cidr mask 129 is over 128 for IPv6/],
    ['an IPv6 allowed IP of 4 bytes', withIp([{ type: 1, value: u16(10) }, { type: 2, value: Buffer.alloc(4) }, { type: 3, value: Buffer.from([8]) }]), /IPv6 address is 4 bytes, not 16/],
    ['an allowed IP without a mask', withIp([{ type: 1, value: u16(2) }, { type: 2, value: Buffer.alloc(4) }]), /cidr mask is missing/],
  ])('refuses %s as ERR_DEVICE saying where, never a key', (_, msg, reason) => {
    const err = thrownFlannelError(() => decodeDevice([msg], 'wireguard device wg0: get'));
    expect(err.code).toBe('ERR_DEVICE');
    expect(err.message).toMatch(/^wireguard device wg0: get: malformed reply \(message 1/);
    expect(err.message).toMatch(reason);
    expect(err.message).not.toContain(SECRET.toString('base64'));
    expect(err.message).not.toContain(SECRET.toString('hex'));
  });
});
