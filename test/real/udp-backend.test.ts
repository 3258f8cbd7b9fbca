/**
 * The udp backend on the real kernel: three host namespaces on the bridge underlay, etcd on the hub, one real
 * flanneld per host with `Backend.Type udp`, a pod per host. Pods ping each other and move 1 MB over TCP through the
 * TUN devices and the native proxy; a destination in no peer's subnet is refused at once (ICMP net unreachable) and
 * counted; what the proxy puts on the wire is upstream's format, captured by plain UDP sockets standing in for a
 * peer on the hub (for pings, and for a TCP transfer whose TSO bursts the proxy cuts itself); flannel0 goes with the
 * daemon and comes back with it; a deleted lease ends forwarding to it.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, spawnTracked, waitFor, type TrackedProcess } from '../helpers/processes.js';
import { HUB_IP, ipJson, linkStats, ping, pingMatrix, type Pod } from '../helpers/topology.js';

const run = new NetnsRun('udp');
const METRICS_PORT = 8471;
const UDP_PORT = 8285;
const SUBNETS_KEY = '/coreos.com/network/subnets/';
let cluster: Cluster;

const pod = (host: string): Pod => {
  const p = cluster.pods.find((x) => x.host.name === host);
  if (!p) throw new Error(`no pod on ${host}`);
  return p;
};
const hostNs = (host: string): Netns => cluster.topology.host(host).ns;
const subnetKey = (subnet: string): string => `${SUBNETS_KEY}${subnet.replace('/', '-')}`;
const pairs = (failures: Awaited<ReturnType<typeof pingMatrix<Pod>>>): string[] =>
  failures.map((f) => `${f.from.host.name} -> ${f.to.host.name} (${f.to.ip})`);

async function metrics(ns: Netns): Promise<Map<string, number>> {
  const text = await ns.exec(process.execPath, ['-e', `fetch('http://127.0.0.1:${METRICS_PORT}/metrics').then(r => r.text()).then(t => process.stdout.write(t))`]);
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(flanneld_[^ ]+) (\S+)$/.exec(line);
    if (m) values.set(m[1] as string, Number(m[2]));
  }
  return values;
}
const noRouteDrops = async (host: string): Promise<number> =>
  (await metrics(hostNs(host))).get('flanneld_udp_dropped_packets_total{reason="no_route"}') ?? NaN;

/** `addr/len` of every IPv4 address on flannel0, or undefined when there is no flannel0. */
async function tunAddresses(ns: Netns): Promise<string[] | undefined> {
  const link = (await ipJson(ns, 'addr', 'show')).find((l) => l['ifname'] === 'flannel0');
  if (!link) return undefined;
  const infos = Array.isArray(link['addr_info']) ? (link['addr_info'] as Record<string, unknown>[]) : [];
  return infos.filter((a) => a['family'] === 'inet').map((a) => `${String(a['local'])}/${String(a['prefixlen'])}`);
}

/** A /24 of the Network that no host holds, so the test cannot collide with a random allocation. */
function freeSubnet(preferred: number): { subnet: string; third: number } {
  const taken = new Set(cluster.topology.hosts.map((h) => cluster.subnetOf(h.name)));
  for (let third = preferred; third < preferred + 50; third++) {
    const subnet = `10.244.${third % 256}.0/24`;
    if (!taken.has(subnet)) return { subnet, third: third % 256 };
  }
  throw new Error('no free subnet');
}

/** Publishes a lease for `subnet` as upstream's udp backend writes one, for a fake peer at the hub; returns its undo. */
async function putFakePeer(subnet: string): Promise<() => Promise<unknown>> {
  const lease = /lease ([0-9a-f]+) granted/.exec(await cluster.etcdctl('lease', 'grant', '60'))?.[1];
  if (!lease) throw new Error('etcdctl lease grant printed no lease id');
  await cluster.etcdctl('put', `--lease=${lease}`, subnetKey(subnet), JSON.stringify({ PublicIP: HUB_IP }));
  // Revoking the etcd lease deletes the key with it, which the daemons see as the peer leaving.
  return () => cluster.etcdctl('lease', 'revoke', lease);
}

