#!/usr/bin/env node
/**
 * Pings one address with the raw-socket Pinger and prints one JSON line with every RTT (null for no reply), the
 * pinger's counters and the CPU time the pings cost. Tests start it with `ip netns exec <ns>` so the raw sockets
 * live in that namespace: the test runner itself never opens one in the root namespace.
 *
 *   node dist/test/drivers/probe-driver.js <address> [count] [--identifier N] [--concurrency N] [--timeout MS]
 *
 * `count` pings (default 1) with at most `concurrency` in flight (default: all of them at once).
 *
 *   node dist/test/drivers/probe-driver.js <address> <count> --prober-interval MS [--batch MS] [--passes N] [--timeout MS]
 *
 * runs a PeerProber over `count` targets that all point at `address` (one key and subnet each) on the system
 * clock until every target has `passes` results, and prints when each probe went out, the verdicts and the logs.
 * `--batch` is the prober's batch window (its default when absent).
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { formatIp, parseIp, type IpAddress } from '../../flanneld/ip/address.js';
import { ipNet } from '../../flanneld/ip/cidr.js';
import { PeerProber, type ProbeResult, type ProbeTarget } from '../../flanneld/probe/peer-prober.js';
import { createRawSocketPinger, type Pinger } from '../../flanneld/probe/pinger.js';
import { systemClock } from '../../flanneld/runtime/clock.js';

const MAX_COUNT = 100_000;

function usage(message: string): never {
  process.stderr.write(`probe-driver: ${message}\nusage: probe-driver <address> [count] [--identifier N] [--concurrency N] [--timeout MS]\n`);
  process.exit(2);
}

function integer(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) usage(`${name} must be an integer in [${min}, ${max}], got ${text}`);
  return value;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    identifier: { type: 'string' },
    concurrency: { type: 'string' },
    timeout: { type: 'string' },
    'prober-interval': { type: 'string' },
    passes: { type: 'string' },
    batch: { type: 'string' },
  },
});
const address = parseIp(positionals[0] ?? '');
if (!address) usage(`not an IP address: ${positionals[0] ?? '(none)'}`);
const count = integer('count', positionals[1], 1, 1, MAX_COUNT);
const concurrency = integer('--concurrency', values.concurrency, count, 1, MAX_COUNT);
const timeoutMs = integer('--timeout', values.timeout, 1000, 1, 60_000);
const identifier = values.identifier === undefined ? undefined : integer('--identifier', values.identifier, 0, 0, 0xffff);

const proberInterval = values['prober-interval'] === undefined ? undefined : integer('--prober-interval', values['prober-interval'], 0, 1, 3_600_000);
const passes = integer('--passes', values.passes, 1, 1, 1000);
const batchMs = values.batch === undefined ? undefined : integer('--batch', values.batch, 0, 0, 3_600_000);

const pinger = createRawSocketPinger({ ...(identifier === undefined ? {} : { identifier }), maxInFlight: Math.max(concurrency, 1) });
if (proberInterval !== undefined) {
  await runProber(pinger, address, proberInterval);
  process.exit(0);
}
const rtts: (number | null)[] = new Array<number | null>(count).fill(null);
let next = 0;
const cpuBefore = process.cpuUsage();
const wallBefore = performance.now();
// `concurrency` workers take the next index until all `count` are done.
const worker = async (): Promise<void> => {
  while (next < count) {
    const i = next++;
    rtts[i] = (await pinger.ping(address, timeoutMs)) ?? null;
  }
};
try {
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
} catch (err) {
  process.stderr.write(`probe-driver: ${err instanceof Error ? err.message : String(err)}\n`);
  pinger.close();
  process.exit(1);
}
const cpu = process.cpuUsage(cpuBefore);
const wallMs = performance.now() - wallBefore;
const stats = pinger.stats();
pinger.close();
process.stdout.write(
  `${JSON.stringify({
    address: positionals[0],
    identifier: pinger.identifier,
    count,
    concurrency,
    answered: rtts.filter((r) => r !== null).length,
    rtts,
    stats,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    wallMs,
  })}\n`,
);

async function runProber(raw: Pinger & { stats(): unknown }, to: IpAddress, intervalMs: number): Promise<void> {
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void (logs.length < 100 && logs.push(JSON.parse(line) as Record<string, unknown>)) });
  const sentAt: number[] = [];
  const started = performance.now();
  // Records when each probe left, relative to the start, to show the spread.
  const timed: Pinger = {
    ping: (a, t) => {
      sentAt.push(performance.now() - started);
      return raw.ping(a, t);
    },
    close: () => raw.close(),
  };
  const results = new Map<string, ProbeResult[]>();
  const stop = new AbortController();
  const prober = new PeerProber({
    pinger: timed,
    clock: systemClock,
    log,
    intervalMs,
    timeoutMs,
    ...(batchMs === undefined ? {} : { batchMs }),
    onResult: (r) => {
      const list = results.get(r.target.key) ?? [];
      list.push(r);
      results.set(r.target.key, list);
      if (results.size === count && [...results.values()].every((l) => l.length >= passes)) stop.abort();
    },
  });
  const targets: ProbeTarget[] = Array.from({ length: count }, (_, i) => ({
    key: `peer-${i}`,
    address: to,
    subnet: ipNet(4, (10n << 24n) + (244n << 16n) + BigInt(i * 256), 24),
    publicIP: parseIp(`198.51.100.${(i % 254) + 1}`) as IpAddress,
  }));
  prober.setTargets(targets);
  const deadline = setTimeout(() => stop.abort(), passes * intervalMs + 2 * timeoutMs + 1000);
  const cpuStart = process.cpuUsage();
  await prober.run(stop.signal);
  const cpuUsed = process.cpuUsage(cpuStart);
  clearTimeout(deadline);
  raw.close();
  const verdicts = [...prober.state().values()];
  process.stdout.write(
    `${JSON.stringify({
      address: formatIp(to),
      count,
      passes,
      intervalMs,
      probes: sentAt.length,
      sentAt,
      results: [...results.values()].reduce((n, l) => n + l.length, 0),
      reachable: verdicts.filter((v) => v.reachable).length,
      answered: verdicts.filter((v) => v.rttMs !== undefined).length,
      logs: logs.map((l) => ({ level: l['level'], msg: l['msg'], subnet: l['subnet'], publicIP: l['publicIP'] })),
      stats: raw.stats(),
      cpuUserUs: cpuUsed.user,
      cpuSystemUs: cpuUsed.system,
      wallMs: performance.now() - started,
    })}\n`,
  );
}
