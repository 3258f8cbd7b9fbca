/**
 * Masquerade and forwarding end to end: two hosts, a pod on each, and an "outside" namespace (203.0.113.0/24)
 * behind the hub that has no route back to the pod network. A pod reaches the outside only through its host's
 * masquerade (the echo sees the host's address); pod-to-pod traffic keeps the pod's own address; a masquerade chain
 * flushed by hand stops that traffic and is put back by the daemon's resync; a FORWARD policy of DROP does not stop
 * pods. With iptables and nftables, and the same for IPv6 on a dual-stack underlay (ip6tables and the
 * `ip6 flannel-ipv6` table; outside 2001:db8:203::1).
 *
 * Nothing here races the daemon. Its loops run on their own clock (peers programmed after subnet.env, rules
 * checked every second), so every assertion is either about a state the test waits for with a deadline (routes
 * to the peers, the chain back as it was) or about a moment when the daemon cannot act: while a flushed chain is
 * looked at, the daemon is paused (SIGSTOP by PID), since its 1 s repair could otherwise come before the
 * test's datagram or after it.
 */
import { readFileSync } from 'node:fs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { startUdpEcho, udpProbe, type UdpEcho } from '../helpers/echo.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { childPids, killStaleTrackedProcesses, waitFor, type TrackedProcess } from '../helpers/processes.js';
import { pingMatrix, skipDad, type UnderlayStack } from '../helpers/topology.js';

let run: NetnsRun | undefined;
let cluster: Cluster | undefined;
const echoes: UdpEcho[] = [];

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
});

afterEach(async () => {
  for (const e of echoes.splice(0)) await e.stop();
  await cluster?.stop();
  cluster = undefined;
  await run?.cleanup();
});

async function setUp(tag: string, config: object, stack: UnderlayStack = 'v4'): Promise<{ outside: Netns }> {
  run = new NetnsRun(tag);
  cluster = await startCluster(run, { hosts: 2, stack, config, flanneldArgs: ['--ip-masq', '--iptables-resync=1'] });
  const outside = await run.create('out');
  const hub = cluster.topology.hub;
  await hub.ip('link', 'add', 'vout', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside.name);
  await hub.ip('addr', 'add', '203.0.113.254/24', 'dev', 'vout');
  if (stack !== 'v4') {
    await skipDad(hub, 'vout');
    await hub.ip('addr', 'add', `${OUTSIDE_GW6}/64`, 'dev', 'vout', 'nodad');
  }
  await hub.ip('link', 'set', 'vout', 'up');
  await outside.ip('addr', 'add', '203.0.113.1/24', 'dev', 'eth0');
  if (stack !== 'v4') await outside.ip('addr', 'add', `${OUTSIDE_IP6}/64`, 'dev', 'eth0', 'nodad');
  await outside.ip('link', 'set', 'eth0', 'up');
  // The outside knows the hosts' underlay, never the pod network: only masqueraded traffic can get answers.
  await outside.ip('route', 'add', '192.0.2.0/24', 'via', '203.0.113.254');
  if (stack !== 'v4') await outside.ip('-6', 'route', 'add', '2001:db8:2::/64', 'via', OUTSIDE_GW6);
  return { outside };
}

const OUTSIDE_IP6 = '2001:db8:203::1';
const OUTSIDE_GW6 = '2001:db8:203::fe';
/**
 * The outside's echo for the traffic checks, and a second one for the datagram sent while the chain is empty:
 * that datagram leaves a conntrack entry without NAT for its (source port, 7779), which must not be able to catch
 * a later check to 7777 that happens to draw the same source port.
 */
const ECHO_PORT = 7777;
const UNMASQUERADED_PORT = 7779;

/**
 * Waits until every host has its route to every other host's subnets. The daemons program peers after writing
 * subnet.env (which is all startCluster waits for), and routes go in after the neighbour and FDB entries they use,
 * so once the routes are there pod-to-pod traffic does not depend on how far the daemons have got.
 */
async function overlayProgrammed(c: Cluster): Promise<void> {
  for (const h of c.topology.hosts) {
    for (const other of c.topology.hosts.filter((o) => o !== h)) {
      for (const subnet of c.subnetsOf(other.name)) {
        const family = subnet.includes(':') ? '-6' : '-4';
        await waitFor(`${h.name}'s route to ${subnet}`, async () => ((await h.ns.ip(family, 'route', 'show', subnet)).trim() !== '' ? true : undefined), 15_000);
      }
    }
  }
}

/** The masquerade chain of one family as its tool prints it (no counters or handles, so equal text is equal rules). */
function postrtg(ns: Netns, mode: string, family: 4 | 6): Promise<string> {
  if (mode === 'nftables') return ns.exec('nft', ['list', 'chain', family === 4 ? 'ip' : 'ip6', `flannel-ipv${family}`, 'postrtg']);
  return ns.exec(family === 4 ? 'iptables' : 'ip6tables', ['-t', 'nat', '-S', 'FLANNEL-POSTRTG']);
}