/** Runs a node script inside `ns`, tracked by PID; resolves once it prints `ready`. */
async function startScript(ns: Netns, script: string, args: readonly string[]): Promise<TrackedProcess> {
  const proc = spawnTracked('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script, ...args], {}, script.slice(0, 40));
  await waitFor(`script in ${ns.name} ready`, () => {
    if (proc.child.exitCode !== null) throw new Error(`script exited: ${proc.output()}`);
    return proc.output().includes('ready\n') ? true : undefined;
  }, 5000);
  return proc;
}

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  cluster = await startCluster(run, {
    hosts: 3,
    config: { Network: '10.244.0.0/16', Backend: { Type: 'udp' } },
    flanneldArgs: ['--healthz-ip=127.0.0.1', `--healthz-port=${METRICS_PORT}`],
  });
});

afterAll(async () => {
  if (process.env['DEBUG_UDP']) for (const h of ['h1', 'h2', 'h3']) console.log(h, cluster?.daemon(h).output().slice(-4000));
  await cluster?.stop();
  await run.cleanup();
});

describe('udp backend on the real kernel', () => {
  it('opens flannel0 on every host: MTU 1472, the lease network address /32, the Network routed into it', async () => {
    for (const h of cluster.topology.hosts) {
      const own = cluster.subnetOf(h.name).replace(/\.0\/24$/, '.0/32');
      expect(await tunAddresses(h.ns)).toEqual([own]);
      const [link] = await ipJson(h.ns, 'link', 'show', 'flannel0');
      expect(link).toMatchObject({ mtu: 1472 });
      expect((await h.ns.ip('route', 'show', '10.244.0.0/16')).trim()).toMatch(/^10\.244\.0\.0\/16 dev flannel0\b/);
    }
  });

  it('lets every pod ping every other pod', async () => {
    const failures = await pingMatrix(cluster.pods, { count: 2 });
    expect(pairs(failures)).toEqual([]);
  });

  it('carries 1 MB of TCP from pod to pod intact', async () => {
    // The pods keep MTU 1500 while flannel0 has 1472: the transfer also proves path MTU discovery across the TUN.
    const server = await startScript(pod('h2').ns, sinkServer(5001), ['0.0.0.0']);
    try {
      const sent = await sendMegabyte(pod('h1').ns, pod('h2').ip, 5001);
      await waitFor('server digest', () => (/^got /m.test(server.output()) ? true : undefined), 5000);
      expect(sent).toBe(`sent ${server.output().match(/^got (\d+ [0-9a-f]{64})$/m)?.[1]}`);
    } finally {
      await server.stop('SIGTERM', 1000);
    }
  });

  it('refuses a connection into a subnet no peer holds at once (ICMP net unreachable) and counts the drop', async () => {
    const { third } = freeSubnet(250);
    const before = await noRouteDrops('h1');
    const r = await tcpConnect(pod('h1').ns, `10.244.${third}.9`, 80, 5000);
    // Net unreachable (code 0) is what the kernel turns into ENETUNREACH; without it the SYN would just time out.
    expect(r.result).toBe('ENETUNREACH');
    // Well before the first SYN retransmission (1 s): the answer came for the first SYN.
    expect(r.ms).toBeLessThan(900);
    await waitFor('no_route drop counted', async () => ((await noRouteDrops('h1')) > before ? true : undefined), 3000, 100);
  });

  it('exports the proxy\'s read errors as drop reasons, at 0 on a healthy node', async () => {
    const values = await metrics(hostNs('h1'));
    for (const reason of ['tun_read_error', 'udp_receive_error']) {
      expect(values.get(`flanneld_udp_dropped_packets_total{reason="${reason}"}`)).toBe(0);
    }
  });

  it("fails the addon's calls with the errno's own name, and leaves no descriptor or device behind a failed open or start", async () => {
    const h1 = cluster.topology.host('h1');
    const out = await h1.ns.exec(process.execPath, ['-e', ADDON_FAILURES, ADDON, h1.ip, String(UDP_PORT)]);
    const r = JSON.parse(out) as Record<string, unknown>;
    // The daemon holds flannel0: a second attach is refused with EBUSY.
    expect(r['busy']).toMatchObject({ code: 'EBUSY', syscall: 'ioctl', message: expect.stringContaining('TUNSETIFF flannel0') });
    // No short list of names stands between the kernel and the caller any more: this one used to arrive as EIO.
    expect(r['badName']).toMatchObject({ code: 'EINVAL', syscall: 'ioctl', message: expect.stringContaining('TUNSETIFF bad/name') });
    // The daemon's socket holds the port: the start fails naming the address, and takes the new device down with it.
    expect(r['taken']).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind', message: expect.stringContaining(`${h1.ip}:${UDP_PORT}`) });
    expect(r).toMatchObject({ deviceWhileOpen: true, deviceAfter: false, leakedFds: 0 });
  });

  it("puts upstream's wire format on the underlay: the inner IPv4 packet as the UDP payload, TTL decremented once by the proxy", async () => {
    const { subnet, third } = freeSubnet(200);
    const target = `10.244.${third}.5`;
    const cleanup: (() => Promise<unknown>)[] = [];
    try {
      // A listener on the hub stands in for a peer there: it prints each datagram it gets, in hex.
      const listener = await startScript(cluster.topology.hub, `
        const d = require('dgram').createSocket('udp4');
        d.on('message', (m, r) => process.stdout.write('dgram ' + r.address + ':' + r.port + ' ' + m.toString('hex') + '\\n'));
        d.bind(Number(process.argv[2]), process.argv[1], () => process.stdout.write('ready\\n'));
        setTimeout(() => process.exit(3), 9000);
      `, [HUB_IP, String(UDP_PORT)]);
      cleanup.push(() => listener.stop('SIGTERM', 1000));
      cleanup.push(await putFakePeer(subnet));
      const h1 = cluster.topology.host('h1');
      const ownTun = cluster.subnetOf('h1').replace(/\/24$/, '');
      // Until h1 has the fake peer, its proxy drops the pings for want of a route: ping until one arrives.
      const datagrams = (): { from: string; packet: ParsedPacket }[] =>
        [...listener.output().matchAll(/^dgram (\S+) ([0-9a-f]+)$/gm)].map((m) => ({ from: m[1] as string, packet: parse(m[2] as string) }));
      const fromPod = await waitFor("a datagram from the pod's ping", async () => {
        await ping(pod('h1').ns, target, { count: 1, waitSec: 0.3 });
        return datagrams().find((d) => d.packet.src === pod('h1').ip);
      }, 5000, 0);
      await ping(h1.ns, target, { count: 1, waitSec: 0.3 });
      const fromHost = await waitFor("a datagram from the host's ping", () => datagrams().find((d) => d.packet.src === ownTun), 2000);

      // Sent from the socket the proxy listens on.
      expect(fromPod.from).toBe(`${h1.ip}:${UDP_PORT}`);
      expect(fromHost.from).toBe(`${h1.ip}:${UDP_PORT}`);
      const p = fromPod.packet;
      expect(p).toMatchObject({ version: 4, ihl: 5, protocol: 1, src: pod('h1').ip, dst: target, headerChecksumOk: true, icmpType: 8, icmpChecksumOk: true });
      expect(p.totalLength).toBe(p.bytes);
      // The pod sent TTL 64; h1's kernel forwarding it from cni0 into flannel0 took one, the proxy one more.
      expect(p.ttl).toBe(62);
      // Sent by h1 itself, the packet meets no kernel forwarding: the proxy's decrement alone shows.
      expect(fromHost.packet).toMatchObject({ version: 4, src: ownTun, dst: target, protocol: 1, ttl: 63, headerChecksumOk: true });
    } finally {
      for (const undo of cleanup.reverse()) await undo().catch(() => undefined);
    }
  });

  it('cuts TCP into datagrams an upstream peer can take: each one IPv4 packet within the MTU, with valid checksums', async () => {
    const { subnet, third } = freeSubnet(200);
    const alias = `10.244.${third}.5`;
    const h1 = cluster.topology.host('h1');
    const h2 = cluster.topology.host('h2');
    const cleanup: (() => Promise<unknown>)[] = [];
    try {
      // A fake peer on the hub relays to h2, where the address lives: the TCP connection is real, and every
      // datagram h1 sends for it lands first on a plain UDP socket (no GRO), as it would on upstream's proxy.
      const relay = await startScript(cluster.topology.hub, RELAY, [HUB_IP, String(UDP_PORT), h2.ip]);
      cleanup.push(() => relay.stop('SIGTERM', 1000));
      await h2.ns.ip('addr', 'add', `${alias}/32`, 'dev', 'lo');
      cleanup.push(() => h2.ns.ip('addr', 'del', `${alias}/32`, 'dev', 'lo'));
      const server = await startScript(h2.ns, sinkServer(5002), [alias]);
      cleanup.push(() => server.stop('SIGTERM', 1000));
      cleanup.push(await putFakePeer(subnet));

      await waitFor(`${alias} answering through the relay`, async () => ((await ping(pod('h1').ns, alias, { count: 1, waitSec: 0.3 })).ok ? true : undefined), 5000, 0);
      const tunBefore = (await linkStats(h1.ns, 'flannel0'))?.txPackets ?? NaN;
      const sent = await sendMegabyte(pod('h1').ns, alias, 5002);
      const tunPackets = ((await linkStats(h1.ns, 'flannel0'))?.txPackets ?? NaN) - tunBefore;
      await waitFor('server digest', () => (/^got /m.test(server.output()) ? true : undefined), 5000);
      expect(sent).toBe(`sent ${server.output().match(/^got (\d+ [0-9a-f]{64})$/m)?.[1]}`);

      await relay.stop('SIGTERM', 1000);
      const summary = /^summary (.*)$/m.exec(relay.output())?.[1];
      const st = JSON.parse(summary ?? '{}') as RelayStats;
      expect(st.bad).toEqual([]);
      expect(st.tcpPayloadBytes).toBeGreaterThanOrEqual(1 << 20);
      expect(st.maxTcpDatagram).toBeLessThanOrEqual(1472);
      expect(st.tcpSources).toEqual([pod('h1').ip]);
      expect(st.tcpTtls).toEqual([62]);
      // Fewer packets entered flannel0 than left as datagrams: the kernel handed the proxy whole TSO bursts, and
      // the segments checked above are the proxy's own cuts.
      expect(tunPackets).toBeLessThan(st.tcpDatagrams / 2);
    } finally {
      for (const undo of cleanup.reverse()) await undo().catch(() => undefined);
    }
  });

  it('takes flannel0 away with a stopped daemon and brings it back, same address, with a restarted one', async () => {
    const h2 = hostNs('h2');
    const before = await tunAddresses(h2);
    expect(before).toEqual([cluster.subnetOf('h2').replace(/\/24$/, '/32')]);

    await cluster.stopDaemon('h2');
    expect(await tunAddresses(h2)).toBeUndefined();
    expect((await h2.ip('route', 'show', '10.244.0.0/16')).trim()).toBe('');

    await cluster.startDaemon('h2');
    expect(await tunAddresses(h2)).toEqual(before);
    let failures: Awaited<ReturnType<typeof pingMatrix<Pod>>> = [];
    const talking = async (): Promise<true | undefined> => {
      failures = await pingMatrix(cluster.pods, { count: 1 });
      return failures.length === 0 ? true : undefined;
    };
    await waitFor('pods talking again', talking, 5000, 100).catch(() => undefined);
    expect(pairs(failures)).toEqual([]);
  });

  // Last: h3 is gone for good afterwards.
  it('stops forwarding to a peer whose lease is deleted, and keeps forwarding to the others', async () => {
    const h3Subnet = cluster.subnetOf('h3');
    const target = pod('h3').ip;
    // h3's daemon would claim its lease again at once; stopped, it cannot.
    await cluster.stopDaemon('h3');
    await cluster.etcdctl('del', subnetKey(h3Subnet));

    // While the proxy still has the route, a SYN to h3 goes out and dies unanswered at h3's closed port (a
    // timeout); once the route is gone, the proxy answers net unreachable for it at once.
    for (const from of ['h1', 'h2']) {
      const before = await noRouteDrops(from);
      await waitFor(`${from} refusing ${target}`, async () => ((await tcpConnect(pod(from).ns, target, 80, 500)).result === 'ENETUNREACH' ? true : undefined), 5000, 100);
      const r = await ping(pod(from).ns, target, { count: 1, waitSec: 0.5 });
      expect(r.received).toBe(0);
      expect(await noRouteDrops(from)).toBeGreaterThan(before);
    }
    expect(pairs(await pingMatrix([pod('h1'), pod('h2')], { count: 2 }))).toEqual([]);
  });
});

