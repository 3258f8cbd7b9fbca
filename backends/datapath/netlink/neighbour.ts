/** RTM_*NEIGH for permanent ARP/NDP entries and for bridge FDB entries on a VXLAN device ("self"). */
import { ipAddress, type Family } from '../../../flanneld/ip/address.js';
import type { DatapathEntry } from '../datapath.js';
import {
  AF_BRIDGE, AF_INET, AF_INET6, NDA_DST, NDA_LLADDR, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
  NTF_SELF, NUD_PERMANENT, RTM_DELNEIGH, RTM_GETNEIGH, RTM_NEWNEIGH,
} from './constants.js';
import { afOf, ipBytes, ipFromBytes, macBytes, macFromBytes } from './family.js';
import { decodeAttrs, encodeMessage, type RawMessage } from './message.js';

type NeighEntry = Extract<DatapathEntry, { kind: 'neigh' }>;
type FdbEntry = Extract<DatapathEntry, { kind: 'fdb' }>;

function ndmsg(family: number, ifindex: number, state: number, flags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeInt32LE(ifindex, 4);
  b.writeUInt16LE(state, 8);
  b.writeUInt8(flags, 10);
  return b;
}

const neighMessage = (type: number, flags: number, n: NeighEntry, seq: number): Buffer =>
  encodeMessage(type, flags, seq, ndmsg(afOf(n.ip.family), n.linkIndex, NUD_PERMANENT, 0), [
    { type: NDA_DST, value: ipBytes(n.ip) },
    { type: NDA_LLADDR, value: macBytes(n.mac) },
  ]);

const fdbMessage = (type: number, flags: number, f: FdbEntry, seq: number): Buffer =>
  encodeMessage(type, flags, seq, ndmsg(AF_BRIDGE, f.linkIndex, NUD_PERMANENT, NTF_SELF), [
    { type: NDA_LLADDR, value: macBytes(f.mac) },
    { type: NDA_DST, value: ipBytes(f.dst) },
  ]);

export const replaceNeigh = (n: NeighEntry) => (seq: number): Buffer =>
  neighMessage(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE, n, seq);
export const deleteNeigh = (n: NeighEntry) => (seq: number): Buffer => neighMessage(RTM_DELNEIGH, NLM_F_REQUEST, n, seq);
export const replaceFdb = (f: FdbEntry) => (seq: number): Buffer =>
  fdbMessage(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE, f, seq);
export const deleteFdb = (f: FdbEntry) => (seq: number): Buffer => fdbMessage(RTM_DELNEIGH, NLM_F_REQUEST, f, seq);

export const dumpNeighbours = (family: Family | 'bridge') => (seq: number): Buffer =>
  encodeMessage(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, ndmsg(family === 'bridge' ? AF_BRIDGE : afOf(family), 0, 0, 0), []);

/**
 * Dumps: permanent entries only (the kernel's learned or incomplete entries are not ours). Deletion notices
 * (`deleted`): any state, and the kernel leaves out what identity does not need (a dead neighbour has no lladdr,
 * an FDB notice may lack its dst), so those come back as "" and the unspecified address.
 */
export function decodeNeighbour(msg: RawMessage, deleted = false): NeighEntry | FdbEntry | undefined {
  if (msg.type !== RTM_NEWNEIGH && msg.type !== RTM_DELNEIGH) return undefined;
  const p = msg.payload;
  const family = p.readUInt8(0);
  const ifindex = p.readInt32LE(4);
  const state = p.readUInt16LE(8);
  if (!deleted && !(state & NUD_PERMANENT)) return undefined;
  const attrs = decodeAttrs(p.subarray(12));
  const lladdr = attrs.get(NDA_LLADDR);
  const dstRaw = attrs.get(NDA_DST);
  const dst = dstRaw ? ipFromBytes(dstRaw) : undefined;
  const mac = lladdr && lladdr.length === 6 ? macFromBytes(lladdr) : undefined;
  if (family === AF_BRIDGE) {
    if (!mac || (!dst && !deleted)) return undefined;
    return { kind: 'fdb', linkIndex: ifindex, mac, dst: dst ?? ipAddress(4, 0n) };
  }
  if (family === AF_INET || family === AF_INET6) {
    if (!dst || (!mac && !deleted)) return undefined;
    return { kind: 'neigh', linkIndex: ifindex, ip: dst, mac: mac ?? '' };
  }
  return undefined;
}
