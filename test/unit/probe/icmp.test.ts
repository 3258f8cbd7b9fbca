/**
 * ICMP echo bytes: requests as a raw socket must be handed them (our checksum for IPv4, the kernel's for IPv6) and
 * replies as Linux raw sockets deliver them (IPv4 with its IP header, of any IHL; IPv6 without).
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { formatIp, parseIp } from '../../../flanneld/ip/address.js';
import {
  buildEchoRequest,
  internetChecksum,
  parseIcmpv4EchoReply,
  parseIcmpv6EchoReply,
} from '../../../flanneld/probe/icmp.js';
import { seededRandom } from '../../../flanneld/runtime/random.js';

const ip = (t: string) => parseIp(t)!;

/** An IPv4 datagram around `icmp`, as an IPv4 raw socket delivers it; `options` adds 4-byte words of IP options. */
function ipv4Packet(icmp: Uint8Array, source: string, opts: { options?: number; protocol?: number; fragment?: number } = {}): Buffer {
  const words = 5 + (opts.options ?? 0);
  const header = Buffer.alloc(words * 4);
  header[0] = 0x40 | words;
  header.writeUInt16BE(header.length + icmp.length, 2);
  header.writeUInt16BE(opts.fragment ?? 0x4000, 6); // DF set, like a Linux echo reply
  header[8] = 64;
  header[9] = opts.protocol ?? 1;
  Buffer.from(source.split('.').map(Number)).copy(header, 12);
  Buffer.from([192, 0, 2, 1]).copy(header, 16);
  for (let i = 20; i < header.length; i++) header[i] = 1; // NOP options
  header.writeUInt16BE(internetChecksum(header), 10);
  return Buffer.concat([header, icmp]);
}

/** The kernel's echo reply to one of our requests: same bytes, type 0, checksum redone. */
function replyTo(request: Buffer): Buffer {
  const reply = Buffer.from(request);
  reply[0] = 0;
  reply.writeUInt16BE(0, 2);
  reply.writeUInt16BE(internetChecksum(reply), 2);
  return reply;
}

describe('internetChecksum', () => {
  it('matches the RFC 1071 worked example and is 0 over data carrying its own checksum', () => {
    // RFC 1071 section 3: the one's-complement sum of 0001 f203 f4f5 f6f7 is ddf2, so the checksum is 220d.
    expect(internetChecksum(Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]))).toBe(0x220d);
    const withSum = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0x22, 0x0d]);
    expect(internetChecksum(withSum)).toBe(0);
  });

  it('agrees with raw-socket createChecksum on random data of odd and even lengths', () => {
    const raw = createRequire(import.meta.url)('raw-socket') as { createChecksum(b: Buffer): number };
    const random = seededRandom(7);
    for (let n = 0; n < 200; n++) {
      // At least one byte: createChecksum throws RangeError on an empty buffer.
      const data = Buffer.from(Array.from({ length: 1 + random.int(80) }, () => random.int(256)));
      expect(internetChecksum(data), data.toString('hex')).toBe(raw.createChecksum(data));
    }
  });
});

describe('buildEchoRequest', () => {
  it('builds the ICMP echo request of the raw-socket README byte for byte (checksum 0x4352)', () => {
    const payload = Buffer.from('abcdefghijklmnopqrstuvwabcdefghi');
    const request = buildEchoRequest(4, { identifier: 1, sequence: 0x0a09, payload });
    expect(request.subarray(0, 8).toString('hex')).toBe('0800435200010a09');
    expect(request.subarray(8)).toEqual(payload);
    expect(internetChecksum(request)).toBe(0);
  });

  it('builds an ICMPv6 echo request (type 128) and leaves the checksum to the kernel', () => {
    const request = buildEchoRequest(6, { identifier: 0xbeef, sequence: 65535, payload: Buffer.alloc(4, 0xaa) });
    expect(request.toString('hex')).toBe('80000000beefffffaaaaaaaa');
  });

  it('refuses identifiers and sequences that do not fit 16 bits', () => {
    expect(() => buildEchoRequest(4, { identifier: 0x10000, sequence: 0 })).toThrow(RangeError);
    expect(() => buildEchoRequest(4, { identifier: 1, sequence: -1 })).toThrow(RangeError);
    expect(() => buildEchoRequest(4, { identifier: 1.5, sequence: 0 })).toThrow(RangeError);
  });
});

