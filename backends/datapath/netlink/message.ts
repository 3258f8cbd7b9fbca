/**
 * nlmsghdr and rtattr encoding/decoding with the kernel's 4-byte alignment. Messages are built into plain
 * Buffers so many of them can be concatenated into one send.
 */
import { NLMSG_HDRLEN } from './constants.js';

export const align4 = (n: number): number => (n + 3) & ~3;

export type AttrValue = Buffer | readonly Attr[];
export interface Attr {
  readonly type: number;
  /** Raw payload, or nested attributes. */
  readonly value: AttrValue;
}

export const u8 = (v: number): Buffer => Buffer.from([v]);
export function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
}
export function u16be(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}
export function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
export const str = (s: string): Buffer => Buffer.from(`${s}\0`);
export const flag = (): Buffer => Buffer.alloc(0);

/** An attribute's length as its header states it: header plus payload, without the trailing padding. */
export function attrLength(attr: Attr): number {
  const payload = Buffer.isBuffer(attr.value)
    ? attr.value.length
    : (attr.value as readonly Attr[]).reduce((n, a) => n + align4(attrLength(a)), 0);
  return 4 + payload;
}

function writeAttrs(buf: Buffer, offset: number, attrs: readonly Attr[]): number {
  let at = offset;
  for (const attr of attrs) {
    const len = attrLength(attr);
    buf.writeUInt16LE(len, at);
    buf.writeUInt16LE(attr.type, at + 2);
    if (Buffer.isBuffer(attr.value)) attr.value.copy(buf, at + 4);
    else writeAttrs(buf, at + 4, attr.value as readonly Attr[]);
    at += align4(len);
  }
  return at;
}

/** One complete netlink message: header, fixed family struct, attributes. */
export function encodeMessage(type: number, flags: number, seq: number, fixed: Buffer, attrs: readonly Attr[]): Buffer {
  const body = align4(fixed.length) + attrs.reduce((n, a) => n + align4(attrLength(a)), 0);
  const buf = Buffer.alloc(NLMSG_HDRLEN + body);
  buf.writeUInt32LE(NLMSG_HDRLEN + body, 0);
  buf.writeUInt16LE(type, 4);
  buf.writeUInt16LE(flags, 6);
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeUInt32LE(0, 12);
  fixed.copy(buf, NLMSG_HDRLEN);
  writeAttrs(buf, NLMSG_HDRLEN + align4(fixed.length), attrs);
  return buf;
}

export interface RawMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  /** Everything after the header. */
  readonly payload: Buffer;
}

export function decodeMessages(buf: Buffer): RawMessage[] {
  const out: RawMessage[] = [];
  let at = 0;
  while (at + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(at);
    if (len < NLMSG_HDRLEN || at + len > buf.length) break;
    out.push({
      type: buf.readUInt16LE(at + 4),
      flags: buf.readUInt16LE(at + 6),
      seq: buf.readUInt32LE(at + 8),
      pid: buf.readUInt32LE(at + 12),
      payload: buf.subarray(at + NLMSG_HDRLEN, at + len),
    });
    at += align4(len);
  }
  return out;
}

/** Attributes of one level, by type (the last one wins, as the kernel's nla_parse). */
export function decodeAttrs(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let at = 0;
  while (at + 4 <= buf.length) {
    const len = buf.readUInt16LE(at);
    if (len < 4 || at + len > buf.length) break;
    // NLA_F_NESTED and NLA_F_NET_BYTEORDER live in the top bits of the type.
    out.set(buf.readUInt16LE(at + 2) & 0x3fff, buf.subarray(at + 4, at + len));
    at += align4(len);
  }
  return out;
}
