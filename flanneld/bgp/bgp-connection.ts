/**
 * One TCP connection to a BGP peer, run through RFC 4271's states from OpenSent to Established and until it ends:
 * OPEN both ways, keepalives on a third of the negotiated hold time, the hold timer reset by every message the peer
 * sends. Once established it announces the wanted prefixes of every family both sides speak, then End-of-RIB, and
 * from then on only the changes. What the peer announces is framed, length-checked and otherwise ignored.
 */
import type { Logger } from 'pino';
import type { Family } from '../ip/address.js';
import { formatCidr } from '../ip/cidr.js';
import { AsyncQueue } from '../runtime/async-queue.js';
import type { Clock } from '../runtime/clock.js';
import { decodeOpen, encodeOpen, type OpenMessage } from './bgp-open.js';
import { encodeAnnouncement, encodeEndOfRib, encodeWithdrawal, updateLengthProblem, type Announcement, type UpdateContext } from './bgp-update.js';
import {
  BgpFramer, BgpProtocolError, ERR_CEASE, ERR_FSM, ERR_HOLD_TIMER, ERR_OPEN, ERR_UPDATE, KEEPALIVE_MESSAGE, MSG_KEEPALIVE, MSG_NOTIFICATION, MSG_OPEN,
  MSG_ROUTE_REFRESH, MSG_UPDATE, SUB_CEASE_ADMIN_SHUTDOWN, SUB_OPEN_BAD_PEER_AS, SUB_UPDATE_MALFORMED_ATTRIBUTES, decodeNotification, describeNotification,
  encodeNotification, type Notification, type RawBgpMessage,
} from './bgp-wire.js';

/** A connected byte stream to the peer; bgp-tcp.ts gives the real one, tests a pair of queues. */
export interface BgpTransport {
  write(bytes: Buffer): void;
  /** Bytes as they arrive, until `onClose`. */
  onData(listener: (chunk: Buffer) => void): void;
  onClose(listener: (error?: Error) => void): void;
  /** Closes at once (TCP FIN, or RST if the stream is broken). */
  close(): void;
}

/** RFC 4271 10: the hold time a speaker uses before OPENs are exchanged. */
const OPEN_HOLD_MS = 240_000;

export type ConnectionState = 'open-sent' | 'open-confirm' | 'established';

export interface ConnectionParams {
  readonly localAs: number;
  readonly remoteAs: number;
  readonly open: OpenMessage;
  readonly clock: Clock;
  readonly log: Logger;
  /** The wanted announcements now; read again on each `announcementsChanged`. */
  readonly wanted: () => ReadonlyMap<string, Announcement>;
  readonly onState: (state: ConnectionState, peerOpen?: OpenMessage) => void;
  /** Prefixes the peer holds from us now, after each change. */
  readonly onAnnounced: (prefixes: readonly string[]) => void;
}

/** Why a connection ended; `notification` is what either side sent, if one did. */
export interface ConnectionEnd {
  readonly reason: string;
  readonly established: boolean;
  readonly sent?: Notification;
  readonly received?: Notification;
}

type Event =
  | { readonly type: 'message'; readonly message: RawBgpMessage }
  | { readonly type: 'bad-bytes'; readonly error: BgpProtocolError }
  | { readonly type: 'closed'; readonly error?: Error | undefined }
  | { readonly type: 'hold-expired' }
  | { readonly type: 'keepalive-due' }
  | { readonly type: 'changed' }
  | { readonly type: 'stop'; readonly withdraw: boolean };

export class BgpConnection {
  private readonly events = new AsyncQueue<Event>();
  private state: ConnectionState = 'open-sent';
  private peerOpen: OpenMessage | undefined;
  private holdMs = OPEN_HOLD_MS;
  private holdTimer = new AbortController();
  private keepaliveTimer = new AbortController();
  /** What the peer holds from us, by prefix. */
  private readonly sent = new Map<string, Announcement>();
  private families: readonly Family[] = [];