const ADDON = fileURLToPath(new URL('../../dist/native/flannel_udp.node', import.meta.url));

/**
 * Drives the addon directly in a host where the daemon runs (argv: addon path, host IP, udp port): attaching to the
 * daemon's flannel0, then starting a proxy on the daemon's port with a device of its own. Prints what it saw as JSON.
 */
const ADDON_FAILURES = `
  const fs = require('fs');
  const addon = require(process.argv[1]);
  const caught = (f) => { try { f(); return 'no error'; } catch (e) { return { code: e.code, syscall: e.syscall, message: e.message }; } };
  const fds = () => fs.readdirSync('/proc/self/fd').length;
  const device = () => fs.existsSync('/sys/class/net/udpleak0');
  const before = fds();
  const r = { busy: caught(() => addon.openTun('flannel0')), badName: caught(() => addon.openTun('bad/name')) };
  const tun = addon.openTun('udpleak0');
  r.deviceWhileOpen = device();
  const localAddr = process.argv[2].split('.').reduce((a, b) => a * 256 + Number(b), 0);
  r.taken = caught(() => addon.startProxy({ tunFd: tun.fd, localAddr, port: Number(process.argv[3]), mtu: 1400 }));
  r.deviceAfter = device();
  r.leakedFds = fds() - before;
  process.stdout.write(JSON.stringify(r));
`;

