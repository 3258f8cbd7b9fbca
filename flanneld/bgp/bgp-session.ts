/**
 * One configured BGP peer for the life of the daemon: connects, runs a connection (bgp-connection.ts) until it ends,
 * and connects again after a backoff (1 s doubling to 60 s, from 1 s again once a session was established), so a
 * router that is away is retried, never fatal. Its status (state, since when, prefixes the peer holds, the last
 * error) is what `flanneld status` and the metrics show. When the daemon stops, the prefixes are withdrawn with a
 * Cease, or, with graceful restart, the connection is just closed so the router keeps them while flanneld comes back.
 */
import type { Logger } from 'pino';
import { formatIp, type Family, type IpAddress } from '../ip/address.js';
import { Backoff } from '../runtime/backoff.js';
import type { Clock } from '../runtime/clock.js';
import { errorMessage } from '../runtime/errors.js';
import type { Random } from '../runtime/random.js';
import { BgpConnection, type BgpTransport, type ConnectionEnd, type ConnectionState } from './bgp-connection.js';
import type { OpenMessage } from './bgp-open.js';
import type { Announcement } from './bgp-update.js';

export interface BgpPeer {
  readonly address: IpAddress;
  readonly remoteAs: number;
  /** TCP-MD5 (RFC 2385) key shared with the router. */
  readonly password?: string;
  /** The IP TTL of our packets to a router more than one hop away (eBGP multihop). */
  readonly multihopTtl?: number;
}

/** Opens a TCP connection to the peer's port 179 from `local` (bgp-tcp.ts); rejects when it cannot. */
export type BgpConnector = (peer: BgpPeer, local: IpAddress | undefined, signal: AbortSignal) => Promise<BgpTransport>;

export const SESSION_STATES = ['idle', 'connect', 'open-sent', 'open-confirm', 'established'] as const;
export type SessionState = (typeof SESSION_STATES)[number];

export interface SessionStatus {
  readonly peer: string;
  readonly remoteAs: number;
  readonly state: SessionState;
  /** When the session was last established (ms since the epoch), while it is. */
  readonly establishedAt?: number;
  /** Prefixes the peer holds from us. */
  readonly prefixes: readonly string[];
  readonly lastError?: string;
  /** Times the session has been established since the daemon started. */
  readonly establishments: number;
}

export interface BgpSessionOptions {
  readonly peer: BgpPeer;
  readonly localAs: number;
  readonly routerId: IpAddress;
  /** This node's address of the peer's family: the connection's source and our next hop. */
  readonly localAddress?: IpAddress | undefined;
  readonly holdTimeSec: number;
  /** The families this node announces (its lease's). */
  readonly families: readonly Family[];
  /** Graceful restart time to offer; undefined turns graceful restart off. */
  readonly gracefulRestartSec?: number | undefined;
  readonly connect: BgpConnector;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly onStatus?: ((status: SessionStatus) => void) | undefined;
}

const RETRY = { initialMs: 1000, maxMs: 60_000, jitter: 0.1 };
/** How long a stop waits for the withdrawals and the Cease to be written before the socket is dropped. */
const STOP_GRACE_MS = 2000;

export class BgpSession {
  private wanted: ReadonlyMap<string, Announcement> = new Map();
  private connection: BgpConnection | undefined;
  private status: SessionStatus;
  private restarted: boolean;

  constructor(private readonly options: BgpSessionOptions) {
    this.status = { peer: formatIp(options.peer.address), remoteAs: options.peer.remoteAs, state: 'idle', prefixes: [], establishments: 0 };
    // Every start may be a restart for the router: the first OPEN says so, with our forwarding preserved.
    this.restarted = options.gracefulRestartSec !== undefined;
  }

  current(): SessionStatus {
    return this.status;
  }

  setWanted(wanted: ReadonlyMap<string, Announcement>): void {
    this.wanted = wanted;
    this.connection?.announcementsChanged();
  }

  /** Until `signal` aborts; then withdraws or keeps the routes (graceful restart) and resolves. */
  async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(RETRY, this.options.random);
    while (!signal.aborted) {
      const end = await this.attempt(signal).catch((err: unknown) => ({ reason: errorMessage(err), established: false }) as ConnectionEnd);
      if (end.established) backoff.reset();
      // A router away for a day fails the same way every minute: the first failure of a kind is worth a line.
      const repeated = !end.established && this.status.lastError === end.reason;
      this.update({ state: 'idle', prefixes: [], lastError: end.reason, establishedAt: undefined });
      if (signal.aborted) return;
      const delayMs = backoff.next();
      this.options.log[repeated ? 'debug' : 'warn']({ peer: this.status.peer, reason: end.reason, retryInSec: Math.round(delayMs / 1000) }, 'BGP session down; retrying');
      await this.options.clock.sleep(delayMs, signal).catch(() => undefined);
    }
  }

  private async attempt(signal: AbortSignal): Promise<ConnectionEnd> {
    this.update({ state: 'connect' });
    const transport = await this.options.connect(this.options.peer, this.options.localAddress, signal);
    const connection = new BgpConnection(transport, {
      localAs: this.options.localAs,
      remoteAs: this.options.peer.remoteAs,
      open: this.ourOpen(),
      clock: this.options.clock,
      log: this.options.log,
      wanted: () => this.wanted,
      onState: (state, peerOpen) => this.onConnectionState(state, peerOpen),
      onAnnounced: (prefixes) => this.update({ prefixes }),
    });
    this.connection = connection;
    const onAbort = (): void => connection.stop(this.options.gracefulRestartSec === undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      return await this.withinGrace(connection.run(), signal);
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.connection = undefined;
    }
  }

  /** A connection told to stop gets STOP_GRACE_MS to write its goodbye; after that the caller moves on. */
  private withinGrace(run: Promise<ConnectionEnd>, signal: AbortSignal): Promise<ConnectionEnd> {
    const timeout = new Promise<ConnectionEnd>((resolve) => {
      const arm = (): void => {
        void this.options.clock.sleep(STOP_GRACE_MS, new AbortController().signal).then(() => resolve({ reason: 'stopped', established: false }));
      };
      if (signal.aborted) arm();
      else signal.addEventListener('abort', arm, { once: true });
    });
    return Promise.race([run, timeout]);
  }

  private ourOpen(): OpenMessage {
    const gr = this.options.gracefulRestartSec;
    return {
      asn: this.options.localAs,
      holdTimeSec: this.options.holdTimeSec,
      routerId: this.options.routerId,
      families: this.options.families,
      fourOctetAs: true,
      routeRefresh: true,
      ...(gr !== undefined
        ? { gracefulRestart: { restartTimeSec: gr, restarting: this.restarted, families: this.options.families, preserved: this.options.families } }
        : {}),
    };
  }

  private onConnectionState(state: ConnectionState, peerOpen: OpenMessage | undefined): void {
    if (state !== 'established') {
      this.update({ state });
      return;
    }
    this.restarted = false;
    this.options.log.info({ peer: this.status.peer, remoteAs: peerOpen?.asn, holdTimeSec: peerOpen?.holdTimeSec }, 'BGP session established');
    this.update({ state, establishedAt: this.options.clock.now(), establishments: this.status.establishments + 1, lastError: undefined });
  }

  private update(change: Partial<{ -readonly [K in keyof SessionStatus]: SessionStatus[K] | undefined }>): void {
    const next: Record<string, unknown> = { ...this.status, ...change };
    for (const key of Object.keys(next)) if (next[key] === undefined) delete next[key];
    this.status = next as unknown as SessionStatus;
    this.options.onStatus?.(this.status);
  }
}
