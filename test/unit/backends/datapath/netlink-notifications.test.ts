/**
 * The notification side of the netlink datapath without a kernel: decoding a run of notices into events, one
 * overrun standing for any number of lost notices, the bounded queue, and a socket that breaks being reopened.
 */
import { describe, expect, it } from 'vitest';
import type { DatapathEvent } from '../../../../backends/datapath/datapath.js';
import {
  AF_BRIDGE, AF_INET, IFLA_IFNAME, NDA_DST, NDA_LLADDR, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_TABLE, RTM_DELLINK, RTM_DELNEIGH,
  RTM_DELROUTE, RTM_NEWROUTE, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_LINK, RTNLGRP_NEIGH,
} from '../../../../backends/datapath/netlink/constants.js';
import { encodeMessage, str, u32 } from '../../../../backends/datapath/netlink/message.js';
import type { NetlinkReceiver, NetlinkSocketOptions, NetlinkTransport } from '../../../../backends/datapath/netlink/native-socket.js';
import {
  EventSink, NOTIFICATION_RCVBUF, NotificationListener, eventsFromMessages, newNotificationStats, type ListenerTimers,
} from '../../../../backends/datapath/netlink/notifications.js';
import { parseIPv4 } from '../../../../flanneld/ip/address.js';
import { parseCidr } from '../../../../flanneld/ip/cidr.js';
import { AsyncQueue } from '../../../../flanneld/runtime/async-queue.js';

const RT_TABLE_MAIN = 254;
const RTN_UNICAST = 1;

function routeNotice(type: number, dst: string, prefixLen: number, via: string, oif: number): Buffer {
  const rtm = Buffer.alloc(12);
  rtm.writeUInt8(AF_INET, 0);
  rtm.writeUInt8(prefixLen, 1);
  rtm.writeUInt8(RT_TABLE_MAIN, 4);
  rtm.writeUInt8(RTN_UNICAST, 7);
  return encodeMessage(type, 0, 0, rtm, [
    { type: RTA_TABLE, value: u32(RT_TABLE_MAIN) },
    { type: RTA_DST, value: Buffer.from(dst.split('.').map(Number)) },
    { type: RTA_GATEWAY, value: Buffer.from(via.split('.').map(Number)) },
    { type: RTA_OIF, value: u32(oif) },
  ]);
}

function neighNotice(family: number, ifindex: number, attrs: { dst?: string; mac?: string }): Buffer {
  const ndm = Buffer.alloc(12);
  ndm.writeUInt8(family, 0);
  ndm.writeInt32LE(ifindex, 4);
  return encodeMessage(RTM_DELNEIGH, 0, 0, ndm, [
    ...(attrs.dst ? [{ type: NDA_DST, value: Buffer.from(attrs.dst.split('.').map(Number)) }] : []),
    ...(attrs.mac ? [{ type: NDA_LLADDR, value: Buffer.from(attrs.mac.split(':').map((h) => parseInt(h, 16))) }] : []),
  ]);
}

function linkNotice(index: number, name: string): Buffer {
  const ifi = Buffer.alloc(16);
  ifi.writeInt32LE(index, 4);
  return encodeMessage(RTM_DELLINK, 0, 0, ifi, [{ type: IFLA_IFNAME, value: str(name) }]);
}

/** As the addon hands datagrams over: each padded to 4 bytes, back to back. */
const stream = (...datagrams: Buffer[]): Buffer =>
  Buffer.concat(datagrams.map((d) => Buffer.concat([d, Buffer.alloc((4 - (d.length % 4)) % 4)])));