/** Connects from inside `ns`: the error code, 'connected' or 'timeout', and how long that took from connect(). */
async function tcpConnect(ns: Netns, ip: string, port: number, timeoutMs: number): Promise<{ result: string; ms: number }> {
  const out = await ns.exec(process.execPath, ['-e', `
    const t0 = performance.now();
    const done = (what) => { process.stdout.write(what + ' ' + Math.round(performance.now() - t0) + '\\n'); process.exit(0); };
    const c = require('net').connect(Number(process.argv[2]), process.argv[1]);
    c.on('connect', () => done('connected'));
    c.on('error', (e) => done(e.code));
    setTimeout(() => done('timeout'), Number(process.argv[3]));
  `, ip, String(port), String(timeoutMs)]);
  const [result = '', ms = 'NaN'] = out.trim().split(' ');
  return { result, ms: Number(ms) };
}

/** A TCP server that takes one connection and prints `got <bytes> <sha256>` of what it received. */
function sinkServer(port: number): string {
  return `
    const h = require('crypto').createHash('sha256');
    let n = 0;
    const s = require('net').createServer((c) => {
      c.on('data', (d) => { h.update(d); n += d.length; });
      c.on('end', () => { process.stdout.write('got ' + n + ' ' + h.digest('hex') + '\\n'); c.end(); s.close(); });
    });
    setTimeout(() => process.exit(3), 9000);
    s.listen(${port}, process.argv[1], () => process.stdout.write('ready\\n'));
  `;
}

