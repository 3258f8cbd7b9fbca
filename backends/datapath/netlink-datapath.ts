/**
 * Datapath over rtnetlink: one request socket for gets, dumps and batched changes, and one multicast socket per
 * events() call. Runs in the caller's network namespace (flanneld is started inside the host's namespace), so it
 * never switches namespaces itself.
 */
import { RawNetlinkSocket } from 'netlink';
import { containsIp, formatCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import { sameIp, type Family } from '../../flanneld/ip/address.js';
import { AsyncQueue } from '../../flanneld/runtime/async-queue.js';
import type {
  AddressInfo, ApplyReport, Datapath, DatapathChange, DatapathEntry, DatapathEvent, DatapathScope, LinkInfo,
  VxlanLinkSpec,
} from './datapath.js';
import { inScope } from '../entry-diff.js';
import { describeEntry } from './entry-key.js';
import { addAddress, decodeAddress, deleteAddress, dumpAddresses } from './netlink/address.js';
import {
  RTM_DELLINK, RTM_DELNEIGH, RTM_DELROUTE, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_LINK, RTNLGRP_NEIGH,
} from './netlink/constants.js';
import { createVxlan, decodeLink, deleteLink, getLinkByName, setLinkMtuUp, setLinkUp } from './netlink/link.js';
import { decodeMessages } from './netlink/message.js';
import { decodeNeighbour, deleteFdb, deleteNeigh, dumpNeighbours, replaceFdb, replaceNeigh } from './netlink/neighbour.js';
import { addBlackholeRoute, decodeRoute, deleteRoute, dumpRoutes, replaceRoute } from './netlink/route.js';
import { NetlinkRequestError, RtnlSocket, type MessageBuilder } from './netlink/socket.js';

const VXLAN_DEFAULT_PORT = 8472;

export class NetlinkDatapath implements Datapath {
  private readonly listeners = new Set<EventListenerSocket>();

  constructor(private readonly sock: RtnlSocket = new RtnlSocket()) {}

  close(): void {
    this.sock.close();
    for (const l of this.listeners) {
      l.socket?.close();
      l.queue.end();
    }
    this.listeners.clear();
  }

  async link(name: string): Promise<LinkInfo | undefined> {
    try {
      const [msg] = await this.sock.request(getLinkByName(name), `get link ${name}`);
      return msg ? decodeLink(msg) : undefined;
    } catch (err) {
      if (err instanceof NetlinkRequestError && err.errno === 'ENODEV') return undefined;
      throw err;
    }
  }

  async ensureVxlan(spec: VxlanLinkSpec): Promise<LinkInfo> {
    const existing = await this.link(spec.name);
    if (existing && !vxlanMatches(existing, spec)) {
      await this.sock.request(deleteLink(existing.index), `delete link ${spec.name}`);
    }
    if (!existing || !vxlanMatches(existing, spec)) {
      await this.sock.request(createVxlan(spec), `create vxlan ${spec.name}`);
    }
    const created = await this.link(spec.name);
    if (!created) throw new NetlinkRequestError('ENODEV', `vxlan ${spec.name} vanished after creation`);
    if (!created.up) await this.sock.request(setLinkUp(created.index), `set ${spec.name} up`);
    return { ...created, up: true };
  }

  async deleteLink(index: number): Promise<void> {
    await this.sock.request(deleteLink(index), `delete link #${index}`);
  }

  async configureLink(index: number, mtu: number): Promise<void> {
    await this.sock.request(setLinkMtuUp(index, mtu), `set link #${index} mtu ${mtu} up`);
  }

  async addresses(linkIndex: number): Promise<readonly AddressInfo[]> {
    const msgs = await this.sock.dump(dumpAddresses(), 'dump addresses');
    return msgs.map(decodeAddress).filter((a): a is AddressInfo => a !== undefined && a.linkIndex === linkIndex);
  }

  async ensureAddress(linkIndex: number, wanted: AddressInfo, within: IpNet): Promise<void> {
    const current = await this.addresses(linkIndex);
    let present = false;
    for (const a of current) {
      if (sameIp(a.address, wanted.address) && a.cidr.prefixLen === wanted.cidr.prefixLen) present = true;
      else if (containsIp(within, a.address)) await this.sock.request(deleteAddress(a), `delete stale address on #${linkIndex}`);
    }
    if (!present) await this.sock.request(addAddress(wanted), `add address on #${linkIndex}`);
  }

  async ensureBlackhole(dst: IpNet): Promise<void> {
    try {
      await this.sock.request(addBlackholeRoute(dst), `add blackhole route ${formatCidr(dst)}`);
    } catch (err) {
      if (!(err instanceof NetlinkRequestError && err.errno === 'EEXIST')) throw err;
    }
  }

  async apply(changes: readonly DatapathChange[]): Promise<ApplyReport> {
    const failed = await this.quietly(changes.length, () => this.sock.batch(changes.map(builderFor)));
    const failures = [...failed].map(([i, errno]) => {
      const change = changes[i] as DatapathChange;
      return { change, errno, message: `${change.op} ${describeEntry(change.entry)}: ${errno}` };
    });
    return { applied: changes.length - failures.length, failures };
  }

  async dump(scope: DatapathScope): Promise<readonly DatapathEntry[]> {
    const families = [...new Set(scope.routeNetworks.map((n) => n.family))];
    const wantNeigh = scope.neighLinks.length > 0;
    const requests: [MessageBuilder, string][] = [
      ...families.map((f): [MessageBuilder, string] => [dumpRoutes(f), `dump IPv${f} routes`]),
      ...(wantNeigh ? families.map((f: Family): [MessageBuilder, string] => [dumpNeighbours(f), `dump IPv${f} neighbours`]) : []),
      ...(wantNeigh ? [[dumpNeighbours('bridge'), 'dump fdb'] as [MessageBuilder, string]] : []),
    ];
    // A netlink socket runs one dump at a time (EBUSY otherwise).
    const messages = [];
    for (const [build, what] of requests) messages.push(...(await this.sock.dump(build, what)));
    const out: DatapathEntry[] = [];
    for (const msg of messages) {
      const entry = decodeRoute(msg) ?? decodeNeighbour(msg);
      if (entry && inScope(entry, scope)) out.push(entry);
    }
    return out;
  }

  events(signal: AbortSignal): AsyncIterable<DatapathEvent> {
    const queue = new AsyncQueue<DatapathEvent>();
    const listener: EventListenerSocket = { queue, socket: openEventSocket(queue) };
    this.listeners.add(listener);
    const stop = (): void => {
      this.listeners.delete(listener);
      queue.end();
      listener.socket?.close();
      listener.socket = undefined;
    };
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
    return queue;
  }

  /**
   * Our own bursts would flood the notification sockets with echoes of what we just wrote, and the native binding
   * aborts the process when a socket overruns (it builds the poll error with a null string). So for a large batch
   * the listeners close their sockets and reopen them afterwards; a deletion made by someone else inside that
   * window is caught by the next periodic resync.
   */
  private async quietly<T>(size: number, fn: () => Promise<T>): Promise<T> {
    if (size < QUIET_BATCH || this.listeners.size === 0) return fn();
    for (const l of this.listeners) {
      l.socket?.close();
      l.socket = undefined;
    }
    try {
      return await fn();
    } finally {
      for (const l of this.listeners) l.socket = openEventSocket(l.queue);
    }
  }
}

/** Batches at least this large pause the notification sockets (see quietly()). */
const QUIET_BATCH = 256;

interface EventListenerSocket {
  readonly queue: AsyncQueue<DatapathEvent>;
  socket: RawNetlinkSocket | undefined;
}

function openEventSocket(queue: AsyncQueue<DatapathEvent>): RawNetlinkSocket {
  const raw = new RawNetlinkSocket(0, { recvBufferSize: 4 * 1024 * 1024, sendBufferSize: 32 * 1024 });
  for (const group of [RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE]) raw.addMembership(group);
  raw.on('message', (buf: Buffer) => {
    for (const msg of decodeMessages(buf)) {
      if (msg.type === RTM_DELLINK) {
        const link = decodeLink(msg);
        if (link) queue.push({ type: 'link-deleted', index: link.index, name: link.name });
      } else if (msg.type === RTM_DELROUTE || msg.type === RTM_DELNEIGH) {
        const entry = decodeRoute(msg) ?? decodeNeighbour(msg, true);
        if (entry) queue.push({ type: 'entry-deleted', entry });
      }
    }
  });
  // ENOBUFS read back as an error: notifications were dropped, so whoever listens must re-read the kernel.
  raw.on('error', () => queue.push({ type: 'overrun' }));
  return raw;
}

function builderFor(change: DatapathChange): MessageBuilder {
  const e = change.entry;
  const del = change.op === 'delete';
  switch (e.kind) {
    case 'route':
      return del ? deleteRoute(e) : replaceRoute(e);
    case 'neigh':
      return del ? deleteNeigh(e) : replaceNeigh(e);
    case 'fdb':
      return del ? deleteFdb(e) : replaceFdb(e);
  }
}

function vxlanMatches(link: LinkInfo, spec: VxlanLinkSpec): boolean {
  const v = link.vxlan;
  return (
    v !== undefined &&
    v.vni === spec.vni &&
    v.port === (spec.port || VXLAN_DEFAULT_PORT) &&
    sameIp(v.local, spec.local) &&
    v.underlayIndex === spec.underlayIndex &&
    v.learning === spec.learning &&
    v.gbp === spec.gbp &&
    link.mtu === spec.mtu &&
    link.mac === spec.mac
  );
}