describe('eventsFromMessages', () => {
  it('turns deletions of routes, neighbours, FDB entries and links into events, and skips everything else', () => {
    const events = eventsFromMessages(stream(
      routeNotice(RTM_DELROUTE, '10.244.2.0', 24, '10.244.2.0', 7),
      routeNotice(RTM_NEWROUTE, '10.244.3.0', 24, '10.244.3.0', 7),
      neighNotice(AF_INET, 7, { dst: '10.244.2.0', mac: '0e:2a:00:00:00:02' }),
      neighNotice(AF_BRIDGE, 7, { mac: '0e:2a:00:00:00:02', dst: '192.0.2.2' }),
      linkNotice(7, 'flannel.1'),
    ));
    expect(events).toEqual([
      { type: 'entry-deleted', entry: { kind: 'route', dst: parseCidr('10.244.2.0/24'), via: parseIPv4('10.244.2.0'), linkIndex: 7 } },
      { type: 'entry-deleted', entry: { kind: 'neigh', linkIndex: 7, ip: parseIPv4('10.244.2.0'), mac: '0e:2a:00:00:00:02' } },
      { type: 'entry-deleted', entry: { kind: 'fdb', linkIndex: 7, mac: '0e:2a:00:00:00:02', dst: parseIPv4('192.0.2.2') } },
      { type: 'link-deleted', index: 7, name: 'flannel.1' },
    ]);
  });

  it('stops at a truncated message instead of reading past it', () => {
    const whole = routeNotice(RTM_DELROUTE, '10.244.2.0', 24, '10.244.2.0', 7);
    expect(eventsFromMessages(Buffer.concat([whole, whole.subarray(0, 20)]))).toHaveLength(1);
    expect(eventsFromMessages(Buffer.alloc(0))).toEqual([]);
  });
});

const deleted = (n: number): DatapathEvent => ({ type: 'link-deleted', index: n, name: `l${n}` });

async function drain(queue: AsyncQueue<DatapathEvent>): Promise<DatapathEvent[]> {
  const out: DatapathEvent[] = [];
  const it = queue[Symbol.asyncIterator]();
  while (queue.size > 0) {
    const r = await it.next();
    if (!r.done) out.push(r.value);
  }
  return out;
}

describe('EventSink', () => {
  it('queues events and stands one overrun for every overrun until that one is read', async () => {
    const queue = new AsyncQueue<DatapathEvent>();
    const stats = newNotificationStats();
    const sink = new EventSink(queue, stats);
    sink.event(deleted(1));
    sink.overrun();
    sink.overrun();
    // Behind an unread overrun, an event adds nothing: the resync that overrun triggers reads the kernel later.
    sink.event(deleted(2));
    expect(await drain(queue)).toEqual([deleted(1), { type: 'overrun' }]);
    expect(stats.eventsDropped).toBe(1);
    // Once it was read, the next overrun is a new one, and events queue again.
    sink.event(deleted(3));
    sink.overrun();
    expect(await drain(queue)).toEqual([deleted(3), { type: 'overrun' }]);
  });

  it('bounds the queue: past the limit an overrun stands for the events that did not fit', async () => {
    const queue = new AsyncQueue<DatapathEvent>();
    const stats = newNotificationStats();
    const sink = new EventSink(queue, stats, 3);
    for (let i = 0; i < 10; i++) sink.event(deleted(i));
    expect(queue.size).toBe(4);
    expect(stats.eventsDropped).toBe(7);
    expect(await drain(queue)).toEqual([deleted(0), deleted(1), deleted(2), { type: 'overrun' }]);
    sink.event(deleted(11));
    expect(await drain(queue)).toEqual([deleted(11)]);
  });

  it('hands an overrun straight to a consumer that is already waiting, and still counts it as read', async () => {
    const queue = new AsyncQueue<DatapathEvent>();
    const sink = new EventSink(queue, newNotificationStats());
    const next = queue[Symbol.asyncIterator]().next();
    sink.overrun();
    expect((await next).value).toEqual({ type: 'overrun' });
    sink.overrun();
    expect(await drain(queue)).toEqual([{ type: 'overrun' }]);
  });
});

interface FakeSocket {
  readonly opts: NetlinkSocketOptions;
  readonly receiver: NetlinkReceiver;
  closed: boolean;
}