describe('parseIcmpv4EchoReply', () => {
  const request = buildEchoRequest(4, { identifier: 0x1234, sequence: 77, payload: Buffer.from('flannel-ts probe') });

  it('reads identifier, sequence and source behind a 20-byte IP header', () => {
    const reply = parseIcmpv4EchoReply(ipv4Packet(replyTo(request), '10.244.2.0'));
    expect(reply).toMatchObject({ identifier: 0x1234, sequence: 77 });
    expect(formatIp(reply!.source)).toBe('10.244.2.0');
  });

  it('skips a longer header by its IHL (IP options)', () => {
    const reply = parseIcmpv4EchoReply(ipv4Packet(replyTo(request), '203.0.113.250', { options: 3 }));
    expect(reply).toMatchObject({ identifier: 0x1234, sequence: 77 });
    expect(formatIp(reply!.source)).toBe('203.0.113.250');
  });

  it('ignores our own request (seen on loopback), errors quoting it, and non-ICMP datagrams', () => {
    expect(parseIcmpv4EchoReply(ipv4Packet(request, '192.0.2.1'))).toBeUndefined();
    // Destination unreachable: type 3, then the original IP header and the first 8 bytes of our request.
    const quoted = ipv4Packet(request, '192.0.2.1').subarray(0, 28);
    const unreachable = Buffer.concat([Buffer.from([3, 1, 0, 0, 0, 0, 0, 0]), quoted]);
    unreachable.writeUInt16BE(internetChecksum(unreachable), 2);
    expect(parseIcmpv4EchoReply(ipv4Packet(unreachable, '192.0.2.2'))).toBeUndefined();
    expect(parseIcmpv4EchoReply(ipv4Packet(replyTo(request), '192.0.2.2', { protocol: 17 }))).toBeUndefined();
  });

  it('ignores corrupt, truncated, fragmented and non-IPv4 packets', () => {
    const good = ipv4Packet(replyTo(request), '192.0.2.2');
    const corrupt = Buffer.from(good);
    corrupt[corrupt.length - 1] = (corrupt.at(-1) as number) ^ 0xff;
    expect(parseIcmpv4EchoReply(corrupt)).toBeUndefined();
    expect(parseIcmpv4EchoReply(good.subarray(0, 27))).toBeUndefined();
    expect(parseIcmpv4EchoReply(good.subarray(0, 12))).toBeUndefined();
    expect(parseIcmpv4EchoReply(ipv4Packet(replyTo(request), '192.0.2.2', { fragment: 0x2000 }))).toBeUndefined();
    expect(parseIcmpv4EchoReply(ipv4Packet(replyTo(request), '192.0.2.2', { fragment: 0x0010 }))).toBeUndefined();
    const badIhl = Buffer.from(good);
    badIhl[0] = 0x44;
    expect(parseIcmpv4EchoReply(badIhl)).toBeUndefined();
    const v6 = Buffer.from(good);
    v6[0] = 0x65;
    expect(parseIcmpv4EchoReply(v6)).toBeUndefined();
  });
});

describe('parseIcmpv6EchoReply', () => {
  it('reads a type 129 message (no IP header) with the source recvfrom gave', () => {
    const reply = Buffer.from('8100abcd0042000700', 'hex');
    expect(parseIcmpv6EchoReply(reply, ip('fd00::2'))).toEqual({ identifier: 0x42, sequence: 7, source: ip('fd00::2') });
  });

  it('ignores requests, neighbour discovery, short messages and an IPv4 source', () => {
    expect(parseIcmpv6EchoReply(Buffer.from('8000abcd00420007', 'hex'), ip('::1'))).toBeUndefined();
    expect(parseIcmpv6EchoReply(Buffer.from('8700abcd00000000', 'hex'), ip('fe80::1'))).toBeUndefined();
    expect(parseIcmpv6EchoReply(Buffer.from('8100abcd0042', 'hex'), ip('::1'))).toBeUndefined();
    expect(parseIcmpv6EchoReply(Buffer.from('8100abcd00420007', 'hex'), ip('192.0.2.2'))).toBeUndefined();
  });
});
