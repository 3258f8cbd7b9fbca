/**
 * BGP-4's message framing (RFC 4271 section 4.1): a 16-byte all-ones marker, a 2-byte length (19..4096) and a type.
 * A peer's bytes are untrusted: the framer refuses a bad marker, length or type with the NOTIFICATION the RFC
 * prescribes (BgpProtocolError carries it), and never buffers more than one message's worth.
 */

export const HEADER_LEN = 19;
export const MAX_MESSAGE_LEN = 4096;
export const BGP_PORT = 179;

export const MSG_OPEN = 1;
export const MSG_UPDATE = 2;
export const MSG_NOTIFICATION = 3;
export const MSG_KEEPALIVE = 4;
export const MSG_ROUTE_REFRESH = 5;

/** NOTIFICATION error codes (RFC 4271 section 4.5) and the subcodes used here. */
export const ERR_HEADER = 1;
export const ERR_OPEN = 2;
export const ERR_UPDATE = 3;
export const ERR_HOLD_TIMER = 4;
export const ERR_FSM = 5;
export const ERR_CEASE = 6;

export const SUB_HEADER_NOT_SYNCHRONIZED = 1;
export const SUB_HEADER_BAD_LENGTH = 2;
export const SUB_HEADER_BAD_TYPE = 3;
export const SUB_OPEN_UNSUPPORTED_VERSION = 1;
export const SUB_OPEN_BAD_PEER_AS = 2;
export const SUB_OPEN_BAD_BGP_ID = 3;
export const SUB_OPEN_UNACCEPTABLE_HOLD = 6;
export const SUB_UPDATE_MALFORMED_ATTRIBUTES = 1;
export const SUB_CEASE_ADMIN_SHUTDOWN = 2;

const MARKER = Buffer.alloc(16, 0xff);
const KNOWN_TYPES = new Set([MSG_OPEN, MSG_UPDATE, MSG_NOTIFICATION, MSG_KEEPALIVE, MSG_ROUTE_REFRESH]);
/** The least length each type can have: a shorter one is "bad message length" whatever its content. */
const MIN_LEN: Readonly<Record<number, number>> = {
  [MSG_OPEN]: HEADER_LEN + 10,
  [MSG_UPDATE]: HEADER_LEN + 4,
  [MSG_NOTIFICATION]: HEADER_LEN + 2,
  [MSG_KEEPALIVE]: HEADER_LEN,
  [MSG_ROUTE_REFRESH]: HEADER_LEN + 4,
};

/** Something the peer sent that BGP says ends the session with this NOTIFICATION. */
export class BgpProtocolError extends Error {
  override readonly name = 'BgpProtocolError';
  constructor(
    readonly code: number,
    readonly subcode: number,
    message: string,
    readonly data: Buffer = Buffer.alloc(0),
  ) {
    super(message);
  }
}

export interface RawBgpMessage {
  readonly type: number;
  /** Everything after the header. */
  readonly body: Buffer;
}

export function encodeMessage(type: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const length = HEADER_LEN + body.length;
  if (length > MAX_MESSAGE_LEN) throw new RangeError(`BGP message of ${length} bytes exceeds ${MAX_MESSAGE_LEN}`);
  const header = Buffer.alloc(HEADER_LEN);
  MARKER.copy(header);
  header.writeUInt16BE(length, 16);
  header.writeUInt8(type, 18);
  return Buffer.concat([header, body]);
}

export const KEEPALIVE_MESSAGE = encodeMessage(MSG_KEEPALIVE);

/** Splits a TCP byte stream into messages; push() throws BgpProtocolError on the first bad header. */
export class BgpFramer {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): RawBgpMessage[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: RawBgpMessage[] = [];
    while (this.pending.length >= HEADER_LEN) {
      const length = checkHeader(this.pending);
      if (this.pending.length < length) break;
      out.push({ type: this.pending.readUInt8(18), body: Buffer.from(this.pending.subarray(HEADER_LEN, length)) });
      this.pending = this.pending.subarray(length);
    }
    return out;
  }
}

function checkHeader(buf: Buffer): number {
  if (!buf.subarray(0, 16).equals(MARKER)) throw new BgpProtocolError(ERR_HEADER, SUB_HEADER_NOT_SYNCHRONIZED, 'the message marker is not all ones');
  const length = buf.readUInt16BE(16);
  const type = buf.readUInt8(18);
  if (!KNOWN_TYPES.has(type)) throw new BgpProtocolError(ERR_HEADER, SUB_HEADER_BAD_TYPE, `unknown message type ${type}`, Buffer.from([type]));
  if (length < (MIN_LEN[type] ?? HEADER_LEN) || length > MAX_MESSAGE_LEN || (type === MSG_KEEPALIVE && length !== HEADER_LEN)) {
    const data = Buffer.alloc(2);
    data.writeUInt16BE(length);
    throw new BgpProtocolError(ERR_HEADER, SUB_HEADER_BAD_LENGTH, `message type ${type} with length ${length}`, data);
  }
  return length;
}

export interface Notification {
  readonly code: number;
  readonly subcode: number;
  readonly data: Buffer;
}

export function encodeNotification(n: Notification): Buffer {
  return encodeMessage(MSG_NOTIFICATION, Buffer.concat([Buffer.from([n.code, n.subcode]), n.data]));
}

export function decodeNotification(body: Buffer): Notification {
  return { code: body.readUInt8(0), subcode: body.readUInt8(1), data: Buffer.from(body.subarray(2)) };
}

const CODE_NAMES: Readonly<Record<number, string>> = {
  [ERR_HEADER]: 'message header error',
  [ERR_OPEN]: 'OPEN message error',
  [ERR_UPDATE]: 'UPDATE message error',
  [ERR_HOLD_TIMER]: 'hold timer expired',
  [ERR_FSM]: 'finite state machine error',
  [ERR_CEASE]: 'cease',
};

/** "cease (6/2)": how logs and status name a NOTIFICATION. */
export function describeNotification(n: Pick<Notification, 'code' | 'subcode'>): string {
  return `${CODE_NAMES[n.code] ?? 'unknown error'} (${n.code}/${n.subcode})`;
}