async function flushPostrtg(ns: Netns, mode: string, family: 4 | 6): Promise<void> {
  if (mode === 'nftables') await ns.exec('nft', ['flush', 'chain', family === 4 ? 'ip' : 'ip6', `flannel-ipv${family}`, 'postrtg']);
  else await ns.exec(family === 4 ? 'iptables' : 'ip6tables', ['-t', 'nat', '-F', 'FLANNEL-POSTRTG']);
}

/** How many times the daemon has re-applied its rules (keep-rules.ts logs each repair once). */
const repairsLogged = (daemon: TrackedProcess): number => daemon.output().split('Some traffic rules are missing').length - 1;

/** Firewall tools the daemon has started and that are still running (zombies it cannot reap while paused excluded). */
function firewallCommandsInFlight(pid: number): number[] {
  return childPids(pid).filter((child) => {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${child}/stat`, 'utf8');
    } catch {
      return false; // already gone
    }
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    return stat[close + 2] !== 'Z' && /^(ip6?tables|nft|xtables)/.test(comm);
  });
}

/**
 * Runs `during` with the daemon stopped (SIGSTOP to its PID, SIGCONT after, whatever happens), so a rule deleted
 * inside stays deleted until `during` returns. A firewall command the daemon had already started would still run
 * to its end, so the window opens only once none is left: in steady state those are only its read-only checks.
 */
async function withDaemonPaused(daemon: TrackedProcess, during: () => Promise<void>): Promise<void> {
  process.kill(daemon.pid, 'SIGSTOP');
  try {
    await waitFor('the paused daemon\'s firewall commands to finish', () => (firewallCommandsInFlight(daemon.pid).length === 0 ? true : undefined), 10_000, 20);
    await during();
  } finally {
    process.kill(daemon.pid, 'SIGCONT');
  }
}

describe.each([
  { mode: 'iptables', config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } } },
  { mode: 'nftables', config: { Network: '10.244.0.0/16', EnableNFTables: true, Backend: { Type: 'vxlan' } } },
])('traffic rules with $mode', ({ mode, config }) => {
  it('masquerades pod traffic leaving the network, keeps pod addresses inside it, and repairs deleted rules', async () => {
    const { outside } = await setUp(mode === 'iptables' ? 'ti' : 'tn', config);
    const c = cluster!;
    const [p1, p2] = [c.pods[0]!, c.pods[1]!];
    const h1 = c.topology.host('h1').ns;
    const daemon = c.daemon('h1');

    const out = await startUdpEcho(outside, ECHO_PORT);
    const spare = await startUdpEcho(outside, UNMASQUERADED_PORT);
    echoes.push(out, spare);
    expect(await udpProbe(p1.ns, '203.0.113.1', ECHO_PORT)).toBe(true);
    expect(out.senders()).toEqual(['192.0.2.1']);
    // The second echo answers too while the rules are in, so its silence below is the missing masquerade's doing.
    expect(await udpProbe(p1.ns, '203.0.113.1', UNMASQUERADED_PORT)).toBe(true);
    expect(spare.senders()).toEqual(['192.0.2.1']);

    await overlayProgrammed(c);
    const inside = await startUdpEcho(p2.ns, 7778);
    echoes.push(inside);
    expect(await udpProbe(p1.ns, p2.ip, 7778)).toBe(true);
    expect(inside.senders()).toEqual([p1.ip]);

    // Flushed by hand while the daemon cannot repair it: the outside, with no route to pods, never answers.
    const rules = await postrtg(h1, mode, 4);
    expect(rules).toMatch(/masquerade/i);
    expect(repairsLogged(daemon)).toBe(0);
    await withDaemonPaused(daemon, async () => {
      await flushPostrtg(h1, mode, 4);
      expect(await postrtg(h1, mode, 4)).not.toMatch(/masquerade/i);
      expect(await udpProbe(p1.ns, '203.0.113.1', UNMASQUERADED_PORT, 500)).toBe(false);
    });
    // Running again, the daemon puts the chain back as it was (1 s resync) and pods are masqueraded again.
    await waitFor('the flushed chain to be restored', async () => ((await postrtg(h1, mode, 4)) === rules ? true : undefined), 15_000);
    await waitFor('the repair to be logged', () => (repairsLogged(daemon) > 0 ? true : undefined), 5000);
    expect(await udpProbe(p1.ns, '203.0.113.1', ECHO_PORT)).toBe(true);
    expect(out.senders()).toEqual(['192.0.2.1', '192.0.2.1']);
  });

  if (mode === 'iptables') {
    it('forwards pod traffic even when the FORWARD policy is DROP', async () => {
      await setUp('tf', config);
      await overlayProgrammed(cluster!);
      for (const h of cluster!.topology.hosts) await h.ns.exec('iptables', ['-P', 'FORWARD', 'DROP']);
      const failures = await pingMatrix(cluster!.pods, { count: 1 });
      expect(failures.map((f) => `${f.from.ip} -> ${f.to.ip}`)).toEqual([]);
      // And the forward rules are what lets them through: without FLANNEL-FWD they stop.
      await cluster!.stopDaemon('h1');
      await cluster!.topology.host('h1').ns.exec('iptables', ['-F', 'FLANNEL-FWD']);
      expect((await pingMatrix(cluster!.pods, { count: 1 })).length).toBeGreaterThan(0);
    });
  }
});

describe.each([
  { mode: 'ip6tables', config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:a::/48', Backend: { Type: 'vxlan' } } },
  { mode: 'nftables', config: { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '2001:db8:a::/48', EnableNFTables: true, Backend: { Type: 'vxlan' } } },
])('IPv6 traffic rules with $mode (dual-stack)', ({ mode, config }) => {
  it('masquerades pod IPv6 traffic leaving the network, keeps pod addresses inside it, and repairs deleted rules', async () => {
    const { outside } = await setUp(mode === 'ip6tables' ? 't6i' : 't6n', config, 'dual');
    const c = cluster!;
    const [p1, p2] = [c.pods[0]!, c.pods[1]!];
    const h1 = c.topology.host('h1');
    const daemon = c.daemon('h1');
    const rulesMode = mode === 'ip6tables' ? 'iptables' : 'nftables';

    const out6 = await startUdpEcho(outside, ECHO_PORT, 6);
    const out4 = await startUdpEcho(outside, ECHO_PORT, 4);
    const spare6 = await startUdpEcho(outside, UNMASQUERADED_PORT, 6);
    echoes.push(out6, out4, spare6);
    expect(await udpProbe(p1.ns, OUTSIDE_IP6, ECHO_PORT)).toBe(true);
    expect(out6.senders()).toEqual([h1.ip6]);
    expect(await udpProbe(p1.ns, '203.0.113.1', ECHO_PORT)).toBe(true);
    expect(out4.senders()).toEqual(['192.0.2.1']);
    expect(await udpProbe(p1.ns, OUTSIDE_IP6, UNMASQUERADED_PORT)).toBe(true);
    expect(spare6.senders()).toEqual([h1.ip6]);

    await overlayProgrammed(c);
    const inside = await startUdpEcho(p2.ns, 7778, 6);
    echoes.push(inside);
    expect(await udpProbe(p1.ns, p2.ip6!, 7778)).toBe(true);
    expect(inside.senders()).toEqual([p1.ip6]);

    // Only the IPv6 chain goes, while the daemon cannot repair it: IPv6 to the outside stops, IPv4 keeps working.
    const rules6 = await postrtg(h1.ns, rulesMode, 6);
    const rules4 = await postrtg(h1.ns, rulesMode, 4);
    expect(rules6).toMatch(/masquerade/i);
    expect(repairsLogged(daemon)).toBe(0);
    await withDaemonPaused(daemon, async () => {
      await flushPostrtg(h1.ns, rulesMode, 6);
      expect(await postrtg(h1.ns, rulesMode, 6)).not.toMatch(/masquerade/i);
      expect(await postrtg(h1.ns, rulesMode, 4)).toBe(rules4);
      expect(await udpProbe(p1.ns, OUTSIDE_IP6, UNMASQUERADED_PORT, 500)).toBe(false);
      expect(await udpProbe(p1.ns, '203.0.113.1', ECHO_PORT)).toBe(true);
    });
    // Running again, the daemon puts the IPv6 chain back as it was and leaves the IPv4 one as it is.
    await waitFor('the flushed IPv6 chain to be restored', async () => ((await postrtg(h1.ns, rulesMode, 6)) === rules6 ? true : undefined), 15_000);
    await waitFor('the repair to be logged', () => (repairsLogged(daemon) > 0 ? true : undefined), 5000);
    expect(await postrtg(h1.ns, rulesMode, 4)).toBe(rules4);
    expect(await udpProbe(p1.ns, OUTSIDE_IP6, ECHO_PORT)).toBe(true);
    expect(out6.senders()).toEqual([h1.ip6, h1.ip6]);
  });

  if (mode === 'ip6tables') {
    it('forwards pod IPv6 traffic even when the ip6tables FORWARD policy is DROP', async () => {
      await setUp('t6f', config, 'dual');
      await overlayProgrammed(cluster!);
      for (const h of cluster!.topology.hosts) await h.ns.exec('ip6tables', ['-P', 'FORWARD', 'DROP']);
      const v6 = cluster!.pods.map((p) => ({ ...p, ip: p.ip6! }));
      expect((await pingMatrix(v6, { count: 1 })).map((f) => `${f.from.ip} -> ${f.to.ip}`)).toEqual([]);
      await cluster!.stopDaemon('h1');
      await cluster!.topology.host('h1').ns.exec('ip6tables', ['-F', 'FLANNEL-FWD']);
      expect((await pingMatrix(v6, { count: 1 })).length).toBeGreaterThan(0);
    });
  }
});
