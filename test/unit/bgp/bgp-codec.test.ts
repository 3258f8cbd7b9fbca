import { describe, expect, it } from 'vitest';
import { decodeOpen, encodeOpen, type OpenMessage } from '../../../flanneld/bgp/bgp-open.js';
import { encodeAnnouncement, encodeEndOfRib, encodePrefix, encodeWithdrawal, updateLengthProblem } from '../../../flanneld/bgp/bgp-update.js';
import {
  BgpFramer, BgpProtocolError, KEEPALIVE_MESSAGE, MSG_KEEPALIVE, MSG_OPEN, decodeNotification, describeNotification, encodeMessage,
  encodeNotification,
} from '../../../flanneld/bgp/bgp-wire.js';
import { parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';

const ip = (t: string): IpAddress => parseIp(t) as IpAddress;
const net = (t: string): IpNet => parseCidr(t) as IpNet;
const hex = (b: Buffer): string => b.toString('hex');
const MARKER = 'ff'.repeat(16);
const body = (msg: Buffer): string => hex(msg.subarray(19));

function thrown(fn: () => unknown): BgpProtocolError {
  try {
    fn();
  } catch (err) {
    if (err instanceof BgpProtocolError) return err;
    throw err;
  }
  throw new Error('did not throw');
}

describe('BGP framing', () => {
  it('frames a keepalive as marker, length 19 and type 4', () => {
    expect(hex(KEEPALIVE_MESSAGE)).toBe(`${MARKER}001304`);
  });

  it('splits a stream into messages whatever the chunking, and keeps a partial one for later', () => {
    const stream = Buffer.concat([KEEPALIVE_MESSAGE, encodeMessage(MSG_OPEN, Buffer.alloc(10, 1)), KEEPALIVE_MESSAGE]);
    const framer = new BgpFramer();
    const got = [...framer.push(stream.subarray(0, 7)), ...framer.push(stream.subarray(7, 30)), ...framer.push(stream.subarray(30))];
    expect(got.map((m) => [m.type, m.body.length])).toEqual([[MSG_KEEPALIVE, 0], [MSG_OPEN, 10], [MSG_KEEPALIVE, 0]]);
  });

  it.each([
    ['a bad marker', Buffer.from(`${'fe'.repeat(16)}001304`, 'hex'), '1/1'],
    ['an unknown type', Buffer.from(`${MARKER}001309`, 'hex'), '1/3'],
    ['a length above 4096', Buffer.from(`${MARKER}100104`, 'hex'), '1/2'],
    ['a keepalive with a body', Buffer.from(`${MARKER}001404ff`, 'hex'), '1/2'],
    ['an OPEN shorter than its fixed part', Buffer.from(`${MARKER}001501aaaa`, 'hex'), '1/2'],
  ])('refuses %s with NOTIFICATION %s', (_, bytes, code) => {
    const err = thrown(() => new BgpFramer().push(bytes));
    expect(`${err.code}/${err.subcode}`).toBe(code);
  });

  it('names notifications and round-trips them', () => {
    const msg = encodeNotification({ code: 6, subcode: 2, data: Buffer.alloc(0) });
    expect(hex(msg)).toBe(`${MARKER}0015030602`);
    const decoded = decodeNotification(msg.subarray(19));
    expect(describeNotification(decoded)).toBe('cease (6/2)');
  });
});

describe('OPEN', () => {
  const OURS: OpenMessage = {
    asn: 64512,
    holdTimeSec: 90,
    routerId: ip('192.0.2.1'),
    families: [4, 6],
    fourOctetAs: true,
    routeRefresh: true,
    gracefulRestart: { restartTimeSec: 120, restarting: true, families: [4, 6], preserved: [4, 6] },
  };

  it('encodes version, AS, hold time, id and the capabilities byte by byte', () => {
    expect(body(encodeOpen(OURS))).toBe(
      '04' + 'fc00' + '005a' + 'c0000201' + '22' + // version 4, AS 64512, hold 90, id 192.0.2.1, 34 bytes of parameters
        '02' + '20' + // one capabilities parameter of 32 bytes
        '0104' + '00010001' + '0104' + '00020001' + // multiprotocol IPv4 unicast, IPv6 unicast
        '0200' + // route refresh
        '400a' + '8078' + '00010180' + '00020180' + // graceful restart: R bit, 120 s; both families with F bit
        '4104' + '0000fc00', // 4-octet AS 64512
    );
  });

  it('sends AS_TRANS in the 2-byte field for a 32-bit AS', () => {
    const open = encodeOpen({ ...OURS, asn: 4_200_000_000 });
    expect(body(open).slice(2, 6)).toBe('5ba0');
    expect(decodeOpen(open.subarray(19)).asn).toBe(4_200_000_000);
  });

  it('decodes what it encodes', () => {
    expect(decodeOpen(encodeOpen(OURS).subarray(19))).toEqual(OURS);
  });

  it('reads a peer without capabilities as IPv4 unicast only, 2-byte AS', () => {
    const plain = Buffer.from('04' + 'fde8' + '00f0' + 'c00002fa' + '00', 'hex');
    expect(decodeOpen(plain)).toEqual({ asn: 65000, holdTimeSec: 240, routerId: ip('192.0.2.250'), families: [4], fourOctetAs: false, routeRefresh: false });
  });

  it('skips capabilities it does not know', () => {
    const unknown = Buffer.from('04' + 'fde8' + '00f0' + 'c00002fa' + '0a' + '0208' + '4600' + '0104' + '00020001', 'hex');
    expect(decodeOpen(unknown).families).toEqual([6]);
  });

  it.each([
    ['version 3', '03fde800f0c00002fa00', '2/1'],
    ['hold time 2', '04fde80002c00002fa00', '2/6'],
    ['router id 0', '04fde800f00000000000', '2/3'],
    ['AS 0', '04000000f0c00002fa00', '2/2'],
    ['a parameter overrunning the OPEN', '04fde800f0c00002fa030205', '2/0'],
    ['a capability overrunning its parameter', '04fde800f0c00002fa04020241', '2/0'],
  ])('refuses %s with NOTIFICATION %s', (_, bytes, code) => {
    const err = thrown(() => decodeOpen(Buffer.from(bytes, 'hex')));
    expect(`${err.code}/${err.subcode}`).toBe(code);
  });
});

describe('UPDATE', () => {
  it('encodes prefixes with only the bytes their length covers', () => {
    expect(hex(encodePrefix(net('10.244.5.0/24')))).toBe('180af405');
    expect(hex(encodePrefix(net('2001:db8:a:5::/64')))).toBe('4020010db8000a0005');
    expect(hex(encodePrefix(net('0.0.0.0/0')))).toBe('00');
  });

  it('announces an IPv4 prefix to an eBGP peer: ORIGIN IGP, our 4-byte AS, NEXT_HOP, the NLRI', () => {
    const msg = encodeAnnouncement({ prefix: net('10.244.5.0/24'), nextHop: ip('192.0.2.5') }, { localAs: 64512, ibgp: false, fourOctetAs: true });
    expect(body(msg)).toBe('0000' + '0014' + '40010100' + '400206' + '02010000fc00' + '400304c0000205' + '180af405');
  });

  it('announces to an iBGP peer with an empty AS path and LOCAL_PREF 100', () => {
    const msg = encodeAnnouncement({ prefix: net('10.244.5.0/24'), nextHop: ip('192.0.2.5') }, { localAs: 64512, ibgp: true, fourOctetAs: true });
    expect(body(msg)).toBe('0000' + '0015' + '40010100' + '400200' + '40050400000064' + '400304c0000205' + '180af405');
  });

  it('gives a 2-byte peer AS_TRANS plus AS4_PATH for a 32-bit AS', () => {
    const msg = encodeAnnouncement({ prefix: net('10.244.5.0/24'), nextHop: ip('192.0.2.5') }, { localAs: 4_200_000_000, ibgp: false, fourOctetAs: false });
    expect(body(msg)).toContain('400204' + '02015ba0');
    expect(body(msg)).toContain('c01106' + '0201fa56ea00');
  });

  it('announces an IPv6 prefix in MP_REACH_NLRI with the node address as next hop', () => {
    const msg = encodeAnnouncement({ prefix: net('2001:db8:a:5::/64'), nextHop: ip('2001:db8:2::5') }, { localAs: 64512, ibgp: false, fourOctetAs: true });
    expect(body(msg)).toBe(
      '0000' + '002e' + '40010100' + '400206' + '02010000fc00' +
        '800e1e' + '000201' + '10' + '20010db8000200000000000000000005' + '00' + '4020010db8000a0005',
    );
  });

  it('withdraws and marks the end of the RIB per family', () => {
    expect(body(encodeWithdrawal(net('10.244.5.0/24')))).toBe('0004180af405' + '0000');
    expect(body(encodeWithdrawal(net('2001:db8:a:5::/64')))).toBe('0000' + '000f' + '800f0c' + '000201' + '4020010db8000a0005');
    expect(body(encodeEndOfRib(4))).toBe('00000000');
    expect(body(encodeEndOfRib(6))).toBe('0000' + '0006' + '800f03' + '000201');
  });

  it('finds inconsistent lengths in a peer UPDATE', () => {
    expect(updateLengthProblem(Buffer.from('00000000', 'hex'))).toBeUndefined();
    expect(updateLengthProblem(Buffer.from('00ff0000', 'hex'))).toContain('withdrawn routes of 255 bytes');
    expect(updateLengthProblem(Buffer.from('000000ff', 'hex'))).toContain('path attributes of 255 bytes');
  });
});
