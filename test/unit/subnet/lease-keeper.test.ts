import { memoryLog } from '../../helpers/test-log.js';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseCidr, type IpNet } from '../../../flanneld/ip/cidr.js';
import { parseIPv4, type IpAddress } from '../../../flanneld/ip/address.js';
import type { Lease } from '../../../flanneld/lease/lease.js';
import { FlannelError, LeaseLostError } from '../../../flanneld/runtime/errors.js';
import { seededRandom } from '../../../flanneld/runtime/random.js';
import { keepLease } from '../../../flanneld/subnet/lease-keeper.js';
import { FakeSubnetManager, never } from '../../helpers/fake-subnet-manager.js';
import { ManualClock } from '../../helpers/manual-clock.js';

const HOUR = 3_600_000;
const TTL = 24 * HOUR;
const MARGIN = HOUR;

const net = (text: string): IpNet => parseCidr(text) as IpNet;
const PUBLIC_IP = parseIPv4('192.168.1.7') as IpAddress;

const WARN = 40;

/** Lets every queued promise reaction run (one macrotask turn); no wall-clock wait for lease time. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setup(expiresInMs = TTL) {
  const clock = new ManualClock();
  const subnets = new FakeSubnetManager();
  const { log, lines } = memoryLog();
  const lease: Lease = {
    subnet: net('10.244.3.0/24'),
    attrs: { publicIP: PUBLIC_IP, backendType: 'alloc' },
    reservation: false,
    expiresAt: clock.now() + expiresInMs,
  };
  /** What the store answers to a renewal: the same lease with a fresh TTL on the clock. */
  const renewed = (l: Lease): Lease => ({ ...l, expiresAt: clock.now() + TTL });
  const abort = new AbortController();
  const renewals: Lease[] = [];
  let outcome: { ok: true } | { ok: false; err: unknown } | undefined;
  const keeper = keepLease(
    lease,
    { subnets, clock, random: seededRandom(7), log, renewMarginMs: MARGIN },
    abort.signal,
    (l) => renewals.push(l),
  ).then(
    () => {
      outcome = { ok: true };
    },
    (err: unknown) => {
      outcome = { ok: false, err };
    },
  );
  /** Resolves once the keeper is waiting on the clock (one sleep) with its own-lease watch open. */
  const parked = (): Promise<void> =>
    vi.waitFor(() => {
      expect(clock.pending).toBe(1);
      expect(subnets.ownLeaseWatchers).toBe(1);
    });
  return { clock, subnets, lines, lease, renewed, abort, renewals, keeper, parked, outcome: () => outcome };
}

let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

/** Every test aborts its keeper at the end, whatever happened. */
function tracked(ctx: ReturnType<typeof setup>): ReturnType<typeof setup> {
  cleanup = async () => {
    ctx.abort.abort();
    await ctx.keeper;
  };
  return ctx;
}

