/**
 * PeerProber on the ManualClock with a fake Pinger: probes spread evenly over the interval (also at 5000 peers),
 * sent in batch windows, target changes mid-pass, the two-failure threshold, one log line per verdict change, and timeouts (the pinger's
 * own, and the guard for a pinger that never answers).
 */
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { formatIp, ipAddress, parseIp, type IpAddress } from '../../../flanneld/ip/address.js';
import { ipNet, parseCidr } from '../../../flanneld/ip/cidr.js';
import { PeerProber, type ProbeResult, type ProbeTarget } from '../../../flanneld/probe/peer-prober.js';
import type { Pinger } from '../../../flanneld/probe/pinger.js';
import { ManualClock } from '../../helpers/manual-clock.js';
import { memoryLog } from '../../helpers/test-log.js';

type Answer = number | undefined | 'timeout' | 'hang' | Error;

interface Call {
  readonly address: string;
  readonly at: number;
  readonly timeoutMs: number;
}

/** Answers per address (default: 1 ms RTT at once); 'timeout' resolves undefined after timeoutMs on the clock. */
class FakePinger implements Pinger {
  readonly calls: Call[] = [];
  readonly answers = new Map<string, Answer>();
  closed = false;

  constructor(private readonly clock: ManualClock) {}

  ping(address: IpAddress, timeoutMs: number): Promise<number | undefined> {
    const text = formatIp(address);
    this.calls.push({ address: text, at: this.clock.now(), timeoutMs });
    const answer = this.answers.has(text) ? this.answers.get(text) : 1;
    if (answer instanceof Error) return Promise.reject(answer);
    if (answer === 'hang') return new Promise(() => undefined);
    if (answer === 'timeout') {
      return this.clock.sleep(timeoutMs, new AbortController().signal).then(() => undefined);
    }
    return Promise.resolve(answer);
  }

  close(): void {
    this.closed = true;
  }

  at(address: string): number[] {
    return this.calls.filter((c) => c.address === address).map((c) => c.at);
  }
}

const T0 = Date.UTC(2026, 0, 1);

/** Peer n: lease 10.244.n.0/24 (n < 256) or a /28 further up, gateway at its network address, public IP 192.0.2.x. */
function peer(n: number): ProbeTarget {
  const subnet = n < 256 ? parseCidr(`10.244.${n}.0/24`)! : ipNet(4, (10n << 24n) + (245n << 16n) + BigInt(n * 16), 28);
  return {
    key: `peer-${n}`,
    address: ipAddress(4, subnet.ip),
    subnet,
    publicIP: ipAddress(4, (192n << 24n) | (2n << 8n) | BigInt(n % 256)),
  };
}

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Moves the clock to `until` (relative to T0) one deadline at a time, letting the prober run at each. */
async function runUntil(clock: ManualClock, until: number): Promise<void> {
  const target = T0 + until;
  for (let guard = 0; guard < 100_000; guard++) {
    await flush();
    const next = clock.nextDeadline();
    if (next === undefined || next > target) {
      if (clock.now() < target) clock.advance(target - clock.now());
      await flush();
      return;
    }
    clock.advance(Math.max(0, next - clock.now()));
  }
  throw new Error('runUntil: too many steps');
}

interface Rig {
  clock: ManualClock;
  pinger: FakePinger;
  prober: PeerProber;
  lines: ReturnType<typeof memoryLog>['lines'];
  results: ProbeResult[];
  stop: () => Promise<void>;
}

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** Starts run() at once, so its first probe goes out before this returns: `answers` are in place for it. */
/** `batchMs` defaults to 0 here, so the schedule tests see every slot on its own. */
function rig(intervalMs: number, targets: ProbeTarget[], opts: { timeoutMs?: number; batchMs?: number; answers?: Record<string, Answer> } = {}): Rig {
  const { timeoutMs, batchMs = 0 } = opts;
  const clock = new ManualClock(T0);
  const pinger = new FakePinger(clock);
  for (const [address, answer] of Object.entries(opts.answers ?? {})) pinger.answers.set(address, answer);
  const { log, lines } = memoryLog();
  const results: ProbeResult[] = [];
  const prober = new PeerProber({
    pinger,
    clock,
    log,
    intervalMs,
    batchMs,
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    onResult: (r) => results.push(r),
  });
  prober.setTargets(targets);
  const abort = new AbortController();
  const running = prober.run(abort.signal);
  const stop = async (): Promise<void> => {
    abort.abort();
    await running;
  };
  stops.push(stop);
  return { clock, pinger, prober, lines, results, stop };
}

