/** RTM_*ADDR: ifaddrmsg plus IFA_LOCAL/IFA_ADDRESS. */
import { ipNet } from '../../../flanneld/ip/cidr.js';
import type { AddressInfo } from '../datapath.js';
import { IFA_ADDRESS, IFA_F_NODAD, IFA_LOCAL, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR, RT_SCOPE_UNIVERSE, AF_UNSPEC } from './constants.js';
import { afOf, ipBytes, ipFromBytes } from './family.js';
import { decodeAttrs, encodeMessage, type RawMessage } from './message.js';

function ifaddrmsg(family: number, prefixLen: number, index: number, flags = 0): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefixLen, 1);
  b.writeUInt8(flags, 2);
  b.writeUInt8(RT_SCOPE_UNIVERSE, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

export const dumpAddresses = () => (seq: number): Buffer =>
  encodeMessage(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, ifaddrmsg(AF_UNSPEC, 0, 0), []);

// IPv6 addresses we add are the lease's own (unique by allocation) on a VXLAN device that floods nothing, so
// duplicate address detection can find no one and would only keep the address tentative (unusable as a source)
// for about a second after every device (re)creation.
export const addAddress = (a: AddressInfo) => (seq: number): Buffer =>
  encodeMessage(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, ifaddrmsg(afOf(a.address.family), a.cidr.prefixLen, a.linkIndex, a.address.family === 6 ? IFA_F_NODAD : 0), [
    { type: IFA_LOCAL, value: ipBytes(a.address) },
    { type: IFA_ADDRESS, value: ipBytes(a.address) },
  ]);

export const deleteAddress = (a: AddressInfo) => (seq: number): Buffer =>
  encodeMessage(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq, ifaddrmsg(afOf(a.address.family), a.cidr.prefixLen, a.linkIndex), [
    { type: IFA_LOCAL, value: ipBytes(a.address) },
    { type: IFA_ADDRESS, value: ipBytes(a.address) },
  ]);

export function decodeAddress(msg: RawMessage): AddressInfo | undefined {
  if (msg.type !== RTM_NEWADDR) return undefined;
  const prefixLen = msg.payload.readUInt8(1);
  const index = msg.payload.readUInt32LE(4);
  const attrs = decodeAttrs(msg.payload.subarray(8));
  const raw = attrs.get(IFA_LOCAL) ?? attrs.get(IFA_ADDRESS);
  const address = raw ? ipFromBytes(raw) : undefined;
  if (!address) return undefined;
  return { linkIndex: index, address, cidr: ipNet(address.family, address.value, prefixLen) };
}
