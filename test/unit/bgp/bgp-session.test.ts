import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BgpTransport } from '../../../flanneld/bgp/bgp-connection.js';
import { decodeOpen, encodeOpen, type OpenMessage } from '../../../flanneld/bgp/bgp-open.js';
import { BgpSession, type SessionStatus } from '../../../flanneld/bgp/bgp-session.js';
import type { Announcement } from '../../../flanneld/bgp/bgp-update.js';
import {
  BgpFramer, KEEPALIVE_MESSAGE, MSG_KEEPALIVE, MSG_NOTIFICATION, MSG_OPEN, MSG_ROUTE_REFRESH, MSG_UPDATE, encodeMessage, encodeNotification,
  type RawBgpMessage,
} from '../../../flanneld/bgp/bgp-wire.js';
import { parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import { seededRandom } from '../../../flanneld/runtime/random.js';
import { ManualClock } from '../../helpers/manual-clock.js';
import { memoryLog } from '../../helpers/test-log.js';

const ip = (t: string): IpAddress => parseIp(t) as IpAddress;
const net = (t: string): IpNet => parseCidr(t) as IpNet;
const ROUTER_OPEN: OpenMessage = { asn: 65000, holdTimeSec: 30, routerId: ip('192.0.2.250'), families: [4, 6], fourOctetAs: true, routeRefresh: true };

/** The router's end of one connection: what we wrote, decoded, and a way to answer. */
class FakeRouter implements BgpTransport {
  readonly received: RawBgpMessage[] = [];
  closed = false;
  private readonly framer = new BgpFramer();
  private dataListener: ((chunk: Buffer) => void) | undefined;
  private closeListener: ((error?: Error) => void) | undefined;

  write(bytes: Buffer): void {
    this.received.push(...this.framer.push(bytes));
  }
  onData(listener: (chunk: Buffer) => void): void {
    this.dataListener = listener;
  }
  onClose(listener: (error?: Error) => void): void {
    this.closeListener = listener;
  }
  close(): void {
    this.closed = true;
  }
  send(bytes: Buffer): void {
    this.dataListener?.(bytes);
  }
  drop(): void {
    this.closeListener?.(new Error('ECONNRESET'));
  }
  types(): number[] {
    return this.received.map((m) => m.type);
  }
  updates(): string[] {
    return this.received.filter((m) => m.type === MSG_UPDATE).map((m) => m.body.toString('hex'));
  }
}

const sessions: { abort: AbortController; done: Promise<void> }[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) {
    s.abort.abort();
    await s.done;
  }
});

function setup(opts: { gracefulRestartSec?: number; remoteAs?: number } = {}) {
  const clock = new ManualClock();
  const { log, lines } = memoryLog();
  const routers: FakeRouter[] = [];
  const statuses: SessionStatus[] = [];
  const session = new BgpSession({
    peer: { address: ip('192.0.2.250'), remoteAs: opts.remoteAs ?? 65000 },
    localAs: 64512,
    routerId: ip('192.0.2.1'),
    localAddress: ip('192.0.2.1'),
    holdTimeSec: 90,
    families: [4, 6],
    gracefulRestartSec: opts.gracefulRestartSec,
    connect: async (_peer, local) => {
      expect(local).toEqual(ip('192.0.2.1'));
      const router = new FakeRouter();
      routers.push(router);
      return router;
    },
    clock,
    random: seededRandom(1),
    log,
    onStatus: (s) => statuses.push(s),
  });
  const abort = new AbortController();
  const entry = { abort, done: session.run(abort.signal) };
  sessions.push(entry);
  const router = (): FakeRouter => routers.at(-1) as FakeRouter;
  const establish = async (open: OpenMessage = ROUTER_OPEN): Promise<FakeRouter> => {
    await vi.waitFor(() => expect(router().types()).toEqual([MSG_OPEN]));
    const r = router();
    r.send(encodeOpen(open));
    r.send(KEEPALIVE_MESSAGE);
    await vi.waitFor(() => expect(session.current().state).toBe('established'));
    return r;
  };
  return { clock, lines, routers, statuses, session, abort, done: entry.done, router, establish };
}

const WANTED = new Map<string, Announcement>([
  ['10.244.1.0/24', { prefix: net('10.244.1.0/24'), nextHop: ip('192.0.2.1') }],
  ['2001:db8:a:1::/64', { prefix: net('2001:db8:a:1::/64'), nextHop: ip('2001:db8:2::1') }],
]);

