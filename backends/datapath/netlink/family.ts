/** Address family numbers and raw address bytes for both IP families. */
import { ipAddress, type Family, type IpAddress } from '../../../flanneld/ip/address.js';
import { AF_INET, AF_INET6 } from './constants.js';

export const afOf = (family: Family): number => (family === 4 ? AF_INET : AF_INET6);

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

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export function macFromBytes(buf: Buffer): string {
  return [...buf].map((b) => b.toString(16).padStart(2, '0')).join(':');
}