const rel = (times: number[]): number[] => times.map((t) => t - T0);
const warnings = (r: Rig) => r.lines.filter((l) => l.level === 40);
const infos = (r: Rig) => r.lines.filter((l) => l.level === 30);

describe('PeerProber schedule', () => {
  it('spreads one pass over the interval, interval / N apart, pass after pass', async () => {
    const r = rig(1000, [peer(1), peer(2), peer(3), peer(4)]);
    await runUntil(r.clock, 2999);
    expect(rel(r.pinger.calls.map((c) => c.at))).toEqual([0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 2750]);
    expect(r.pinger.calls.slice(0, 4).map((c) => c.address)).toEqual(['10.244.1.0', '10.244.2.0', '10.244.3.0', '10.244.4.0']);
  });

  it('keeps 5000 peers every 30 s at one probe every 6 ms, never two at once', async () => {
    const targets = Array.from({ length: 5000 }, (_, i) => peer(i));
    const r = rig(30_000, targets);
    await runUntil(r.clock, 29_999);
    const times = rel(r.pinger.calls.map((c) => c.at));
    expect(times).toHaveLength(5000);
    expect(new Set(r.pinger.calls.map((c) => c.address)).size).toBe(5000);
    const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
    expect(Math.min(...gaps)).toBeCloseTo(6, 6);
    expect(Math.max(...gaps)).toBeCloseTo(6, 6);
    expect(r.prober.state().size).toBe(5000);
  });

  it('sends the slots of each batch window together: 5000 peers every 30 s in 30 batches of about 167', async () => {
    const targets = Array.from({ length: 5000 }, (_, i) => peer(i));
    const r = rig(30_000, targets, { batchMs: 1000 });
    await runUntil(r.clock, 29_999);
    const times = rel(r.pinger.calls.map((c) => c.at));
    expect(new Set(r.pinger.calls.map((c) => c.address)).size).toBe(5000);
    const batches = new Map<number, number>();
    for (const t of times) batches.set(t, (batches.get(t) ?? 0) + 1);
    const starts = [...batches.keys()];
    expect(starts).toHaveLength(30);
    expect(starts[0]).toBe(0);
    const gaps = starts.slice(1).map((t, i) => t - (starts[i] as number));
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(1000);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(1006);
    expect(Math.max(...batches.values())).toBeLessThanOrEqual(168);
    // The next pass starts no earlier than one batch window before its time.
    await runUntil(r.clock, 31_000);
    expect(r.pinger.calls.length).toBeGreaterThan(5000);
    expect((r.pinger.calls[5000] as Call).at - T0).toBeGreaterThanOrEqual(29_000);
  });

  it('caps the batch window at a tenth of the interval', async () => {
    const r = rig(1000, Array.from({ length: 10 }, (_, i) => peer(i)), { batchMs: 5000 });
    await runUntil(r.clock, 999);
    expect(rel(r.pinger.calls.map((c) => c.at))).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
  });

  it('catches up after a stalled event loop at no more than twice the rate, batching too', async () => {
    const targets = Array.from({ length: 300 }, (_, i) => peer(i));
    const r = rig(30_000, targets, { batchMs: 1000 });
    await runUntil(r.clock, 500);
    const before = r.pinger.calls.length;
    r.clock.advance(10_000); // 10 s without running: 100 slots missed
    await flush();
    await flush();
    // One batch of one window's worth at twice the rate, not the 100 missed slots at once.
    expect(r.pinger.calls.length - before).toBeLessThanOrEqual(21);
  });

  it('keeps one abort listener on the run signal however many probes are out', async () => {
    const clock = new ManualClock(T0);
    const pinger = new FakePinger(clock);
    for (let i = 0; i < 200; i++) pinger.answers.set(formatIp(peer(i).address), 'hang');
    const prober = new PeerProber({ pinger, clock, log: memoryLog().log, intervalMs: 30_000 });
    prober.setTargets(Array.from({ length: 200 }, (_, i) => peer(i)));
    const abort = new AbortController();
    const running = prober.run(abort.signal);
    await runUntil(clock, 20_000);
    expect(pinger.calls.length).toBeGreaterThan(100);
    expect(getEventListeners(abort.signal, 'abort').length).toBeLessThanOrEqual(1);
    abort.abort();
    await running;
  });

  it('does not let late timers stretch the passes', async () => {
    const r = rig(1000, [peer(1), peer(2), peer(3), peer(4)]);
    // Every sleep wakes 1 ms after its deadline, as real timers do under load.
    for (let step = 0; r.pinger.calls.length < 41 && step < 1000; step++) {
      await flush();
      const next = r.clock.nextDeadline();
      if (next !== undefined) r.clock.advance(next - r.clock.now() + 1);
    }
    const times = rel(r.pinger.calls.map((c) => c.at));
    // Ten passes later the schedule is still on time to within one timer's lateness, not 40 ms behind.
    expect(times[40]).toBeGreaterThanOrEqual(10_000);
    expect(times[40]).toBeLessThanOrEqual(10_002);
    const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
    expect(Math.min(...gaps)).toBeGreaterThan(240);
  });

  it('resumes after a stalled event loop without firing the missed slots in a burst', async () => {
    const r = rig(1000, [peer(1), peer(2), peer(3), peer(4)]);
    await runUntil(r.clock, 300);
    r.clock.advance(3000); // 3 s without running: the slots at 500, 750, 1000, ... are missed
    await runUntil(r.clock, 4500);
    expect(rel(r.pinger.calls.map((c) => c.at))).toEqual([0, 250, 3300, 3425, 3675, 3925, 4175, 4425]);
  });

  it('fits targets added mid-pass into the rest of it, and stops probing removed ones at once', async () => {
    const r = rig(1000, [peer(1), peer(2), peer(3), peer(4)]);
    await runUntil(r.clock, 300); // 10.244.1.0 at 0, 10.244.2.0 at 250
    r.prober.setTargets([peer(1), peer(2), peer(4), peer(5), peer(6)]);
    await runUntil(r.clock, 999);
    const firstPass = r.pinger.calls.map((c) => c.address);
    expect(firstPass).toEqual(['10.244.1.0', '10.244.2.0', '10.244.4.0', '10.244.5.0', '10.244.6.0']);
    // The rest of the pass (750 ms from the last probe at 250) shared by 3 probes plus the next pass's first.
    expect(rel(r.pinger.calls.map((c) => c.at))).toEqual([0, 250, 437.5, 625, 812.5]);
    expect(r.pinger.at('10.244.3.0')).toEqual([]);
    expect([...r.prober.state().keys()].sort()).toEqual(['peer-1', 'peer-2', 'peer-4', 'peer-5', 'peer-6']);
    await runUntil(r.clock, 1999);
    expect(rel(r.pinger.calls.slice(5).map((c) => c.at))).toEqual([1000, 1200, 1400, 1600, 1800]);
  });

  it('spreads a batch added just before the end of a pass instead of sending it at once', async () => {
    const r = rig(1000, [peer(1), peer(2)]);
    await runUntil(r.clock, 990);
    r.prober.setTargets(Array.from({ length: 100 }, (_, i) => peer(i + 1)));
    await runUntil(r.clock, 1990);
    const times = rel(r.pinger.calls.map((c) => c.at)).filter((t) => t > 500);
    const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(1000 / 100 - 1e-9);
    // Every added peer was probed within one interval of being added.
    for (let n = 3; n <= 100; n++) {
      const first = r.pinger.at(formatIp(peer(n).address))[0];
      expect(first, `peer ${n}`).toBeDefined();
      expect((first as number) - T0 - 990, `peer ${n}`).toBeLessThanOrEqual(1000);
    }
  });

  it('waits without spinning while there are no targets, and probes the first one as soon as it comes', async () => {
    const r = rig(1000, []);
    await runUntil(r.clock, 5000);
    expect(r.pinger.calls).toEqual([]);
    expect(r.clock.pending).toBe(1);
    r.prober.setTargets([peer(7)]);
    await flush();
    expect(rel(r.pinger.at('10.244.7.0'))).toEqual([5000]);
    // Emptied again: the pending sleep is re-planned, nothing more is probed.
    r.prober.setTargets([]);
    await runUntil(r.clock, 9000);
    expect(r.pinger.calls).toHaveLength(1);
    expect(r.prober.state().size).toBe(0);
  });

  it('forgets the state of a key whose address changed (another host behind it) but keeps it across publicIP updates', async () => {
    const r = rig(1000, [peer(1)], { answers: { '10.244.1.0': undefined } });
    await runUntil(r.clock, 1500);
    expect(r.prober.state().get('peer-1')?.reachable).toBe(false);
    r.prober.setTargets([{ ...peer(1), publicIP: parseIp('192.0.2.99')! }]);
    expect(r.prober.state().get('peer-1')?.reachable).toBe(false);
    r.prober.setTargets([{ ...peer(1), address: parseIp('10.244.1.1')! }]);
    expect(r.prober.state().has('peer-1')).toBe(false);
  });

  it('takes a delta: only the peers named change, the others keep their state', async () => {
    const r = rig(1000, [peer(1), peer(2)], { answers: { '10.244.1.0': undefined } });
    await runUntil(r.clock, 1500);
    expect(r.prober.state().get('peer-1')?.reachable).toBe(false);
    r.prober.updateTargets(new Map([['peer-2', undefined], ['peer-3', peer(3)]]));
    expect(r.prober.state().get('peer-1')?.reachable).toBe(false);
    expect(r.prober.state().has('peer-2')).toBe(false);
    await runUntil(r.clock, 3000);
    expect(r.pinger.at('10.244.3.0').length).toBeGreaterThan(0);
  });

  it('uses min(2000 ms, interval) as the ping timeout unless told otherwise', async () => {
    const short = rig(500, [peer(1)]);
    const long = rig(30_000, [peer(1)]);
    const explicit = rig(30_000, [peer(1)], { timeoutMs: 300 });
    await flush();
    expect(short.pinger.calls[0]?.timeoutMs).toBe(500);
    expect(long.pinger.calls[0]?.timeoutMs).toBe(2000);
    expect(explicit.pinger.calls[0]?.timeoutMs).toBe(300);
    expect(() => new PeerProber({ pinger: short.pinger, clock: short.clock, log: memoryLog().log, intervalMs: 0 })).toThrow(RangeError);
  });
});