/** Sends 1 MiB of random bytes from inside `ns`; resolves with `sent <bytes> <sha256>`. */
async function sendMegabyte(ns: Netns, ip: string, port: number): Promise<string> {
  const out = await ns.exec(process.execPath, ['-e', `
    const data = require('crypto').randomBytes(1 << 20);
    const c = require('net').connect(Number(process.argv[2]), process.argv[1], () => c.end(data));
    c.on('close', () => {
      process.stdout.write('sent ' + data.length + ' ' + require('crypto').createHash('sha256').update(data).digest('hex') + '\\n');
      process.exit(0);
    });
    c.on('error', (e) => { console.error(e.message); process.exit(2); });
    setTimeout(() => process.exit(3), 8000);
  `, ip, String(port)]);
  return out.trim();
}

interface RelayStats {
  bad: string[];
  tcpDatagrams: number;
  tcpPayloadBytes: number;
  maxTcpDatagram: number;
  tcpSources: string[];
  tcpTtls: number[];
}

/**
 * A stand-in peer: checks each datagram as an upstream peer would take it (one whole IPv4 packet, checksums valid)
 * and passes it on to the real peer at argv[3]; prints its findings on SIGTERM.
 */
const RELAY = `
  const d = require('dgram').createSocket('udp4');
  const st = { bad: [], tcpDatagrams: 0, tcpPayloadBytes: 0, maxTcpDatagram: 0, tcpSources: [], tcpTtls: [] };
  const sum = (b) => {
    let s = 0;
    for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (i + 1 < b.length ? b[i + 1] : 0);
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    return s;
  };
  const add = (list, v) => { if (!list.includes(v)) list.push(v); };
  d.on('message', (m) => {
    const bad = (why) => { if (st.bad.length < 5) st.bad.push(why + ' (datagram of ' + m.length + ' bytes)'); };
    const ihl = (m[0] & 15) * 4;
    if (m.length < 20 || m[0] >> 4 !== 4 || ihl < 20) bad('not an IPv4 packet');
    else if (m.readUInt16BE(2) !== m.length) bad('IPv4 total length ' + m.readUInt16BE(2));
    else if (sum(m.subarray(0, ihl)) !== 0xffff) bad('IPv4 header checksum');
    else if (m[9] === 6) {
      const tcp = m.subarray(ihl);
      const pseudo = Buffer.alloc(12);
      m.copy(pseudo, 0, 12, 20);
      pseudo[9] = 6;
      pseudo.writeUInt16BE(tcp.length, 10);
      if (sum(Buffer.concat([pseudo, tcp])) !== 0xffff) bad('TCP checksum');
      st.tcpDatagrams++;
      st.tcpPayloadBytes += tcp.length - (tcp[12] >> 4) * 4;
      st.maxTcpDatagram = Math.max(st.maxTcpDatagram, m.length);
      add(st.tcpSources, [...m.subarray(12, 16)].join('.'));
      add(st.tcpTtls, m[8]);
    }
    d.send(m, Number(process.argv[2]), process.argv[3]);
  });
  process.on('SIGTERM', () => { process.stdout.write('summary ' + JSON.stringify(st) + '\\n'); process.exit(0); });
  d.bind(Number(process.argv[2]), process.argv[1], () => process.stdout.write('ready\\n'));
  setTimeout(() => process.exit(3), 9500);
`;

