/** An address as the network carries it: 4 or 16 bytes, most significant first (netlink, BGP, ICMP). */
import { ipAddress, type IpAddress } from './address.js';

export function ipBytes(addr: IpAddress): Buffer {
  const len = addr.family === 4 ? 4 : 16;
  const b = Buffer.alloc(len);
  let v = addr.value;
  for (let i = len - 1; i >= 0; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b;
}

export function ipFromBytes(buf: Buffer): IpAddress | undefined {
  if (buf.length !== 4 && buf.length !== 16) return undefined;
  let v = 0n;
  for (const byte of buf) v = (v << 8n) | BigInt(byte);
  return ipAddress(buf.length === 4 ? 4 : 6, v);
}
