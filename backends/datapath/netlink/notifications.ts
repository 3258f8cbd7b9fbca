/**
 * The datapath's notification socket: rtnetlink multicast (links, neighbours, IPv4 and IPv6 routes) turned into
 * DatapathEvents. Deletions are all the reconciler acts on, so the socket keeps only RTM_DELLINK, RTM_DELROUTE and
 * RTM_DELNEIGH, filtered in the kernel: the RTM_NEW* echoes of our own batches (and of anyone else's additions)
 * never take buffer space.
 *
 * When notifications are lost (the buffer overran while the event loop was busy, or the socket broke and had to be
 * reopened) the listener emits one `{ type: 'overrun' }`, which makes the reconciler re-read the kernel: a full
 * resync covers whatever was missed, so losing events costs a dump, never correctness.
 */
import type { DatapathEvent } from '../datapath.js';
import { RTM_DELLINK, RTM_DELNEIGH, RTM_DELROUTE, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_LINK, RTNLGRP_NEIGH } from './constants.js';
import { decodeLink } from './link.js';
import { decodeMessages } from './message.js';
import { openNativeNetlinkSocket, type NetlinkSocketInfo, type NetlinkTransport, type OpenNetlinkSocket } from './native-socket.js';
import { decodeNeighbour } from './neighbour.js';
import { decodeRoute } from './route.js';

/**
 * Asked-for receive buffer of the notification socket: 32 MiB, which the kernel counts as 64 MiB of skbs. A
 * deletion notice costs about 830 bytes of that (test/real/netlink-overrun.test.ts measures it: 80,659 notices
 * fit), so the socket holds some 80,000 deletions unread: the echoes of deleting the whole datapath of 25,000 peers
 * (three entries each) in one go, or one to two seconds of `ip -batch` deleting routes as fast as it can
 * (40,000-55,000 a second on the test machine), which covers the pauses flanneld itself can cause (a garbage
 * collection, parsing a 25,000-lease listing). A longer stall overruns it, and that is handled (a resync), not
 * prevented. The memory is the kernel's and only held while notices wait to be read; systemd-networkd asks for
 * 128 MiB on its rtnetlink socket for the same reason. SO_RCVBUFFORCE (flanneld runs with CAP_NET_ADMIN) goes past
 * net.core.rmem_max, 208 KiB by default, which would hold only some 500 notices; without the capability the kernel
 * caps the size at rmem_max.
 */
export const NOTIFICATION_RCVBUF = 32 * 1024 * 1024;
/** We never send on this socket but a subscription message; the kernel minimum would do. */
const NOTIFICATION_SNDBUF = 32 * 1024;
/**
 * Events waiting for the consumer beyond this are not queued: one overrun stands for them (the consumer resyncs),
 * so a consumer slower than the kernel costs bounded memory rather than a queue of every notice.
 */
export const MAX_QUEUED_EVENTS = 10_000;
/** A socket that broke is reopened after this, not at once, so a persistent failure cannot spin. */
const REOPEN_DELAY_MS = 1000;

export const NOTIFICATION_GROUPS: readonly number[] = [RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE];
export const NOTIFICATION_TYPES: readonly number[] = [RTM_DELLINK, RTM_DELROUTE, RTM_DELNEIGH];

/** The events in a run of notification messages (see NetlinkReceiver.data); anything else is skipped. */
export function eventsFromMessages(buf: Buffer): DatapathEvent[] {
  const out: DatapathEvent[] = [];
  for (const msg of decodeMessages(buf)) {
    if (msg.type === RTM_DELLINK) {
      const link = decodeLink(msg);
      if (link) out.push({ type: 'link-deleted', index: link.index, name: link.name });
    } else if (msg.type === RTM_DELROUTE || msg.type === RTM_DELNEIGH) {
      const entry = decodeRoute(msg) ?? decodeNeighbour(msg, true);
      if (entry) out.push({ type: 'entry-deleted', entry });
    }
  }
  return out;
}

/** Where events go: an AsyncQueue or anything with its push and size. */
export interface EventQueue {
  push(event: DatapathEvent): void;
  readonly size: number;
}

