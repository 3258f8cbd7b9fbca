/** Address family numbers and raw address bytes for both IP families. */
import type { Family } from '../../../flanneld/ip/address.js';
export { ipBytes, ipFromBytes } from '../../../flanneld/ip/address-bytes.js';
import { AF_INET, AF_INET6 } from './constants.js';

export const afOf = (family: Family): number => (family === 4 ? AF_INET : AF_INET6);

export function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

export function macFromBytes(buf: Buffer): string {
  return [...buf].map((b) => b.toString(16).padStart(2, '0')).join(':');
}
