/**
 * Identity and equality of datapath entries as the kernel sees them: a route is identified by its destination, a
 * neighbour by (device, IP), an FDB entry by (device, MAC). Two entries with one identity but other values
 * (gateway, MAC, destination) differ, and a replace fixes that.
 */
import { formatIp } from '../../flanneld/ip/address.js';
import { formatCidr } from '../../flanneld/ip/cidr.js';
import type { DatapathEntry } from './datapath.js';

export function entryIdentity(entry: DatapathEntry): string {
  switch (entry.kind) {
    case 'route':
      return `route ${formatCidr(entry.dst)}`;
    case 'neigh':
      return `neigh ${entry.linkIndex} ${formatIp(entry.ip)}`;
    case 'fdb':
      return `fdb ${entry.linkIndex} ${entry.mac}`;
  }
}

/** Full text of the entry: equal text means nothing to change. */
export function describeEntry(entry: DatapathEntry): string {
  switch (entry.kind) {
    case 'route':
      return (
        `route ${formatCidr(entry.dst)}` +
        (entry.via ? ` via ${formatIp(entry.via)}` : '') +
        (entry.linkIndex !== undefined ? ` dev#${entry.linkIndex}` : '') +
        (entry.onlink ? ' onlink' : '')
      );
    case 'neigh':
      return `neigh ${formatIp(entry.ip)} lladdr ${entry.mac} dev#${entry.linkIndex}`;
    case 'fdb':
      return `fdb ${entry.mac} dst ${formatIp(entry.dst)} dev#${entry.linkIndex}`;
  }
}
