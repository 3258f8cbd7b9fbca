/**
 * ICMP echo as a port (Pinger) and its adapter over raw-socket. A raw ICMP socket receives a copy of every ICMP
 * packet delivered to its network namespace (other nodes' probes of us, errors, our own requests on loopback,
 * other pingers' replies): a kernel type filter keeps out all but echo replies, and those are matched on
 * identifier, sequence and source, since other pingers' replies still get through.
 */
import { randomInt } from 'node:crypto';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { formatIp, parseIPv6, type Family, type IpAddress } from '../ip/address.js';
import {
  buildEchoRequest,
  ICMP_ECHO_REPLY,
  ICMPV6_ECHO_REPLY,
  parseIcmpv4EchoReply,
  parseIcmpv6EchoReply,
  type EchoReply,
} from './icmp.js';

export interface Pinger {
  /**
   * Resolves with the round-trip time in ms, or undefined when no reply came within `timeoutMs` (or the request
   * could not leave: no route, too many in flight). Rejects only when this host cannot ping at all (e.g. no
   * CAP_NET_RAW), never because of the peer.
   */
  ping(address: IpAddress, timeoutMs: number): Promise<number | undefined>;
  /** Resolves every ping in flight with undefined and releases the sockets. */
  close(): void;
}

export interface PingerStats {
  readonly sent: number;
  readonly replies: number;
  readonly timeouts: number;
  /** sendto failed (e.g. ENETUNREACH): counted as no reply. */
  readonly sendErrors: number;
  /** Refused at once because `maxInFlight` pings were already waiting. */
  readonly overflows: number;
  /** ICMP packets received that were not a reply to one of our pings in flight. */
  readonly ignored: number;
  readonly receiveErrors: number;
}

export interface RawSocketPinger extends Pinger {
  readonly identifier: number;
  stats(): PingerStats;
}

export interface RawSocketPingerOptions {
  /** ICMP identifier of every request (16 bits); random by default so two pingers in one namespace differ. */
  readonly identifier?: number;
  /**
   * Default 1024: peer probes spread 5000 peers over 30 s with a 2 s timeout keep ~333 in flight when every peer
   * is down, and refusing those would report a partition as "too many pings" instead of as unreachable peers.
   */
  readonly maxInFlight?: number;
  /** Echo payload size; 16 bytes as a probe needs nothing but the header. */
  readonly payloadBytes?: number;
  /**
   * SO_RCVBUF asked for (the kernel caps it at net.core.rmem_max). raw-socket reads one datagram per readable
   * event, so a burst of replies waits in this buffer, and each reply costs ~1 KiB of it (skb overhead).
   */
  readonly receiveBufferBytes?: number;
}

const DEFAULT_MAX_IN_FLIGHT = 1024;
const DEFAULT_PAYLOAD_BYTES = 16;
const DEFAULT_RECEIVE_BUFFER_BYTES = 1024 * 1024;
const SEQUENCE_SPACE = 0x10000;

// Linux kernel-side type filters for raw ICMP sockets (linux/icmp.h, linux/icmpv6.h), which raw-socket does not
// name. A set bit drops that ICMP type before it is queued to the socket.
const SOL_RAW = 255;
const ICMP_FILTER = 1;
const IPPROTO_ICMPV6 = 58;
const ICMP6_FILTER = 1;

// ---- the part of raw-socket 1.8.1 used here (it ships no type declarations) ----