/** Counters for the whole datapath (every listener adds to the same object), for metrics. */
export interface NotificationStats {
  /** Times the kernel dropped notices for us: each led to an overrun event. */
  overruns: number;
  /** Events not queued because the consumer was MAX_QUEUED_EVENTS behind (an overrun event stood for them). */
  eventsDropped: number;
  /** Notification sockets that broke (an error other than ENOBUFS) and were opened again. */
  reopens: number;
}

export const newNotificationStats = (): NotificationStats => ({ overruns: 0, eventsDropped: 0, reopens: 0 });

/**
 * Puts events on the queue, standing one overrun for any number of lost ones. An overrun we pushed is still
 * unread exactly while the queue is non-empty (nothing is queued behind it), and the resync it triggers reads the
 * kernel after it is read, so until then further overruns, and events that do not fit, need no entry of their own.
 */
export class EventSink {
  private overrunQueued = false;

  constructor(
    private readonly queue: EventQueue,
    private readonly stats: NotificationStats,
    private readonly limit = MAX_QUEUED_EVENTS,
  ) {}

  event(event: DatapathEvent): void {
    if (this.coveredByQueuedOverrun()) {
      this.stats.eventsDropped++;
      return;
    }
    if (this.queue.size >= this.limit) {
      this.stats.eventsDropped++;
      this.pushOverrun();
      return;
    }
    this.queue.push(event);
  }

  overrun(): void {
    if (!this.coveredByQueuedOverrun()) this.pushOverrun();
  }

  private coveredByQueuedOverrun(): boolean {
    if (this.overrunQueued && this.queue.size === 0) this.overrunQueued = false;
    return this.overrunQueued;
  }

  private pushOverrun(): void {
    this.queue.push({ type: 'overrun' });
    this.overrunQueued = true;
  }
}

export interface ListenerTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: ListenerTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** One events() subscription: its socket, reopened (with an overrun) if it ever breaks, until close(). */
export class NotificationListener {
  private socket: NetlinkTransport | undefined;
  private reopenTimer: unknown;
  private closed = false;
  private readonly sink: EventSink;

  constructor(
    queue: EventQueue,
    private readonly stats: NotificationStats,
    private readonly open: OpenNetlinkSocket = openNativeNetlinkSocket,
    private readonly timers: ListenerTimers = realTimers,
  ) {
    this.sink = new EventSink(queue, stats);
    // Opened at once, so a failure to subscribe is the caller's error, as before.
    this.socket = this.connect();
  }

  info(): NetlinkSocketInfo | undefined {
    return this.socket?.info();
  }

  close(): void {
    this.closed = true;
    if (this.reopenTimer !== undefined) this.timers.clearTimeout(this.reopenTimer);
    this.reopenTimer = undefined;
    this.socket?.close();
    this.socket = undefined;
  }

  private connect(): NetlinkTransport {
    return this.open(
      { groups: NOTIFICATION_GROUPS, acceptTypes: NOTIFICATION_TYPES, rcvbuf: NOTIFICATION_RCVBUF, sndbuf: NOTIFICATION_SNDBUF },
      {
        data: (buf) => {
          for (const event of eventsFromMessages(buf)) this.sink.event(event);
        },
        overrun: (count) => {
          this.stats.overruns += count;
          this.sink.overrun();
        },
        failed: () => {
          this.socket = undefined;
          this.scheduleReopen();
        },
      },
    );
  }

  /** Notices sent while no socket listened are lost: the overrun comes once listening again, so the resync it triggers sees them. */
  private scheduleReopen(): void {
    if (this.closed || this.reopenTimer !== undefined) return;
    this.reopenTimer = this.timers.setTimeout(() => {
      this.reopenTimer = undefined;
      if (this.closed) return;
      try {
        this.socket = this.connect();
      } catch {
        this.scheduleReopen();
        return;
      }
      this.stats.reopens++;
      this.sink.overrun();
    }, REOPEN_DELAY_MS);
  }
}