describe('PeerProber verdicts', () => {
  it('declares a peer unreachable after two failed probes in a row, logging once with its subnet and public IP', async () => {
    const r = rig(1000, [peer(2)], { answers: { '10.244.2.0': undefined } });
    await runUntil(r.clock, 500);
    expect(r.prober.state().get('peer-2')).toMatchObject({ reachable: true, at: T0 });
    expect(r.prober.state().get('peer-2')?.rttMs).toBeUndefined();
    expect(warnings(r)).toEqual([]);
    await runUntil(r.clock, 3500);
    expect(r.results.map((x) => x.reachable)).toEqual([true, false, false, false]);
    expect(warnings(r)).toHaveLength(1);
    expect(warnings(r)[0]).toMatchObject({ msg: 'peer unreachable over the overlay', subnet: '10.244.2.0/24', publicIP: '192.0.2.2', address: '10.244.2.0' });

    r.pinger.answers.set('10.244.2.0', 0.25);
    await runUntil(r.clock, 5500);
    expect(r.prober.state().get('peer-2')).toMatchObject({ reachable: true, rttMs: 0.25, at: T0 + 5000 });
    expect(infos(r)).toHaveLength(1);
    expect(infos(r)[0]).toMatchObject({ msg: 'peer reachable again over the overlay', subnet: '10.244.2.0/24', publicIP: '192.0.2.2' });
    expect(warnings(r)).toHaveLength(1);
  });

  it('does not flap on single lost packets', async () => {
    const r = rig(1000, [peer(3)], { answers: { '10.244.3.0': undefined } });
    for (let pass = 0; pass < 8; pass++) {
      await runUntil(r.clock, pass * 1000 + 500);
      r.pinger.answers.set('10.244.3.0', pass % 2 === 0 ? 1 : undefined);
    }
    expect(r.results.map((x) => x.reachable)).toEqual(Array(8).fill(true));
    expect(r.results.map((x) => x.rttMs)).toEqual([undefined, 1, undefined, 1, undefined, 1, undefined, 1]);
    expect(r.lines.filter((l) => l.level >= 30)).toEqual([]);
  });

  it('counts a ping that times out as a failure, at the time the timeout ends', async () => {
    const r = rig(1000, [peer(4)], { timeoutMs: 300, answers: { '10.244.4.0': 'timeout' } });
    await runUntil(r.clock, 1500);
    expect(r.results.map((x) => [x.at - T0, x.reachable])).toEqual([
      [300, true],
      [1300, false],
    ]);
  });

  it('ends a probe the pinger never answers one second after its timeout, as a failure', async () => {
    const r = rig(5000, [peer(5)], { timeoutMs: 2000, answers: { '10.244.5.0': 'hang' } });
    await runUntil(r.clock, 2999);
    expect(r.results).toEqual([]);
    await runUntil(r.clock, 3000);
    expect(r.results.map((x) => x.at - T0)).toEqual([3000]);
    await runUntil(r.clock, 8000);
    expect(r.results.map((x) => [x.at - T0, x.reachable])).toEqual([
      [3000, true],
      [8000, false],
    ]);
  });

  it('does not probe a peer again while its previous probe is still out', async () => {
    const r = rig(1000, [peer(6)], { timeoutMs: 1200, answers: { '10.244.6.0': 'hang' } });
    await runUntil(r.clock, 3500);
    // Sent at 0 and given up on at 2200 (timeout + 1 s): the slots at 1000 and 2000 are skipped.
    expect(rel(r.pinger.at('10.244.6.0'))).toEqual([0, 3000]);
  });

  it('discards the result of a probe for a peer removed while it was out', async () => {
    const r = rig(1000, [peer(1), peer(2)], { timeoutMs: 400, answers: { '10.244.1.0': 'timeout' } });
    await runUntil(r.clock, 100);
    r.prober.setTargets([peer(2)]);
    await runUntil(r.clock, 900);
    expect(r.results.map((x) => x.target.key)).toEqual(['peer-2']);
    expect([...r.prober.state().keys()]).toEqual(['peer-2']);
  });

  it('logs a pinger that cannot ping at all once, and leaves the verdicts alone', async () => {
    const denied = new Error('Operation not permitted');
    const r = rig(1000, [peer(1), peer(2)], { answers: { '10.244.1.0': denied, '10.244.2.0': denied } });
    await runUntil(r.clock, 3900);
    expect(r.pinger.calls).toHaveLength(8);
    expect(warnings(r).map((l) => [l.msg, l['err']])).toEqual([['cannot send peer probes', 'Operation not permitted']]);
    expect(r.prober.state().size).toBe(0);
  });

  it('keeps going when the result consumer throws', async () => {
    const clock = new ManualClock(T0);
    const pinger = new FakePinger(clock);
    const { log, lines } = memoryLog();
    const prober = new PeerProber({ pinger, clock, log, intervalMs: 1000, batchMs: 0, onResult: () => { throw new Error('boom'); } });
    prober.setTargets([peer(1)]);
    const abort = new AbortController();
    const running = prober.run(abort.signal);
    await runUntil(clock, 2500);
    abort.abort();
    await running;
    expect(pinger.calls).toHaveLength(3);
    expect(prober.state().get('peer-1')?.reachable).toBe(true);
    expect(lines.filter((l) => l.msg === 'peer probe result consumer failed')).toHaveLength(3);
  });
});

describe('PeerProber run', () => {
  it('settles when the signal aborts, with probes still out, leaving no sleeps behind and the pinger open', async () => {
    const r = rig(1000, [peer(1), peer(2)], { timeoutMs: 800, answers: { '10.244.2.0': 'hang' } });
    await runUntil(r.clock, 600);
    const before = r.results.length;
    await r.stop();
    expect(r.clock.pending).toBe(0);
    expect(r.results).toHaveLength(before);
    expect(r.pinger.closed).toBe(false);
  });

  it('refuses to run twice at once', async () => {
    const r = rig(1000, [peer(1)]);
    await expect(r.prober.run(new AbortController().signal)).rejects.toThrow(/already running/);
  });
});