interface RawSocket {
  on(event: 'message', listener: (buffer: Buffer, source: string) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  send(
    buffer: Buffer,
    offset: number,
    length: number,
    address: string,
    beforeCallback: () => void,
    afterCallback: (error: Error | null, bytes: number) => void,
  ): unknown;
  setOption(level: number, option: number, value: number): void;
  setOption(level: number, option: number, value: Buffer, length: number): void;
  close(): unknown;
}

interface RawSocketModule {
  createSocket(options: { addressFamily: number; protocol: number; bufferSize?: number }): RawSocket;
  readonly AddressFamily: { readonly IPv4: number; readonly IPv6: number };
  readonly Protocol: { readonly ICMP: number; readonly ICMPv6: number };
  readonly SocketLevel: { readonly SOL_SOCKET: number };
  readonly SocketOption: { readonly SO_RCVBUF: number };
}

interface InFlight {
  readonly family: Family;
  readonly address: bigint;
  /** performance.now() just before sendto; re-stamped there because raw-socket queues sends until writable. */
  sentAt: number;
  readonly timer: NodeJS.Timeout;
  readonly resolve: (rttMs: number | undefined) => void;
}

interface Counters {
  sent: number;
  replies: number;
  timeouts: number;
  sendErrors: number;
  overflows: number;
  ignored: number;
  receiveErrors: number;
}

/** Opens nothing until the first ping of a family; then one raw socket per family, shared by every ping. */
export function createRawSocketPinger(opts: RawSocketPingerOptions = {}): RawSocketPinger {
  const identifier = opts.identifier ?? randomInt(0, 0x10000);
  if (!Number.isInteger(identifier) || identifier < 0 || identifier > 0xffff) {
    throw new RangeError(`identifier must be a 16-bit unsigned integer, got ${identifier}`);
  }
  const maxInFlight = Math.min(opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT, SEQUENCE_SPACE - 1);
  const payload = Buffer.alloc(opts.payloadBytes ?? DEFAULT_PAYLOAD_BYTES, 0x66);
  const receiveBufferBytes = opts.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES;

  let raw: RawSocketModule | undefined;
  const sockets = new Map<Family, RawSocket>();
  // Keyed by sequence alone: the identifier is the same for all of them, and sequences are shared by both
  // families so one map serves both.
  const inFlight = new Map<number, InFlight>();
  let nextSequence = 0;
  let closed = false;
  const counters: Counters = { sent: 0, replies: 0, timeouts: 0, sendErrors: 0, overflows: 0, ignored: 0, receiveErrors: 0 };

  /** `only`: settle just that ping, not a later one that reused its sequence. */
  const settle = (sequence: number, rttMs: number | undefined, only?: InFlight): boolean => {
    const entry = inFlight.get(sequence);
    if (!entry || (only !== undefined && entry !== only)) return false;
    inFlight.delete(sequence);
    clearTimeout(entry.timer);
    entry.resolve(rttMs);
    return true;
  };

  const onReply = (family: Family, reply: EchoReply | undefined): void => {
    const entry = reply && reply.identifier === identifier ? inFlight.get(reply.sequence) : undefined;
    // The source check stops a stale reply (an earlier ping's sequence, reused after its timeout) to another
    // address from being credited to the new ping.
    if (!reply || !entry || entry.family !== family || entry.address !== reply.source.value) {
      counters.ignored++;
      return;
    }
    counters.replies++;
    settle(reply.sequence, performance.now() - entry.sentAt);
  };

  const socketFor = (family: Family): RawSocket => {
    const existing = sockets.get(family);
    if (existing) return existing;
    raw ??= createRequire(import.meta.url)('raw-socket') as RawSocketModule;
    const socket = raw.createSocket({
      addressFamily: family === 4 ? raw.AddressFamily.IPv4 : raw.AddressFamily.IPv6,
      protocol: family === 4 ? raw.Protocol.ICMP : raw.Protocol.ICMPv6,
    });
    try {
      socket.setOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_RCVBUF, receiveBufferBytes);
    } catch {
      // The default buffer still works; only large bursts of replies may be dropped.
    }
    try {
      acceptOnlyEchoReplies(socket, family);
    } catch {
      // Unfiltered still works (every packet is parsed and dropped here); it only costs more wake-ups.
    }
    // raw-socket reuses one receive buffer for every datagram, so a message must be parsed before returning.
    socket.on('message', (buffer, source) => {
      if (family === 4) {
        onReply(4, parseIcmpv4EchoReply(buffer));
      } else {
        const from = parseIPv6(source.replace(/%.*$/, ''));
        onReply(6, from ? parseIcmpv6EchoReply(buffer, from) : undefined);
      }
    });
    // A failed recvfrom (e.g. EAGAIN after the kernel dropped a corrupt ICMPv6 message) arrives here without a
    // close; without a listener the EventEmitter would throw it out of the event loop.
    socket.on('error', () => {
      counters.receiveErrors++;
    });
    // raw-socket closes the socket itself after a poll error: forget it so the next ping opens a new one, and end
    // the pings that can no longer be answered.
    socket.on('close', () => {
      if (sockets.get(family) !== socket) return;
      sockets.delete(family);
      for (const [sequence, entry] of inFlight) if (entry.family === family) settle(sequence, undefined);
    });
    sockets.set(family, socket);
    return socket;
  };