function fakeKernel() {
  const sockets: FakeSocket[] = [];
  let refuse = 0;
  const open = (opts: NetlinkSocketOptions, receiver: NetlinkReceiver): NetlinkTransport => {
    if (refuse > 0) {
      refuse--;
      throw new Error('EMFILE');
    }
    const s: FakeSocket = { opts, receiver, closed: false };
    sockets.push(s);
    return {
      send: () => undefined,
      info: () => ({ rcvbuf: 2 * (opts.rcvbuf ?? 0), sndbuf: 0, rcvbufForced: true, portId: sockets.length }),
      close: () => {
        s.closed = true;
      },
    };
  };
  const timers: { fn: () => void; ms: number; cleared: boolean }[] = [];
  const fakeTimers: ListenerTimers = {
    setTimeout: (fn, ms) => {
      const t = { fn, ms, cleared: false };
      timers.push(t);
      return t;
    },
    clearTimeout: (t) => {
      (t as { cleared: boolean }).cleared = true;
    },
  };
  const fire = (): void => {
    const due = timers.splice(0).filter((t) => !t.cleared);
    for (const t of due) t.fn();
  };
  return { sockets, open, fakeTimers, timers, fire, refuseNext: (n: number) => (refuse = n) };
}

describe('NotificationListener', () => {
  it('subscribes to deletions only, with the burst-sized buffer', () => {
    const k = fakeKernel();
    const listener = new NotificationListener(new AsyncQueue<DatapathEvent>(), newNotificationStats(), k.open, k.fakeTimers);
    expect(k.sockets[0]?.opts).toMatchObject({
      groups: [RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE],
      acceptTypes: [RTM_DELLINK, RTM_DELROUTE, RTM_DELNEIGH],
      rcvbuf: NOTIFICATION_RCVBUF,
    });
    expect(listener.info()?.rcvbuf).toBe(2 * NOTIFICATION_RCVBUF);
  });

  it('counts kernel overruns and turns them into one overrun event, after the data read before them', async () => {
    const k = fakeKernel();
    const queue = new AsyncQueue<DatapathEvent>();
    const stats = newNotificationStats();
    new NotificationListener(queue, stats, k.open, k.fakeTimers);
    const socket = k.sockets[0]!;
    socket.receiver.data(stream(linkNotice(9, 'flannel.1')));
    socket.receiver.overrun(3);
    expect(stats.overruns).toBe(3);
    expect(await drain(queue)).toEqual([{ type: 'link-deleted', index: 9, name: 'flannel.1' }, { type: 'overrun' }]);
  });

  it('reopens a socket that broke after a delay, and only then asks for a resync', async () => {
    const k = fakeKernel();
    const queue = new AsyncQueue<DatapathEvent>();
    const stats = newNotificationStats();
    const listener = new NotificationListener(queue, stats, k.open, k.fakeTimers);
    k.sockets[0]!.receiver.failed('EIO');
    expect(queue.size).toBe(0);
    expect(listener.info()).toBeUndefined();
    expect(k.timers.map((t) => t.ms)).toEqual([1000]);
    // The first reopen is refused: tried again later, still without an event.
    k.refuseNext(1);
    k.fire();
    expect(queue.size).toBe(0);
    expect(k.timers).toHaveLength(1);
    k.fire();
    expect(k.sockets).toHaveLength(2);
    expect(stats.reopens).toBe(1);
    expect(await drain(queue)).toEqual([{ type: 'overrun' }]);
  });

  it('closes its socket and any pending reopen for good', () => {
    const k = fakeKernel();
    const listener = new NotificationListener(new AsyncQueue<DatapathEvent>(), newNotificationStats(), k.open, k.fakeTimers);
    listener.close();
    expect(k.sockets[0]!.closed).toBe(true);
    k.sockets[0]!.receiver.failed('EIO');
    k.fire();
    expect(k.sockets).toHaveLength(1);

    const k2 = fakeKernel();
    const l2 = new NotificationListener(new AsyncQueue<DatapathEvent>(), newNotificationStats(), k2.open, k2.fakeTimers);
    k2.sockets[0]!.receiver.failed('EIO');
    l2.close();
    expect(k2.timers[0]?.cleared).toBe(true);
    k2.fire();
    expect(k2.sockets).toHaveLength(1);
  });
});
