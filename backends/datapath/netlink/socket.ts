/**
 * One netlink request socket (NETLINK_ROUTE, or another protocol such as NETLINK_GENERIC) with request/ack
 * matching by sequence number. Batches are sent as many messages per sendmsg without per-message acks, followed
 * by an NLMSG_NOOP that asks for one: the kernel handles a socket's messages in order and reports only failures,
 * so the NOOP's ack marks the end of the batch and the receive buffer never fills with thousands of success acks.
 *
 * The socket is ours (native-socket.ts says why): when the kernel drops replies meant for it (ENOBUFS), every
 * request then pending fails with ENOBUFS and its caller retries; the daemon goes on.
 */
import { FlannelError } from '../../../flanneld/runtime/errors.js';
import { NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLM_F_ACK, NLM_F_DUMP_INTR, NLM_F_REQUEST } from './constants.js';
import { decodeMessages, encodeMessage, type RawMessage } from './message.js';
import {
  NetlinkSendError, errnoName, openNativeNetlinkSocket, type NetlinkSocketInfo, type NetlinkTransport, type OpenNetlinkSocket,
} from './native-socket.js';

export { errnoName };

/** Below the kernel's default socket send limit (sk_sndbuf ~208 KiB), with headroom. */
const MAX_CHUNK_BYTES = 64 * 1024;
const DUMP_ATTEMPTS = 5;
/**
 * Replies only come for our own requests, and dumps are paced by our reads, so this buffer only has to hold what
 * one sendmsg can provoke at once: the failure acks of a 64 KiB batch chunk (about a thousand messages, under
 * 1 MiB of skbs even with NETLINK_CAP_ACK off). 4 MiB (8 MiB as the kernel counts it) leaves a wide margin, and
 * SO_RCVBUFFORCE makes it hold on hosts whose net.core.rmem_max is the 208 KiB default.
 */
const REQUEST_RCVBUF = 4 * 1024 * 1024;
/** A whole 64 KiB chunk goes in one sendmsg, which netlink refuses (EMSGSIZE) above sk_sndbuf - 32. */
const REQUEST_SNDBUF = 1024 * 1024;
const ENOBUFS = 'ENOBUFS';

/** Builds one message given its sequence number. */
export type MessageBuilder = (seq: number) => Buffer;

interface Pending {
  readonly onMessage: (msg: RawMessage) => void;
  readonly onFailure: (errno: string) => void;
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

export class RtnlSocket {
  private transport: NetlinkTransport | undefined;
  private readonly pending = new Map<number, Pending>();
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private closed = false;
  /** Times the kernel dropped replies meant for this socket (each failed the requests pending then). */
  overruns = 0;
  /** Times the socket broke for another reason and was opened anew for the next request. */
  reopens = 0;

  /** `protocol` is NETLINK_ROUTE unless given (NETLINK_GENERIC for generic netlink families such as wireguard). */
  constructor(
    private readonly open: OpenNetlinkSocket = openNativeNetlinkSocket,
    private readonly protocol?: number,
  ) {
    // Opened now, so a missing addon or a refused socket stops the daemon at start, not at its first request.
    this.transport = this.connect();
  }

  private connect(): NetlinkTransport {
    return this.open(
      { rcvbuf: REQUEST_RCVBUF, sndbuf: REQUEST_SNDBUF, capAck: true, ...(this.protocol === undefined ? {} : { protocol: this.protocol }) },
      {
        data: (buf) => {
          for (const msg of decodeMessages(buf)) this.pending.get(msg.seq)?.onMessage(msg);
        },
        // Some reply was lost, and nothing says whose: fail everything pending so the callers retry.
        overrun: (count) => {
          this.overruns += count;
          this.failPending(ENOBUFS);
        },
        failed: (errno) => {
          this.transport = undefined;
          this.failPending(errno);
        },
      },
    );
  }

  private failPending(errno: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of new Set(all)) p.onFailure(errno);
  }

  /** Throws NetlinkSendError; a socket that broke earlier is replaced first. */
  private send(buf: Buffer): void {
    if (this.closed) throw new NetlinkSendError('EBADF');
    if (!this.transport) {
      this.transport = this.connect();
      this.reopens++;
    }
    this.transport.send(buf);
  }

  info(): NetlinkSocketInfo | undefined {
    return this.transport?.info();
  }

  close(): void {
    this.closed = true;
    this.transport?.close();
    this.transport = undefined;
    this.failPending('EBADF');
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
            // A dump the kernel could not finish ends with its errno in DONE: what came before is not the whole answer.
            const code = msg.payload.length >= 4 ? msg.payload.readInt32LE(0) : 0;
            if (code < 0) reject(new NetlinkRequestError(errnoName(-code), what));
            else resolve({ messages, interrupted });
          } else if (msg.type === NLMSG_ERROR) {
            this.pending.delete(seq);
            const code = msg.payload.readInt32LE(0);
            if (code === 0) resolve({ messages, interrupted });
            else reject(new NetlinkRequestError(errnoName(-code), what));
          } else {
            messages.push(msg);
          }
        },
        onFailure: (errno) => reject(new NetlinkRequestError(errno, what)),
      });
      try {
        this.send(build(seq));
      } catch (err) {
        this.pending.delete(seq);
        reject(err instanceof NetlinkSendError ? new NetlinkRequestError(err.errno, what) : err);
      }
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
      const forget = (): void => {
        for (const seq of seqToIndex.keys()) this.pending.delete(seq);
        this.pending.delete(fenceSeq);
      };
      const onMessage = (msg: RawMessage): void => {
        if (msg.type !== NLMSG_ERROR) return;
        const code = msg.payload.readInt32LE(0);
        if (msg.seq === fenceSeq) {
          forget();
          if (code === 0) resolve();
          else reject(new NetlinkRequestError(errnoName(-code), 'netlink batch'));
          return;
        }
        const i = seqToIndex.get(msg.seq);
        if (i !== undefined && code !== 0) failures.set(i, errnoName(-code));
      };
      // Lost acks leave the chunk's outcome unknown: the whole batch fails, and the caller's resync sorts it out.
      const pending: Pending = { onMessage, onFailure: (errno) => reject(new NetlinkRequestError(errno, 'netlink batch')) };
      for (const seq of seqToIndex.keys()) this.pending.set(seq, pending);
      this.pending.set(fenceSeq, pending);
      chunk.push(encodeMessage(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, fenceSeq, Buffer.alloc(0), []));
      try {
        // One buffer, not an iovec per message: sendmsg refuses more than UIO_MAXIOV (1024) pieces.
        this.send(Buffer.concat(chunk));
      } catch (err) {
        forget();
        reject(err instanceof NetlinkSendError ? new NetlinkRequestError(err.errno, 'netlink batch send') : err);
      }
    });
  }
}
