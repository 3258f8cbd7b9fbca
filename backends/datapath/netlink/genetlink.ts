/**
 * Generic netlink (linux/genetlink.h): a family's messages are nlmsghdr, then genlmsghdr (cmd u8, version u8,
 * reserved u16), then attributes, and carry the family's id as their nlmsg_type. Ids are handed out when a
 * family registers, so a client asks nlctrl (always id 0x10) for the id by name first.
 */
import { FlannelError } from '../../../flanneld/runtime/errors.js';
import { NLM_F_ACK, NLM_F_REQUEST } from './constants.js';
import { decodeAttrs, encodeMessage, str, type Attr, type RawMessage } from './message.js';
import type { RtnlSocket } from './socket.js';

export const GENL_HDRLEN = 4;
export const GENL_ID_CTRL = 0x10;
export const CTRL_CMD_GETFAMILY = 3;
export const CTRL_ATTR_FAMILY_ID = 1;
export const CTRL_ATTR_FAMILY_NAME = 2;

export function genlHeader(cmd: number, version: number): Buffer {
  const b = Buffer.alloc(GENL_HDRLEN);
  b.writeUInt8(cmd, 0);
  b.writeUInt8(version, 1);
  return b;
}

/** One generic netlink message for family `familyId`. */
export function encodeGenl(familyId: number, flags: number, seq: number, cmd: number, version: number, attrs: readonly Attr[]): Buffer {
  return encodeMessage(familyId, flags, seq, genlHeader(cmd, version), attrs);
}

/** A generic netlink reply split into its command and the attribute bytes that follow the header. */
export interface GenlMessage {
  readonly cmd: number;
  readonly version: number;
  readonly attrs: Buffer;
}

/** Undefined when the payload is too short for a genlmsghdr. */
export function decodeGenl(msg: RawMessage): GenlMessage | undefined {
  if (msg.payload.length < GENL_HDRLEN) return undefined;
  return { cmd: msg.payload.readUInt8(0), version: msg.payload.readUInt8(1), attrs: msg.payload.subarray(GENL_HDRLEN) };
}

export const getFamily = (name: string) => (seq: number): Buffer =>
  encodeGenl(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, CTRL_CMD_GETFAMILY, 1, [{ type: CTRL_ATTR_FAMILY_NAME, value: str(name) }]);

/** The family id in a CTRL_CMD_NEWFAMILY reply, if it has a well-formed one. */
export function familyIdOf(msg: RawMessage): number | undefined {
  const id = decodeGenl(msg) && decodeAttrs(msg.payload.subarray(GENL_HDRLEN)).get(CTRL_ATTR_FAMILY_ID);
  return id && id.length >= 2 ? id.readUInt16LE(0) : undefined;
}

/**
 * The id of family `name`, over a NETLINK_GENERIC socket. An unknown family rejects with NetlinkRequestError
 * ENOENT, as the kernel answers; the kernel first asks modprobe for the family's module alias, so a family
 * whose module is installed but not loaded resolves here.
 */
export async function resolveFamily(sock: RtnlSocket, name: string): Promise<number> {
  const what = `resolve generic netlink family ${name}`;
  const replies = await sock.request(getFamily(name), what);
  const id = replies.map(familyIdOf).find((v) => v !== undefined);
  if (id === undefined) throw new FlannelError('ERR_EXEC', `${what}: the reply carries no family id`);
  return id;
}