  constructor(
    private readonly transport: BgpTransport,
    private readonly params: ConnectionParams,
  ) {
    const framer = new BgpFramer();
    transport.onData((chunk) => {
      try {
        for (const message of framer.push(chunk)) this.events.push({ type: 'message', message });
      } catch (err) {
        this.events.push({ type: 'bad-bytes', error: err as BgpProtocolError });
      }
    });
    transport.onClose((error) => this.events.push({ type: 'closed', error }));
  }

  /** The wanted announcements changed: the difference goes out once established. */
  announcementsChanged(): void {
    this.events.push({ type: 'changed' });
  }

  /** Ends the connection: with `withdraw`, every announced prefix is withdrawn and a Cease sent first. */
  stop(withdraw: boolean): void {
    this.events.push({ type: 'stop', withdraw });
  }

  async run(): Promise<ConnectionEnd> {
    this.transport.write(encodeOpen(this.params.open));
    this.params.onState('open-sent');
    this.armHold();
    try {
      for await (const event of this.events) {
        const end = this.handle(event);
        if (end) return end;
      }
      return { reason: 'connection events ended', established: false };
    } finally {
      this.holdTimer.abort();
      this.keepaliveTimer.abort();
      this.transport.close();
    }
  }

  private handle(event: Event): ConnectionEnd | undefined {
    switch (event.type) {
      case 'message':
        return this.onMessage(event.message);
      case 'bad-bytes':
        return this.fail(event.error);
      case 'closed':
        return this.ended(`the peer closed the connection${event.error ? ` (${event.error.message})` : ''}`);
      case 'hold-expired':
        return this.fail(new BgpProtocolError(ERR_HOLD_TIMER, 0, `no message from the peer for ${this.holdMs / 1000} s`));
      case 'keepalive-due':
        this.transport.write(KEEPALIVE_MESSAGE);
        this.armKeepalive();
        return undefined;
      case 'changed':
        if (this.state === 'established') this.sendChanges();
        return undefined;
      case 'stop':
        return this.shutdown(event.withdraw);
    }
  }

  private onMessage(message: RawBgpMessage): ConnectionEnd | undefined {
    this.armHold();
    try {
      switch (message.type) {
        case MSG_OPEN:
          return this.onOpen(message.body);
        case MSG_KEEPALIVE:
          return this.onKeepalive();
        case MSG_UPDATE:
          return this.onUpdate(message.body);
        case MSG_NOTIFICATION: {
          const received = decodeNotification(message.body);
          return this.ended(`the peer sent NOTIFICATION ${describeNotification(received)}`, { received });
        }
        case MSG_ROUTE_REFRESH:
          if (this.state === 'established') this.resendAll();
          return undefined;
        default:
          return undefined;
      }
    } catch (err) {
      if (err instanceof BgpProtocolError) return this.fail(err);
      throw err;
    }
  }

  private onOpen(body: Buffer): ConnectionEnd | undefined {
    if (this.state !== 'open-sent') throw new BgpProtocolError(ERR_FSM, 0, `an OPEN in state ${this.state}`);
    const open = decodeOpen(body);
    if (open.asn !== this.params.remoteAs) throw new BgpProtocolError(ERR_OPEN, SUB_OPEN_BAD_PEER_AS, `the peer says it is AS ${open.asn}, configured as AS ${this.params.remoteAs}`);
    this.peerOpen = open;
    this.families = this.params.open.families.filter((f) => open.families.includes(f));
    const refused = this.params.open.families.filter((f) => !this.families.includes(f));
    if (refused.length > 0) {
      this.params.log.warn({ refused: refused.map((f) => `IPv${f} unicast`) }, `the router does not take ${refused.map((f) => `IPv${f}`).join(' or ')} unicast on this session; those subnets are not announced to it`);
    }
    this.holdMs = Math.min(this.params.open.holdTimeSec, open.holdTimeSec) * 1000;
    this.transport.write(KEEPALIVE_MESSAGE);
    this.state = 'open-confirm';
    this.params.onState('open-confirm', open);
    this.armHold();
    this.armKeepalive();
    return undefined;
  }

