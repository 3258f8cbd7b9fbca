/**
 * Our netlink socket (native/netlink/flannel_netlink.c): one AF_NETLINK socket read from the event loop, whose
 * overruns are reported as counts instead of killing the process.
 *
 * Why our own addon: Node has no netlink sockets, and the `netlink` npm package we used aborted flanneld when a
 * socket overran (ENOBUFS): libuv reports the pending socket error as a poll error, the package's poll handler
 * builds its JavaScript error from a NULL string, and node-addon-api throws a C++ exception out of a libuv callback,
 * which is std::terminate (exit 134). That happens inside the package's native code, so no JavaScript handler can
 * catch it, and its API cannot set NETLINK_NO_ENOBUFS or attach a filter to avoid it; its last release is from 2020
 * and no other npm package does rtnetlink. The addon reuses the udp backend's build path (scripts/build-native.mjs).
 */
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { FlannelError } from '../../../flanneld/runtime/errors.js';
import { lazyAddon } from '../../../flanneld/runtime/native-addon.js';

export interface NetlinkSocketOptions {
  /** NETLINK_ROUTE (0) unless said otherwise. */
  readonly protocol?: number;
  /** Multicast groups to join (RTNLGRP_*). */
  readonly groups?: readonly number[];
  /** Asked-for buffer sizes in bytes; the kernel doubles them for its bookkeeping (see NetlinkSocketInfo). */
  readonly rcvbuf?: number;
  readonly sndbuf?: number;
  /**
   * Keep only messages of these nlmsg_types, dropped in the kernel before they take buffer space (a socket filter
   * on the first header, so for notification sockets only: they carry one message per datagram).
   */
  readonly acceptTypes?: readonly number[];
  /** NETLINK_CAP_ACK: error acks carry the failed request's header only, not its whole body. */
  readonly capAck?: boolean;
}

export interface NetlinkSocketInfo {
  /** SO_RCVBUF as the kernel reports it: twice what was asked for, the other half being its skb overhead. */
  readonly rcvbuf: number;
  readonly sndbuf: number;
  /** Whether SO_RCVBUFFORCE took (CAP_NET_ADMIN); otherwise SO_RCVBUF was used, capped by net.core.rmem_max. */
  readonly rcvbufForced: boolean;
  readonly portId: number;
}

/** What a socket hands its owner, always on the event loop and never by throwing. */
export interface NetlinkReceiver {
  /** One or more datagrams, each padded to 4 bytes, so decodeMessages() reads them as one stream. */
  data(buf: Buffer): void;
  /**
   * The kernel dropped messages meant for us (ENOBUFS, or a datagram cut short), `count` times since the last call.
   * Called once the socket's queue has been read empty, after the data read before it: the kernel drops every
   * message while a backlog from an overrun remains, so anything the owner reads from the kernel now (a resync)
   * postdates the last lost message.
   */
  overrun(count: number): void;
  /** The socket stopped working (errno name); it is already closed. */
  failed(errno: string): void;
}

export interface NetlinkTransport {
  /** Hands the message(s) to the kernel; throws NetlinkSendError on failure. */
  send(buf: Buffer): void;
  info(): NetlinkSocketInfo;
  close(): void;
}

export type OpenNetlinkSocket = (opts: NetlinkSocketOptions, receiver: NetlinkReceiver) => NetlinkTransport;

export class NetlinkSendError extends FlannelError {
  override readonly name = 'NetlinkSendError';
  constructor(readonly errno: string) {
    super('ERR_EXEC', `netlink send: ${errno}`);
  }
}

interface NativeAddon {
  open(
    opts: { protocol: number; groups: number[]; rcvbuf: number; sndbuf: number; acceptTypes: number[]; capAck: number },
    onData: (data: Buffer | null, overruns: number, fatalErrno: number) => void,
  ): object;
  send(handle: object, buf: Buffer): number;
  info(handle: object): NetlinkSocketInfo;
  close(handle: object): void;
}

// dist/backends/datapath/netlink/ in the build, backends/datapath/netlink/ under vitest: the addon is built into
// dist/native/ either way.
const ADDON_CANDIDATES = ['../../../native/flannel_netlink.node', '../../../dist/native/flannel_netlink.node'].map((rel) =>
  fileURLToPath(new URL(rel, import.meta.url)),
);

const load = lazyAddon<NativeAddon>(ADDON_CANDIDATES, 'the netlink native addon');

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, num]) => [num, name]));
/** A positive errno by its name (ENOBUFS), as Node's own errors give it. */
export const errnoName = (code: number): string => errnoNames.get(code) ?? `errno ${code}`;

/** Opens a socket through the addon (loaded on first use); throws with the errno when the kernel refuses. */
export const openNativeNetlinkSocket: OpenNetlinkSocket = (opts, receiver) => {
  const native = load();
  let closed = false;
  const handle = native.open(
    {
      protocol: opts.protocol ?? 0,
      groups: [...(opts.groups ?? [])],
      rcvbuf: opts.rcvbuf ?? 0,
      sndbuf: opts.sndbuf ?? 0,
      acceptTypes: [...(opts.acceptTypes ?? [])],
      capAck: opts.capAck ? 1 : 0,
    },
    (data, overruns, fatal) => {
      // Data first: anything read before the overrun is still good (a request's ack, a deletion).
      if (data && !closed) receiver.data(data);
      if (overruns > 0 && !closed) receiver.overrun(overruns);
      if (fatal !== 0 && !closed) {
        closed = true;
        native.close(handle);
        receiver.failed(errnoName(fatal));
      }
    },
  );
  return {
    send(buf) {
      const err = closed ? -1 : native.send(handle, buf);
      if (err !== 0) throw new NetlinkSendError(err < 0 ? 'EBADF' : errnoName(err));
    },
    info: () => native.info(handle),
    close() {
      if (closed) return;
      closed = true;
      native.close(handle);
    },
  };
};