describe('BGP session', () => {
  it('opens with our AS, hold time and families, then announces both prefixes and End-of-RIB once established', async () => {
    const h = setup();
    h.session.setWanted(WANTED);
    const r = await h.establish();
    const ours = decodeOpen(r.received[0]?.body as Buffer);
    expect(ours).toMatchObject({ asn: 64512, holdTimeSec: 90, routerId: ip('192.0.2.1'), families: [4, 6], fourOctetAs: true });
    expect(ours.gracefulRestart).toBeUndefined();
    await vi.waitFor(() => expect(r.types()).toEqual([MSG_OPEN, MSG_KEEPALIVE, MSG_UPDATE, MSG_UPDATE, MSG_UPDATE, MSG_UPDATE]));
    const [v4, v6, eor4, eor6] = r.updates();
    expect(v4).toContain('180af401');
    expect(v6).toContain('4020010db8000a0001');
    expect([eor4, eor6]).toEqual(['00000000', '0000000680' + '0f03000201']);
    expect(h.session.current()).toMatchObject({ state: 'established', prefixes: ['10.244.1.0/24', '2001:db8:a:1::/64'], establishments: 1 });
  });

  it('announces only the families both sides speak', async () => {
    const h = setup();
    h.session.setWanted(WANTED);
    const r = await h.establish({ ...ROUTER_OPEN, families: [4] });
    await vi.waitFor(() => expect(r.updates()).toHaveLength(2));
    expect(h.session.current().prefixes).toEqual(['10.244.1.0/24']);
    expect(h.lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual(['the router does not take IPv6 unicast on this session; those subnets are not announced to it']);
  });

  it('sends only the change when the wanted prefixes change', async () => {
    const h = setup();
    h.session.setWanted(WANTED);
    const r = await h.establish();
    await vi.waitFor(() => expect(r.updates()).toHaveLength(4));
    h.session.setWanted(new Map([['10.244.7.0/24', { prefix: net('10.244.7.0/24'), nextHop: ip('192.0.2.1') }]]));
    await vi.waitFor(() => expect(r.updates()).toHaveLength(7));
    const [w4, w6, a7] = r.updates().slice(4);
    expect(w4).toBe('0004180af4010000');
    expect(w6).toContain('800f0c000201');
    expect(a7).toContain('180af407');
  });

  it('keeps the session alive with a KEEPALIVE every third of the negotiated hold time', async () => {
    const h = setup();
    const r = await h.establish();
    const before = r.types().filter((t) => t === MSG_KEEPALIVE).length;
    h.clock.advance(10_000);
    await vi.waitFor(() => expect(r.types().filter((t) => t === MSG_KEEPALIVE).length).toBe(before + 1));
  });

  it('ends the session with NOTIFICATION 4/0 when the router says nothing for the hold time, and retries after 1 s', async () => {
    const h = setup();
    const r = await h.establish();
    h.clock.advance(30_000);
    await vi.waitFor(() => expect(h.session.current().state).toBe('idle'));
    expect(r.types().at(-1)).toBe(MSG_NOTIFICATION);
    expect(r.received.at(-1)?.body.subarray(0, 2).toString('hex')).toBe('0400');
    expect(h.session.current().lastError).toContain('no message from the peer for 30 s');
    h.clock.advance(1100);
    await vi.waitFor(() => expect(h.routers).toHaveLength(2));
  });

  it('refuses a router of another AS with NOTIFICATION 2/2 naming both', async () => {
    const h = setup({ remoteAs: 65001 });
    await vi.waitFor(() => expect(h.router().types()).toEqual([MSG_OPEN]));
    h.router().send(encodeOpen(ROUTER_OPEN));
    await vi.waitFor(() => expect(h.session.current().lastError).toContain('the peer says it is AS 65000, configured as AS 65001'));
    expect(h.router().received.at(-1)?.body.subarray(0, 2).toString('hex')).toBe('0202');
  });

  it('answers garbage with NOTIFICATION 1/1 and a router NOTIFICATION by going down, naming it', async () => {
    const h = setup();
    await vi.waitFor(() => expect(h.router().types()).toEqual([MSG_OPEN]));
    h.router().send(Buffer.alloc(19, 0x41));
    await vi.waitFor(() => expect(h.session.current().lastError).toContain('marker is not all ones'));
    h.clock.advance(1100);
    await vi.waitFor(() => expect(h.routers).toHaveLength(2));
    await vi.waitFor(() => expect(h.router().types()).toEqual([MSG_OPEN]));
    h.router().send(encodeNotification({ code: 6, subcode: 4, data: Buffer.alloc(0) }));
    await vi.waitFor(() => expect(h.session.current().lastError).toBe('the peer sent NOTIFICATION cease (6/4)'));
  });

  it('resends everything on a route refresh', async () => {
    const h = setup();
    h.session.setWanted(WANTED);
    const r = await h.establish();
    await vi.waitFor(() => expect(r.updates()).toHaveLength(4));
    r.send(encodeMessage(MSG_ROUTE_REFRESH, Buffer.from('00010001', 'hex')));
    await vi.waitFor(() => expect(r.updates()).toHaveLength(6));
  });

  it('withdraws and sends a Cease when stopped without graceful restart', async () => {
    const h = setup();
    h.session.setWanted(WANTED);
    const r = await h.establish();
    await vi.waitFor(() => expect(r.updates()).toHaveLength(4));
    h.abort.abort();
    await h.done;
    expect(r.updates().slice(4)).toHaveLength(2);
    expect(r.types().at(-1)).toBe(MSG_NOTIFICATION);
    expect(r.received.at(-1)?.body.toString('hex')).toBe('0602');
    expect(r.closed).toBe(true);
  });

  it('with graceful restart: offers it (restarting, forwarding kept) and stops by closing, so the router keeps the routes', async () => {
    const h = setup({ gracefulRestartSec: 120 });
    h.session.setWanted(WANTED);
    const r = await h.establish();
    expect(decodeOpen(r.received[0]?.body as Buffer).gracefulRestart).toEqual({ restartTimeSec: 120, restarting: true, families: [4, 6], preserved: [4, 6] });
    await vi.waitFor(() => expect(r.updates()).toHaveLength(4));
    h.abort.abort();
    await h.done;
    expect(r.updates()).toHaveLength(4);
    expect(r.types()).not.toContain(MSG_NOTIFICATION);
    expect(r.closed).toBe(true);
  });

  it('retries a dropped connection and announces again', async () => {
    const h = setup();
    h.session.setWanted(WANTED);
    const r = await h.establish();
    r.drop();
    await vi.waitFor(() => expect(h.session.current()).toMatchObject({ state: 'idle', prefixes: [] }));
    expect(h.session.current().lastError).toContain('ECONNRESET');
    h.clock.advance(1100);
    const again = await h.establish();
    await vi.waitFor(() => expect(again.updates()).toHaveLength(4));
    expect(h.session.current().establishments).toBe(2);
  });
});
