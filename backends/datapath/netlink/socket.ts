/**
 * One NETLINK_ROUTE socket with request/ack matching by sequence number. Batches are sent as many messages per
 * sendmsg without per-message acks, followed by an NLMSG_NOOP that asks for one: the kernel handles a socket's
 * messages in order and reports only failures, so the NOOP's ack marks the end of the batch and the receive
 * buffer never fills with thousands of success acks.
 */
import { constants as osConstants } from 'node:os';
import { RawNetlinkSocket } from 'netlink';
import { FlannelError } from '../../../flanneld/runtime/errors.js';
import { NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLM_F_ACK, NLM_F_DUMP_INTR, NLM_F_REQUEST } from './constants.js';
import { decodeMessages, encodeMessage, type RawMessage } from './message.js';

const NETLINK_ROUTE = 0;
/** Below the kernel's default socket send limit (sk_sndbuf ~208 KiB), with headroom. */
const MAX_CHUNK_BYTES = 64 * 1024;
const DUMP_ATTEMPTS = 5;

/** Builds one message given its sequence number. */
export type MessageBuilder = (seq: number) => Buffer;

interface Pending {
  readonly onMessage: (msg: RawMessage) => void;
}

export class NetlinkRequestError extends FlannelError {
  override readonly name = 'NetlinkRequestError';
  constructor(
    readonly errno: string,
    what: string,
  ) {
    super('ERR_EXEC', `${what}: ${errno}`);
  }
}

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, num]) => [num, name]));
export const errnoName = (code: number): string => errnoNames.get(code) ?? `errno ${code}`;

export class RtnlSocket {
  private readonly raw: RawNetlinkSocket;
  private readonly pending = new Map<number, Pending>();
  private seq = Math.floor(Math.random() * 0x7fffffff);

  constructor() {
    this.raw = new RawNetlinkSocket(NETLINK_ROUTE, { recvBufferSize: 4 * 1024 * 1024, sendBufferSize: 1024 * 1024 });
    this.raw.on('message', (buf: Buffer) => {
      for (const msg of decodeMessages(buf)) this.pending.get(msg.seq)?.onMessage(msg);
    });
    this.raw.on('error', () => {
      // ENOBUFS on the request socket would lose replies; fail everything pending so callers retry.
      for (const [seq, p] of this.pending) {
        this.pending.delete(seq);
        p.onMessage({ type: NLMSG_ERROR, flags: 0, seq, pid: 0, payload: errorPayload(-(osConstants.errno.ENOBUFS ?? 105)) });
      }
    });
  }

  close(): void {
    this.raw.close();
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) % 0xffffffff || 1;
    return this.seq;
  }

  /** A dump (NLM_F_DUMP request): every reply message up to NLMSG_DONE; restarted if the kernel says it was interrupted. */
  async dump(build: MessageBuilder, what: string): Promise<RawMessage[]> {
    for (let attempt = 1; ; attempt++) {
      const { messages, interrupted } = await this.collect(build, what);
      if (!interrupted || attempt >= DUMP_ATTEMPTS) return messages;
    }
  }

  /** A single request with an ack; resolves with any reply messages that came before the ack. */
  async request(build: MessageBuilder, what: string): Promise<RawMessage[]> {
    return (await this.collect(build, what)).messages;
  }

  private collect(build: MessageBuilder, what: string): Promise<{ messages: RawMessage[]; interrupted: boolean }> {
    const seq = this.nextSeq();
    const messages: RawMessage[] = [];
    let interrupted = false;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, {
        onMessage: (msg) => {
          if (msg.flags & NLM_F_DUMP_INTR) interrupted = true;
          if (msg.type === NLMSG_DONE) {
            this.pending.delete(seq);
            resolve({ messages, interrupted });
          } else if (msg.type === NLMSG_ERROR) {
            this.pending.delete(seq);
            const code = msg.payload.readInt32LE(0);
            if (code === 0) resolve({ messages, interrupted });
            else reject(new NetlinkRequestError(errnoName(-code), what));
          } else {
            messages.push(msg);
          }
        },
      });
      this.raw.send(build(seq), {}, (err) => {
        if (err) {
          this.pending.delete(seq);
          reject(new NetlinkRequestError(err.code, what));
        }
      });
    });
  }

  /**
   * Sends every message, as few sendmsg calls as the size limit allows, and returns the errno name of each one
   * that failed, by index. Never rejects for a single message's failure.
   */
  async batch(builders: readonly MessageBuilder[]): Promise<Map<number, string>> {
    const failures = new Map<number, string>();
    let index = 0;
    while (index < builders.length) {
      const chunk: Buffer[] = [];
      const seqToIndex = new Map<number, number>();
      let bytes = 0;
      while (index < builders.length && bytes < MAX_CHUNK_BYTES) {
        const seq = this.nextSeq();
        const msg = (builders[index] as MessageBuilder)(seq);
        seqToIndex.set(seq, index);
        chunk.push(msg);
        bytes += msg.length;
        index++;
      }
      await this.sendChunk(chunk, seqToIndex, failures);
    }
    return failures;
  }

  private sendChunk(chunk: Buffer[], seqToIndex: Map<number, number>, failures: Map<number, string>): Promise<void> {
    const fenceSeq = this.nextSeq();
    return new Promise<void>((resolve, reject) => {
      const onMessage = (msg: RawMessage): void => {
        if (msg.type !== NLMSG_ERROR) return;
        const code = msg.payload.readInt32LE(0);
        if (msg.seq === fenceSeq) {
          for (const seq of seqToIndex.keys()) this.pending.delete(seq);
          this.pending.delete(fenceSeq);
          if (code === 0) resolve();
          else reject(new NetlinkRequestError(errnoName(-code), 'netlink batch'));
          return;
        }
        const i = seqToIndex.get(msg.seq);
        if (i !== undefined && code !== 0) failures.set(i, errnoName(-code));
      };
      for (const seq of seqToIndex.keys()) this.pending.set(seq, { onMessage });
      this.pending.set(fenceSeq, { onMessage });
      chunk.push(encodeMessage(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, fenceSeq, Buffer.alloc(0), []));
      // One buffer, not an iovec per message: sendmsg refuses more than UIO_MAXIOV (1024) pieces.
      this.raw.send(Buffer.concat(chunk), {}, (err) => {
        if (err) {
          for (const seq of seqToIndex.keys()) this.pending.delete(seq);
          this.pending.delete(fenceSeq);
          reject(new NetlinkRequestError(err.code, 'netlink batch send'));
        }
      });
    });
  }
}

function errorPayload(code: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(code);
  return b;
}
