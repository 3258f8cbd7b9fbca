/**
 * ICMP echo messages as raw sockets send and receive them, kept free of I/O so the byte layout is unit-tested
 * without root. The asymmetries follow Linux raw sockets: an IPv4 raw socket delivers the IP header in front of the
 * ICMP message (so we skip it by IHL) and leaves the ICMP checksum to us; an IPv6 raw socket delivers only the
 * ICMPv6 message and the kernel computes (and verifies) the ICMPv6 checksum itself (RFC 3542 3.1, forced on for
 * IPPROTO_ICMPV6 sockets), because it depends on a pseudo-header holding a source address only the kernel picks.
 */
import { ipAddress, type Family, type IpAddress } from '../ip/address.js';

export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;

const ECHO_HEADER_BYTES = 8;
const IPV4_MIN_HEADER_BYTES = 20;
const IPPROTO_ICMP = 1;

export interface EchoRequest {
  /** 16 bits; tells our replies from everyone else's, since a raw socket sees every ICMP packet of its namespace. */
  readonly identifier: number;
  /** 16 bits; tells our in-flight requests apart. */
  readonly sequence: number;
  readonly payload?: Uint8Array;
}

export interface EchoReply {
  readonly identifier: number;
  readonly sequence: number;
  readonly source: IpAddress;
}

/** RFC 1071 one's-complement sum of 16-bit words, complemented; 0 over a message that carries a valid checksum. */
export function internetChecksum(data: Uint8Array): number {
  let sum = 0;
  const even = data.length & ~1;
  for (let i = 0; i < even; i += 2) sum += ((data[i] as number) << 8) | (data[i + 1] as number);
  // An odd trailing byte is summed as if padded with a zero byte.
  if (even < data.length) sum += (data[even] as number) << 8;
  // Folding twice is enough: after the first fold the sum fits in 17 bits.
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function checkUint16(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) throw new RangeError(`${name} must be a 16-bit unsigned integer, got ${value}`);
}

/**
 * The ICMP (IPv4) or ICMPv6 echo request to hand to a raw socket of that family. The IPv6 checksum is left zero
 * for the kernel to fill in.
 */
export function buildEchoRequest(family: Family, request: EchoRequest): Buffer {
  checkUint16('identifier', request.identifier);
  checkUint16('sequence', request.sequence);
  const payload = request.payload ?? new Uint8Array(0);
  const message = Buffer.alloc(ECHO_HEADER_BYTES + payload.length);
  message[0] = family === 4 ? ICMP_ECHO_REQUEST : ICMPV6_ECHO_REQUEST;
  message[1] = 0;
  message.writeUInt16BE(request.identifier, 4);
  message.writeUInt16BE(request.sequence, 6);
  message.set(payload, ECHO_HEADER_BYTES);
  if (family === 4) message.writeUInt16BE(internetChecksum(message), 2);
  return message;
}

/**
 * An echo reply out of what an IPv4 raw ICMP socket delivers (IP header + ICMP message), or undefined for anything
 * else: other ICMP types (errors quote our request, identifier and all, so the type must be checked), fragments,
 * truncated or corrupt packets.
 */
export function parseIcmpv4EchoReply(packet: Uint8Array): EchoReply | undefined {
  if (packet.length < IPV4_MIN_HEADER_BYTES) return undefined;
  const first = packet[0] as number;
  if (first >> 4 !== 4) return undefined;
  const headerBytes = (first & 0x0f) * 4;
  if (headerBytes < IPV4_MIN_HEADER_BYTES || packet.length < headerBytes + ECHO_HEADER_BYTES) return undefined;
  if (packet[9] !== IPPROTO_ICMP) return undefined;
  // More-fragments flag or a fragment offset: Linux reassembles before raw delivery, so this is defensive.
  if ((((packet[6] as number) << 8) | (packet[7] as number)) & 0x3fff) return undefined;
  // Not the total-length field: BSDs rewrite it on raw receive, and Linux hands over exactly the datagram anyway.
  const message = packet.subarray(headerBytes);
  if (message[0] !== ICMP_ECHO_REPLY || message[1] !== 0) return undefined;
  // Raw delivery happens before the kernel's ICMP layer checks the checksum, so a corrupt reply would reach us.
  if (internetChecksum(message) !== 0) return undefined;
  const source = readUint16(packet, 12) * 0x10000 + readUint16(packet, 14);
  return {
    identifier: readUint16(message, 4),
    sequence: readUint16(message, 6),
    source: ipAddress(4, BigInt(source)),
  };
}

/**
 * An echo reply out of what an IPv6 raw ICMPv6 socket delivers (the ICMPv6 message only), or undefined. The source
 * is not in the message; the caller passes the one recvfrom reported. No checksum check: for ICMPv6 raw sockets
 * the kernel verifies it in recvfrom and drops a corrupt message (the call fails with EAGAIN instead).
 */
export function parseIcmpv6EchoReply(message: Uint8Array, source: IpAddress): EchoReply | undefined {
  if (source.family !== 6 || message.length < ECHO_HEADER_BYTES) return undefined;
  if (message[0] !== ICMPV6_ECHO_REPLY || message[1] !== 0) return undefined;
  return { identifier: readUint16(message, 4), sequence: readUint16(message, 6), source };
}

function readUint16(bytes: Uint8Array, at: number): number {
  return ((bytes[at] as number) << 8) | (bytes[at + 1] as number);
}
