/**
 * Masquerade and forwarding end to end: two hosts, a pod on each, and an "outside" namespace (203.0.113.0/24)
 * behind the hub that has no route back to the pod network. A pod reaches the outside only through its host's
 * masquerade (the echo sees the host's address); pod-to-pod traffic keeps the pod's own address; rules deleted by
 * hand come back within the resync period; a FORWARD policy of DROP does not stop pods. With iptables and nftables,
 * and the same for IPv6 on a dual-stack underlay (ip6tables and the `ip6 flannel-ipv6` table; outside 2001:db8:203::1).
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { startUdpEcho, udpProbe, type UdpEcho } from '../helpers/echo.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
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

describe.each([
  { mode: 'iptables', config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } } },
  { mode: 'nftables', config: { Network: '10.244.0.0/16', EnableNFTables: true, Backend: { Type: 'vxlan' } } },
])('traffic rules with $mode', ({ mode, config }) => {
  it('masquerades pod traffic leaving the network, keeps pod addresses inside it, and repairs deleted rules', async () => {
    const { outside } = await setUp(mode === 'iptables' ? 'ti' : 'tn', config);
    const c = cluster!;
    const [p1, p2] = [c.pods[0]!, c.pods[1]!];
    const h1 = c.topology.host('h1').ns;

    const out = await startUdpEcho(outside, 7777);
    echoes.push(out);
    expect(await udpProbe(p1.ns, '203.0.113.1', 7777)).toBe(true);
    expect(out.senders()).toEqual(['192.0.2.1']);

    const inside = await startUdpEcho(p2.ns, 7778);
    echoes.push(inside);
    expect(await udpProbe(p1.ns, p2.ip, 7778)).toBe(true);
    expect(inside.senders()).toEqual([p1.ip]);

    // Deleted by hand: back within the 1 s resync.
    if (mode === 'iptables') await h1.exec('iptables', ['-t', 'nat', '-F', 'FLANNEL-POSTRTG']);
    else await h1.exec('nft', ['flush', 'chain', 'ip', 'flannel-ipv4', 'postrtg']);
    expect(await udpProbe(p1.ns, '203.0.113.1', 7777, 500)).toBe(false);
    await waitFor('rules restored', async () => ((await udpProbe(p1.ns, '203.0.113.1', 7777, 500)) ? true : undefined), 5000, 100);
    expect(out.senders().at(-1)).toBe('192.0.2.1');
  });

  if (mode === 'iptables') {
    it('forwards pod traffic even when the FORWARD policy is DROP', async () => {
      await setUp('tf', config);
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

    const out6 = await startUdpEcho(outside, 7777, 6);
    const out4 = await startUdpEcho(outside, 7777, 4);
    echoes.push(out6, out4);
    expect(await udpProbe(p1.ns, OUTSIDE_IP6, 7777)).toBe(true);
    expect(out6.senders()).toEqual([h1.ip6]);
    expect(await udpProbe(p1.ns, '203.0.113.1', 7777)).toBe(true);
    expect(out4.senders()).toEqual(['192.0.2.1']);

    const inside = await startUdpEcho(p2.ns, 7778, 6);
    echoes.push(inside);
    expect(await udpProbe(p1.ns, p2.ip6!, 7778)).toBe(true);
    expect(inside.senders()).toEqual([p1.ip6]);

    // Only the IPv6 rules go; the IPv4 ones stay, and the IPv6 ones are back within the 1 s resync.
    if (mode === 'ip6tables') await h1.ns.exec('ip6tables', ['-t', 'nat', '-F', 'FLANNEL-POSTRTG']);
    else await h1.ns.exec('nft', ['flush', 'chain', 'ip6', 'flannel-ipv6', 'postrtg']);
    expect(await udpProbe(p1.ns, OUTSIDE_IP6, 7777, 500)).toBe(false);
    expect(await udpProbe(p1.ns, '203.0.113.1', 7777, 500)).toBe(true);
    await waitFor('IPv6 rules restored', async () => ((await udpProbe(p1.ns, OUTSIDE_IP6, 7777, 500)) ? true : undefined), 5000, 100);
    expect(out6.senders().at(-1)).toBe(h1.ip6);
  });

  if (mode === 'ip6tables') {
    it('forwards pod IPv6 traffic even when the ip6tables FORWARD policy is DROP', async () => {
      await setUp('t6f', config, 'dual');
      for (const h of cluster!.topology.hosts) await h.ns.exec('ip6tables', ['-P', 'FORWARD', 'DROP']);
      const v6 = cluster!.pods.map((p) => ({ ...p, ip: p.ip6! }));
      expect((await pingMatrix(v6, { count: 1 })).map((f) => `${f.from.ip} -> ${f.to.ip}`)).toEqual([]);
      await cluster!.stopDaemon('h1');
      await cluster!.topology.host('h1').ns.exec('ip6tables', ['-F', 'FLANNEL-FWD']);
      expect((await pingMatrix(v6, { count: 1 })).length).toBeGreaterThan(0);
    });
  }
});
