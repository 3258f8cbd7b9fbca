/**
 * The lab's `up --bgp`, driven as an operator drives it: 3 dual-stack hosts whose flanneld announce to the lab's
 * BIRD router; the office host behind the router reaches every pod in both families; the router holds each host's
 * subnets via that host (in BIRD and in its kernel table); a flanneld restart costs the office's pings next to
 * nothing (graceful restart); kill and restart of the router; and `down` after a lost state file still finds BIRD
 * and both namespaces through the names alone and leaves nothing.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDir } from '../../lab/lab-state.js';
import { downLeavesNothing, lab, namespacesOf, stateOf, steadyPing, takeDownStaleLabs, upReaching } from '../helpers/lab-driver.js';

const id = `t${process.pid}b`;

beforeAll(takeDownStaleLabs);
afterAll(async () => {
  await lab('down', '--id', id);
});

describe('lab with --bgp (dual-stack)', () => {
  it('comes up with the router holding every subnet and the office reaching every pod in both families', async () => {
    const started = Date.now();
    const out = await upReaching(id, 'pod pairs reachable: IPv4 6/6, IPv6 6/6', '--bgp', '--ipv6', '--hosts', '3', '--pods', '1');
    console.log(`up --bgp --ipv6, 3 hosts × 1 pod: ${Date.now() - started} ms`);
    expect(out).toContain('office → every pod: IPv4 3/3, IPv6 3/3');
    expect(out).toMatch(/^\| office \| ok \| ok \| ok \|$/m);
    expect(out).toMatch(/• BGP router ftl-\w+-router \(BIRD, AS 64512, 192\.0\.2\.250, 2001:db8:2::fa\) and office ftl-\w+-office \(203\.0\.113\.10, 2001:db8:3::10\) behind it … done/);
    expect(out).toMatch(/• the router learnt every host's subnet … done, 6 route\(s\)/);
    const state = stateOf(id);
    expect(state.bgp).toEqual({ as: 64512, neighbors: ['192.0.2.1', '2001:db8:2::1', '192.0.2.2', '2001:db8:2::2', '192.0.2.3', '2001:db8:2::3'] });
    expect(state.processes['router']?.argv).toEqual(expect.arrayContaining(['/usr/sbin/bird', '-f', '-c', join(labDir(id), 'router', 'bird.conf')]));
    expect(state.processes['h1']?.argv).toEqual(expect.arrayContaining([
      '--bgp-as=64512', '--bgp-peers=192.0.2.250;as=64512,2001:db8:2::fa;as=64512', '--ip-masq-exclude=203.0.113.0/24,2001:db8:3::/64', '--ip-masq',
    ]));
  });

  it("holds each host's subnets via that host, in BIRD and in the router's kernel table", async () => {
    const status = await lab('status', '--id', id);
    expect(status.code, status.out).toBe(0);
    const leases = [...status.out.matchAll(/^\| (10\.244\.\d+\.0\/24), (2001:db8:a:[0-9a-f]+::\/64) \| (192\.0\.2\.\d), (2001:db8:2::\d) \| vxlan \|/gm)];
    expect(leases).toHaveLength(3);
    const kernel = (await lab('exec', 'router', '--id', id, '--', 'sh', '-c', 'ip route; ip -6 route')).out;
    for (const [, v4, v6, ip, ip6] of leases) {
      const host = `h${ip?.split('.')[3]}`;
      expect(status.out).toContain(`| ${v4} | ${ip} | ${host} | learnt |`);
      expect(status.out).toContain(`| ${v6} | ${ip6} | ${host} | learnt |`);
      expect(kernel).toMatch(new RegExp(`^${v4?.replace(/\./g, '\\.')} via ${ip?.replace(/\./g, '\\.')} dev eth0 proto bird`, 'm'));
      expect(kernel).toMatch(new RegExp(`^${v6} via ${ip6} dev eth0 proto bird`, 'm'));
    }
    expect(status.out).toContain('office → every pod: IPv4 3/3, IPv6 3/3');
    const birdc = await lab('exec', 'router', '--id', id, '--', 'birdc', '-s', join(labDir(id), 'router', 'bird.ctl'), 'show', 'route');
    expect(birdc.out.match(/unicast \[n\d /g)).toHaveLength(6);
  });

  it('keeps the office pinging a pod on h1 while its flanneld restarts (graceful restart)', async () => {
    const h1p1 = stateOf(id).pods.find((p) => p.name === 'h1-p1');
    // ~4 s at 20 ms spacing, the restart in the middle.
    const pings = steadyPing(id, 'office', h1p1?.ip ?? '', 200);
    await new Promise((r) => setTimeout(r, 500));
    const restart = await lab('restart', 'h1', '--id', id);
    expect(restart.code, restart.out).toBe(0);
    const { sent, received } = await pings;
    console.log(`office → h1-p1 over a restart of h1's flanneld: ${sent - received} of ${sent} pings lost`);
    expect(sent).toBe(200);
    expect(received).toBeGreaterThanOrEqual(196);
  });

  it('kill router stops BIRD (status says so), restart router brings the routes back, exec reaches the office', async () => {
    const killed = await lab('kill', 'router', '--id', id);
    expect(killed.code, killed.out).toBe(0);
    expect(killed.out).toMatch(/the router \(BIRD\) killed \(pid \d+\)/);
    expect((await lab('status', '--id', id)).out).toContain('the router (BIRD) is stopped; its routes unknown');
    const restarted = await lab('restart', 'router', '--id', id);
    expect(restarted.out).toMatch(/restart the router \(BIRD\) … done, pid \d+/);
    // The hosts retry on a 1 s backoff; the routes come back within a few seconds.
    const learnt = (out: string): number => out.match(/\| h\d \| learnt \|/g)?.length ?? 0;
    let status = '';
    for (let i = 0; i < 20 && learnt(status) < 6; i++) {
      await new Promise((r) => setTimeout(r, 500));
      status = (await lab('status', '--id', id)).out;
    }
    expect(learnt(status), status).toBe(6);
    expect((await lab('exec', 'office', '--id', id, '--', 'ip', '-6', 'route', 'show', 'default')).out).toContain('default via 2001:db8:3::1 dev eth0');
  });

  it('down finds BIRD, the router and the office by their names even without the state file, and leaves nothing', async () => {
    expect(namespacesOf(id)).toEqual(expect.arrayContaining([`ftl-${id}-router`, `ftl-${id}-office`]));
    await downLeavesNothing(id, { lostState: true, summary: /5 process\(es\) stopped, 9 namespace\(s\) removed/ });
  });
});