  const allocateSequence = (): number => {
    // Bounded: fewer than SEQUENCE_SPACE sequences are ever in flight, so a free one is found within that many.
    for (let i = 0; i < SEQUENCE_SPACE; i++) {
      const sequence = nextSequence;
      nextSequence = (nextSequence + 1) % SEQUENCE_SPACE;
      if (!inFlight.has(sequence)) return sequence;
    }
    throw new Error('no free ICMP sequence number');
  };

  return {
    identifier,
    ping(address, timeoutMs) {
      if (closed) return Promise.resolve(undefined);
      if (inFlight.size >= maxInFlight) {
        counters.overflows++;
        return Promise.resolve(undefined);
      }
      let socket: RawSocket;
      try {
        socket = socketFor(address.family);
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
      const sequence = allocateSequence();
      const request = buildEchoRequest(address.family, { identifier, sequence, payload });
      return new Promise<number | undefined>((resolve) => {
        const timer = setTimeout(() => {
          if (settle(sequence, undefined, entry)) counters.timeouts++;
        }, Math.max(0, timeoutMs));
        const entry: InFlight = { family: address.family, address: address.value, sentAt: performance.now(), timer, resolve };
        inFlight.set(sequence, entry);
        counters.sent++;
        socket.send(
          request,
          0,
          request.length,
          formatIp(address),
          () => {
            entry.sentAt = performance.now();
          },
          (error) => {
            if (error && settle(sequence, undefined, entry)) counters.sendErrors++;
          },
        );
      });
    },
    close() {
      if (closed) return;
      closed = true;
      for (const sequence of [...inFlight.keys()]) settle(sequence, undefined);
      const open = [...sockets.values()];
      sockets.clear();
      for (const socket of open) socket.close();
    },
    stats: () => ({ ...counters }),
  };
}

/**
 * Without a filter the socket gets a copy of every ICMP packet delivered to the namespace, and the biggest share
 * in a cluster is the echo requests of every other node's probes: each would wake this process for nothing.
 */
function acceptOnlyEchoReplies(socket: RawSocket, family: Family): void {
  if (family === 4) {
    // struct icmp_filter { __u32 data; }: bit n drops type n; keep only type 0 (echo reply).
    // >>> 0: raw-socket takes only an unsigned 32-bit number, and ^ yields a signed one.
    socket.setOption(SOL_RAW, ICMP_FILTER, (0xffffffff ^ (1 << ICMP_ECHO_REPLY)) >>> 0);
    return;
  }
  // struct icmp6_filter { __u32 data[8]; } in host byte order (hence a Uint32Array): keep only type 129.
  const words = new Uint32Array(8).fill(0xffffffff);
  words[ICMPV6_ECHO_REPLY >> 5] = ~(1 << (ICMPV6_ECHO_REPLY & 31));
  const filter = Buffer.from(words.buffer);
  socket.setOption(IPPROTO_ICMPV6, ICMP6_FILTER, filter, filter.length);
}