describe('keepLease', () => {
  it('renews exactly renewMarginMs before expiry, and not a millisecond earlier', async () => {
    const k = tracked(setup());
    k.subnets.renew.otherwise(k.renewed);
    const start = k.clock.now();
    await k.parked();
    expect(k.clock.nextDeadline()).toBe(start + TTL - MARGIN);

    k.clock.advance(TTL - MARGIN - 1);
    await settle();
    expect(k.subnets.callsTo('renewLease')).toHaveLength(0);

    k.clock.advance(1);
    await vi.waitFor(() => expect(k.renewals).toHaveLength(1));
    expect(k.subnets.callsTo('renewLease')).toEqual([{ method: 'renewLease', lease: k.lease }]);
    expect(k.renewals[0]?.expiresAt).toBe(start + TTL - MARGIN + TTL);

    // The next renewal is scheduled from the renewed lease's expiry.
    await k.parked();
    expect(k.clock.nextDeadline()).toBe(start + 2 * (TTL - MARGIN));
    k.clock.advance(TTL - MARGIN);
    await vi.waitFor(() => expect(k.renewals).toHaveLength(2));
    expect(k.subnets.callsTo('renewLease')[1]?.lease).toBe(k.renewals[0]);
    expect(k.outcome()).toBeUndefined();
  });

  it('renews at once when the lease is already inside the margin', async () => {
    const k = tracked(setup(MARGIN / 2));
    k.subnets.renew.otherwise(k.renewed);
    await k.parked();
    expect(k.clock.nextDeadline()).toBe(k.clock.now());
    k.clock.advance(0);
    await vi.waitFor(() => expect(k.renewals).toHaveLength(1));
    await k.parked();
    expect(k.clock.nextDeadline()).toBe(k.clock.now() + TTL - MARGIN);
  });

  it('never schedules a renewal for a lease without an expiry (a reservation)', async () => {
    const clock = new ManualClock();
    const subnets = new FakeSubnetManager();
    const abort = new AbortController();
    const reservation: Lease = { subnet: net('10.244.9.0/24'), attrs: { backendType: 'alloc' }, reservation: true };
    const keeper = keepLease(
      reservation,
      { subnets, clock, random: seededRandom(1), log: memoryLog().log, renewMarginMs: MARGIN },
      abort.signal,
    );
    await vi.waitFor(() => expect(subnets.ownLeaseWatchers).toBe(1));
    expect(clock.pending).toBe(0);
    abort.abort();
    await expect(keeper).resolves.toBeUndefined();
    expect(subnets.calls).toEqual([]);
  });

  it('retries transient renewal errors with growing backoff instead of giving up', async () => {
    const k = tracked(setup());
    k.subnets.renew
      .then(new FlannelError('ERR_STORE_UNAVAILABLE', 'etcd put /coreos.com/network/subnets/10.244.3.0-24: unavailable'))
      .then(new Error('connection reset'))
      .then(k.renewed);
    await k.parked();
    k.clock.advance(TTL - MARGIN);
    await vi.waitFor(() => expect(k.subnets.callsTo('renewLease')).toHaveLength(1));

    await k.parked();
    const first = (k.clock.nextDeadline() as number) - k.clock.now();
    expect(first).toBeGreaterThanOrEqual(900);
    expect(first).toBeLessThanOrEqual(1100);
    k.clock.advance(first - 1);
    await settle();
    expect(k.subnets.callsTo('renewLease')).toHaveLength(1);
    k.clock.advance(1);
    await vi.waitFor(() => expect(k.subnets.callsTo('renewLease')).toHaveLength(2));

    await k.parked();
    const second = (k.clock.nextDeadline() as number) - k.clock.now();
    expect(second).toBeGreaterThanOrEqual(1800);
    expect(second).toBeLessThanOrEqual(2200);
    k.clock.advance(second);
    await vi.waitFor(() => expect(k.renewals).toHaveLength(1));

    const warnings = k.lines.filter((l) => l.level === WARN);
    expect(warnings.map((l) => l.msg)).toEqual(['error renewing lease; trying again', 'error renewing lease; trying again']);
    expect(warnings.map((l) => l['retryInMs'])).toEqual([first, second]);
    expect(warnings[0]?.['subnet']).toBe('10.244.3.0-24');
    expect(k.outcome()).toBeUndefined();
    // Back to the normal schedule, counted from the lease the retry finally got.
    await k.parked();
    expect(k.clock.nextDeadline()).toBe((k.renewals[0]?.expiresAt as number) - MARGIN);
  });

  it('re-claims at once when its lease vanishes from the store, without waiting for the timer', async () => {
    const k = tracked(setup());
    k.subnets.renew.otherwise(k.renewed);
    await k.parked();
    const before = k.clock.now();

    k.subnets.vanish();
    await vi.waitFor(() => expect(k.renewals).toHaveLength(1));
    expect(k.clock.now()).toBe(before);
    expect(k.lines.find((l) => l.level === WARN)?.msg).toBe('own lease vanished or changed in the store; writing it back');
    expect(k.lines.at(-1)).toMatchObject({ msg: 'own lease written back', subnet: '10.244.3.0-24' });

    // Rescheduled from the re-claimed lease, and still listening for the next disappearance.
    await k.parked();
    expect(k.clock.nextDeadline()).toBe(before + TTL - MARGIN);
    k.subnets.vanish();
    await vi.waitFor(() => expect(k.renewals).toHaveLength(2));
  });

  it('retries a failed re-claim with backoff', async () => {
    const k = tracked(setup());
    k.subnets.renew.then(new Error('etcd unavailable')).otherwise(k.renewed);
    await k.parked();
    k.subnets.vanish();
    await vi.waitFor(() => expect(k.subnets.callsTo('renewLease')).toHaveLength(1));
    await vi.waitFor(() => expect(k.clock.pending).toBe(1));
    k.clock.advance(1100);
    await vi.waitFor(() => expect(k.renewals).toHaveLength(1));
  });

  it('rejects with LeaseLostError when a scheduled renewal finds the subnet taken', async () => {
    const k = tracked(setup());
    const lost = new LeaseLostError('lease 10.244.3.0-24 is now held by 192.168.1.9');
    k.subnets.renew.then(lost);
    await k.parked();
    k.clock.advance(TTL - MARGIN);
    await vi.waitFor(() => expect(k.outcome()).toEqual({ ok: false, err: lost }));
    expect(k.subnets.ownLeaseWatchers).toBe(0);
    expect(k.clock.pending).toBe(0);
  });

  it('rejects with LeaseLostError when a re-claim after vanishing finds the subnet taken', async () => {
    const k = tracked(setup());
    const lost = new LeaseLostError('lease 10.244.3.0-24 is now held by 192.168.1.9');
    k.subnets.renew.then(lost);
    await k.parked();
    k.subnets.vanish();
    await vi.waitFor(() => expect(k.outcome()).toEqual({ ok: false, err: lost }));
    expect(k.subnets.ownLeaseWatchers).toBe(0);
  });

  it('resolves cleanly on abort while waiting, closing its watch and timer', async () => {
    const k = setup();
    await k.parked();
    k.abort.abort();
    await k.keeper;
    expect(k.outcome()).toEqual({ ok: true });
    expect(k.clock.pending).toBe(0);
    expect(k.subnets.ownLeaseWatchers).toBe(0);
    expect(k.subnets.calls).toEqual([]);
  });

  it('resolves cleanly on abort while backing off after a failed renewal', async () => {
    const k = setup();
    k.subnets.renew.then(new Error('etcd unavailable'));
    await k.parked();
    k.clock.advance(TTL - MARGIN);
    await vi.waitFor(() => expect(k.subnets.callsTo('renewLease')).toHaveLength(1));
    await k.parked();
    k.abort.abort();
    await k.keeper;
    expect(k.outcome()).toEqual({ ok: true });
    expect(k.clock.pending).toBe(0);
    expect(k.subnets.ownLeaseWatchers).toBe(0);
  });

  it('resolves cleanly on abort while a renewal is in flight', async () => {
    const k = setup();
    k.subnets.renew.then(never);
    await k.parked();
    k.clock.advance(TTL - MARGIN);
    await vi.waitFor(() => expect(k.subnets.callsTo('renewLease')).toHaveLength(1));
    k.abort.abort();
    await k.keeper;
    expect(k.outcome()).toEqual({ ok: true });
    expect(k.subnets.ownLeaseWatchers).toBe(0);
  });

  it('resolves at once when started with an aborted signal', async () => {
    const clock = new ManualClock();
    const subnets = new FakeSubnetManager();
    const lease: Lease = { subnet: net('10.244.3.0/24'), attrs: { backendType: 'alloc' }, reservation: false, expiresAt: clock.now() + TTL };
    await expect(
      keepLease(lease, { subnets, clock, random: seededRandom(1), log: memoryLog().log, renewMarginMs: MARGIN }, AbortSignal.abort()),
    ).resolves.toBeUndefined();
    expect(subnets.calls).toEqual([]);
  });
});