interface ParsedPacket {
  version: number;
  ihl: number;
  totalLength: number;
  bytes: number;
  ttl: number;
  protocol: number;
  src: string;
  dst: string;
  headerChecksumOk: boolean;
  icmpType: number;
  icmpChecksumOk: boolean;
}

/** Reads the IPv4 header (and the ICMP header after it) from a captured payload. */
function parse(hex: string): ParsedPacket {
  const b = Buffer.from(hex, 'hex');
  const ihl = (b[0] ?? 0) & 0x0f;
  const ipText = (at: number): string => [...b.subarray(at, at + 4)].join('.');
  return {
    version: (b[0] ?? 0) >> 4,
    ihl,
    totalLength: b.readUInt16BE(2),
    bytes: b.length,
    ttl: b[8] ?? -1,
    protocol: b[9] ?? -1,
    src: ipText(12),
    dst: ipText(16),
    // A header with a valid checksum sums to 0xffff in ones' complement, checksum field included.
    headerChecksumOk: onesComplementSum(b.subarray(0, ihl * 4)) === 0xffff,
    icmpType: b[ihl * 4] ?? -1,
    icmpChecksumOk: onesComplementSum(b.subarray(ihl * 4)) === 0xffff,
  };
}

function onesComplementSum(data: Buffer): number {
  let sum = 0;
  for (let i = 0; i < data.length; i += 2) sum += ((data[i] ?? 0) << 8) | (data[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}