  private onKeepalive(): ConnectionEnd | undefined {
    if (this.state === 'open-sent') throw new BgpProtocolError(ERR_FSM, 0, 'a KEEPALIVE before the OPEN');
    if (this.state === 'open-confirm') {
      this.state = 'established';
      this.params.onState('established', this.peerOpen);
      this.sendChanges();
      for (const family of this.families) this.transport.write(encodeEndOfRib(family));
    }
    return undefined;
  }

  private onUpdate(body: Buffer): ConnectionEnd | undefined {
    if (this.state !== 'established') throw new BgpProtocolError(ERR_FSM, 0, `an UPDATE in state ${this.state}`);
    const problem = updateLengthProblem(body);
    if (problem) throw new BgpProtocolError(ERR_UPDATE, SUB_UPDATE_MALFORMED_ATTRIBUTES, problem);
    return undefined;
  }

  private context(): UpdateContext {
    return { localAs: this.params.localAs, ibgp: this.params.localAs === this.params.remoteAs, fourOctetAs: this.peerOpen?.fourOctetAs ?? false };
  }

  /** Announces what is wanted and not sent (or sent differently), withdraws what is sent and no longer wanted. */
  private sendChanges(): void {
    const wanted = new Map([...this.params.wanted()].filter(([, a]) => this.families.includes(a.prefix.family)));
    const ctx = this.context();
    for (const [key, a] of this.sent) {
      if (wanted.has(key)) continue;
      this.transport.write(encodeWithdrawal(a.prefix));
      this.sent.delete(key);
    }
    for (const [key, a] of wanted) {
      const before = this.sent.get(key);
      if (before && before.nextHop.value === a.nextHop.value) continue;
      this.transport.write(encodeAnnouncement(a, ctx));
      this.sent.set(key, a);
    }
    this.params.onAnnounced([...this.sent.keys()]);
  }

  private resendAll(): void {
    this.sent.clear();
    this.sendChanges();
  }

  private shutdown(withdraw: boolean): ConnectionEnd {
    if (!withdraw) return this.ended('stopped; routes kept for graceful restart');
    for (const a of this.sent.values()) this.transport.write(encodeWithdrawal(a.prefix));
    if (this.sent.size > 0) this.params.log.info({ prefixes: [...this.sent.values()].map((a) => formatCidr(a.prefix)) }, 'withdrew our prefixes');
    this.sent.clear();
    this.params.onAnnounced([]);
    const sent: Notification = { code: ERR_CEASE, subcode: SUB_CEASE_ADMIN_SHUTDOWN, data: Buffer.alloc(0) };
    this.transport.write(encodeNotification(sent));
    return this.ended('stopped', { sent });
  }

  private fail(err: BgpProtocolError): ConnectionEnd {
    const sent: Notification = { code: err.code, subcode: err.subcode, data: err.data };
    this.transport.write(encodeNotification(sent));
    return this.ended(`${err.message}; sent NOTIFICATION ${describeNotification(sent)}`, { sent });
  }

  private ended(reason: string, notifications: Pick<ConnectionEnd, 'sent' | 'received'> = {}): ConnectionEnd {
    return { reason, established: this.state === 'established', ...notifications };
  }

  private armHold(): void {
    this.holdTimer.abort();
    this.holdTimer = new AbortController();
    if (this.holdMs === 0) return;
    this.params.clock.sleep(this.holdMs, this.holdTimer.signal).then(() => this.events.push({ type: 'hold-expired' }), () => undefined);
  }

  private armKeepalive(): void {
    this.keepaliveTimer.abort();
    this.keepaliveTimer = new AbortController();
    if (this.holdMs === 0) return;
    this.params.clock.sleep(Math.floor(this.holdMs / 3), this.keepaliveTimer.signal).then(() => this.events.push({ type: 'keepalive-due' }), () => undefined);
  }
}
