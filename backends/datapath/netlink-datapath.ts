/**
 * Datapath over rtnetlink: one request socket for gets, dumps and batched changes, and one multicast socket per
 * events() call. Runs in the caller's network namespace (flanneld is started inside the host's namespace), so it
 * never switches namespaces itself. Both sockets are our own N-API addon (netlink/native-socket.ts says why): an
 * overrun fails the pending requests or becomes an 'overrun' event, and never ends the process.
 */
import { containsIp, formatCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import { sameIp, type Family } from '../../flanneld/ip/address.js';
import { AsyncQueue } from '../../flanneld/runtime/async-queue.js';
import type {
  AddressInfo, ApplyFailure, ApplyReport, Datapath, DatapathChange, DatapathEntry, DatapathEvent, DatapathScope, LinkInfo,
  VxlanLinkSpec,
} from './datapath.js';
import { inScope } from '../entry-diff.js';
import { describeEntry } from './entry-key.js';
import { addAddress, decodeAddress, deleteAddress, dumpAddresses } from './netlink/address.js';
import {
  RTPROT_FLANNEL,
} from './netlink/constants.js';
import { createVxlan, deleteLink, findLink, setLinkMtuUp, setLinkUp } from './netlink/link.js';
import { decodeNeighbour, deleteFdb, deleteNeigh, dumpNeighbours, replaceFdb, replaceNeigh } from './netlink/neighbour.js';
import { addBlackholeRoute, createRoute, decodeRoute, deleteRoute, dumpRoutes, replaceRoute, routeProtocol } from './netlink/route.js';
import { judgeRouteConflicts, type KernelRoute, type RouteEntry } from './route-ownership.js';
import { NetlinkRequestError, RtnlSocket, type MessageBuilder } from './netlink/socket.js';
import { NotificationListener, newNotificationStats, type NotificationStats } from './netlink/notifications.js';
import type { NetlinkSocketInfo } from './netlink/native-socket.js';

const VXLAN_DEFAULT_PORT = 8472;

export class NetlinkDatapath implements Datapath {
  /** One per events() call, with the queue it feeds. */
  private readonly listeners = new Map<NotificationListener, AsyncQueue<DatapathEvent>>();
  private readonly notificationStats: NotificationStats = newNotificationStats();

  constructor(private readonly sock: RtnlSocket = new RtnlSocket()) {}

  close(): void {
    this.sock.close();
    for (const [listener, queue] of this.listeners) {
      listener.close();
      queue.end();
    }
    this.listeners.clear();
  }

  /**
   * Counters for metrics, all growing from 0: `notificationOverruns` is the number of times notices were lost and
   * a resync was asked for (each one an 'overrun' event), `requestOverruns` the times replies to our own requests
   * were lost (those requests failed and were retried). The buffer sizes say what the kernel granted.
   */
  netlinkStats(): NetlinkStats {
    const events = [...this.listeners.keys()][0]?.info();
    const requests = this.sock.info();
    return {
      notificationOverruns: this.notificationStats.overruns,
      notificationEventsDropped: this.notificationStats.eventsDropped,
      notificationReopens: this.notificationStats.reopens,
      requestOverruns: this.sock.overruns,
      requestReopens: this.sock.reopens,
      ...(events ? { notificationSocket: events } : {}),
      ...(requests ? { requestSocket: requests } : {}),
    };
  }

  link(name: string): Promise<LinkInfo | undefined> {
    return findLink(this.sock, name);
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

  private async addresses(linkIndex: number): Promise<readonly AddressInfo[]> {
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
    const failures: ApplyFailure[] = [];
    const held: RouteEntry[] = [];
    for (const [i, errno] of failed) {
      const change = changes[i] as DatapathChange;
      if (errno === 'EEXIST' && change.op === 'replace' && change.entry.kind === 'route') held.push(change.entry);
      else failures.push({ change, errno, message: `${change.op} ${describeEntry(change.entry)}: ${errno}` });
    }
    if (held.length > 0) failures.push(...(await this.settleHeldRoutes(held)));
    return { applied: changes.length - failures.length, failures };
  }

  /** Routes whose destination was taken: replaced where the holder is ours (or identical), reported where not. */
  private async settleHeldRoutes(held: readonly RouteEntry[]): Promise<ApplyFailure[]> {
    const kernel: KernelRoute[] = [];
    for (const family of new Set(held.map((r) => r.dst.family))) {
      for (const msg of await this.sock.dump(dumpRoutes(family), `dump IPv${family} routes`)) {
        const entry = decodeRoute(msg);
        if (entry) kernel.push({ entry, protocol: routeProtocol(msg) });
      }
    }
    const verdicts = judgeRouteConflicts(held, kernel, RTPROT_FLANNEL);
    const failures: ApplyFailure[] = verdicts.collisions.map(({ wanted, detail }) => ({ change: { op: 'replace', entry: wanted }, errno: 'EEXIST', message: detail }));
    const replaced = await this.sock.batch(verdicts.replace.map((r) => replaceRoute(r)));
    for (const [i, errno] of replaced) {
      const entry = verdicts.replace[i] as RouteEntry;
      failures.push({ change: { op: 'replace', entry }, errno, message: `replace ${describeEntry(entry)}: ${errno}` });
    }
    return failures;
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
      const route = decodeRoute(msg);
      // Only our own routes are ours to diff, so only they can ever be deleted as stale.
      if (route && routeProtocol(msg) !== RTPROT_FLANNEL) continue;
      const entry = route ?? decodeNeighbour(msg);
      if (entry && inScope(entry, scope)) out.push(entry);
    }
    return out;
  }

  events(signal: AbortSignal): AsyncIterable<DatapathEvent> {
    const queue = new AsyncQueue<DatapathEvent>();
    if (signal.aborted) {
      queue.end();
      return queue;
    }
    const listener = new NotificationListener(queue, this.notificationStats);
    this.listeners.set(listener, queue);
    signal.addEventListener('abort', () => {
      this.listeners.delete(listener);
      listener.close();
      queue.end();
    }, { once: true });
    return queue;
  }

  /**
   * A pass-through kept for apply()'s call. It used to close the notification sockets around batches of 256 or more,
   * because the old binding (the `netlink` package) aborted the process when one overran, which left a window in
   * which someone else's deletion went unseen until the periodic resync. Our socket drops the RTM_NEW* echoes of
   * our writes in the kernel, and an overrun by the RTM_DEL* echoes of a large delete only asks for one resync, so
   * nothing needs pausing; apply() can call this.sock.batch() directly and this can go.
   */
  private quietly<T>(_size: number, fn: () => Promise<T>): Promise<T> {
    return fn();
  }
}

export interface NetlinkStats {
  readonly notificationOverruns: number;
  readonly notificationEventsDropped: number;
  readonly notificationReopens: number;
  readonly requestOverruns: number;
  readonly requestReopens: number;
  /** The first events() socket's buffers as the kernel granted them (absent while nobody listens). */
  readonly notificationSocket?: NetlinkSocketInfo;
  readonly requestSocket?: NetlinkSocketInfo;
}

function builderFor(change: DatapathChange): MessageBuilder {
  const e = change.entry;
  const del = change.op === 'delete';
  switch (e.kind) {
    case 'route':
      return del ? deleteRoute(e) : createRoute(e);
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
