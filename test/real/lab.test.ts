/**
 * The lab end to end, driven as an operator drives it (`node dist/lab/lab.js …`, which `npm run lab` runs
 * after installing): up with 3 hosts × 2 pods for vxlan and host-gw with the whole matrix passing; a flanneld
 * restart that pods on the other hosts never notice; kill, add-pod and exec; and down leaving nothing behind. Then
 * the same over IPv4 + IPv6 (--ipv6) and IPv6 only (--ipv6-only), where every pair must answer in each family; and
 * wireguard, each host's flanneld with a wireguard-go of its own behind a private /run/wireguard.
 * Lab ids are `t<runner pid><letter>`, so a later run can take down what a dead run left.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRunning, processStartTime } from '../../lab/lab-processes.js';
import { labDir, type LabState, type ProcessRecord } from '../../lab/lab-state.js';
import { wireguardSocketOf } from '../helpers/flanneld-process.js';
import { downLeavesNothing, lab, namespacesOf, stateOf, steadyPing, subnetOf, takeDownStaleLabs, upReaching } from '../helpers/lab-driver.js';
import { childrenNamed } from '../helpers/processes.js';

const ids = {
  vxlan: `t${process.pid}v`, hostGw: `t${process.pid}g`, dual: `t${process.pid}d`, dualHostGw: `t${process.pid}h`, v6: `t${process.pid}s`,
  wireguard: `t${process.pid}w`,
};

beforeAll(takeDownStaleLabs);
afterAll(async () => {
  for (const id of Object.values(ids)) await lab('down', '--id', id);
});

describe('lab with vxlan', () => {
  const id = ids.vxlan;

  it('comes up with 3 hosts × 2 pods and every pod reaches every other', async () => {
    const out = await upReaching(id, '30/30 pod pairs reachable', '--hosts', '3', '--pods', '2');
    expect(out).toMatch(/• every flanneld has its lease and wrote subnet.env … done \(\d+ ms\)/);
    const state = stateOf(id);
    expect(state.hosts.map((h) => h.name)).toEqual(['h1', 'h2', 'h3']);
    expect(state.pods).toHaveLength(6);
    expect(out).toMatch(/\| h1 \| 192\.0\.2\.1 \| 10\.244\.\d+\.1\/24 \| 1450 \| flannel\.1 \| ([0-9a-f]{2}:){5}[0-9a-f]{2} \| running/);
    expect(out.match(/^\| 10\.244\.\d+\.0\/24 \| 192\.0\.2\.\d \| vxlan \|/gm)).toHaveLength(3);
    expect(readFileSync(join(labDir(id), 'h1', 'flanneld.log'), 'utf8')).toContain('"msg":"starting flanneld"');
  });

  it('restarts one flanneld while pods on the other hosts keep talking without a lost packet', async () => {
    const state = stateOf(id);
    const h2p1 = state.pods.find((p) => p.name === 'h2-p1');
    const h3p1 = state.pods.find((p) => p.name === 'h3-p1');
    const h1p1 = state.pods.find((p) => p.name === 'h1-p1');
    const subnetBefore = subnetOf(id, 'h1');
    // ~4 s of traffic at 20 ms spacing: across hosts away from h1, and into h1's pods through its datapath.
    const pings = [steadyPing(id, 'h2-p1', h3p1?.ip ?? '', 200), steadyPing(id, 'h3-p1', h1p1?.ip ?? '', 200)];
    await new Promise((r) => setTimeout(r, 500));
    const restart = await lab('restart', 'h1', '--id', id);
    expect(restart.code, restart.out).toBe(0);
    expect(restart.out).toMatch(/restart flanneld on h1 … done, pid \d+ \(\d+ ms\)/);
    const [others, intoH1] = await Promise.all(pings);
    expect(others).toEqual({ sent: 200, received: 200 });
    expect(intoH1).toEqual({ sent: 200, received: 200 });
    expect(stateOf(id).processes['h1']?.pid).not.toBe(state.processes['h1']?.pid);
    expect(subnetOf(id, 'h1')).toBe(subnetBefore);
    expect(h2p1).toBeDefined();
  });

  it('kill leaves the datapath in place and status says the daemon stopped; add-pod and exec work', async () => {
    const killed = await lab('kill', 'h2', '--id', id);
    expect(killed.code, killed.out).toBe(0);
    const status = await lab('status', '--id', id);
    expect(status.out).toMatch(/\| h2 \| 192\.0\.2\.2 \|.*\| stopped \|/);
    expect(status.out).toContain('30/30 pod pairs reachable');
    expect((await lab('kill', 'h2', '--id', id)).out).toContain('h2 is not running');
    expect((await lab('restart', 'h2', '--id', id)).code).toBe(0);

    const added = await lab('add-pod', 'h3', '--id', id);
    expect(added.code, added.out).toBe(0);
    expect(added.out).toMatch(/done, h3-p3 10\.244\.\d+\.4/);
    expect(added.out).toMatch(/^\| h3-p3 \| ok \| ok \| ok \| ok \| ok \| ok \| — \|$/m);

    const routes = await lab('exec', 'h1', '--id', id, '--', 'ip', 'route');
    expect(routes.out.match(/via 10\.244\.\d+\.0 dev flannel\.1 proto 70 onlink/g)).toHaveLength(2);
    expect((await lab('exec', 'h1-p1', '--id', id, '--', 'false')).code).toBe(1);
    expect((await lab('exec', 'h9', '--id', id, '--', 'true')).out).toContain('no "h9" in lab');
  });

  it('down removes every namespace, process and file of the lab, and is safe to run again', async () => {
    const state = stateOf(id);
    const records = Object.values(state.processes);
    const down = await lab('down', '--id', id);
    expect(down.code, down.out).toBe(0);
    expect(down.out).toMatch(/4 process\(es\) stopped, 11 namespace\(s\) removed/);
    expect(namespacesOf(id)).toEqual([]);
    expect(records.filter(isRunning)).toEqual([]);
    expect(existsSync(labDir(id))).toBe(false);
    expect((await lab('down', '--id', id)).out).toContain('0 process(es) stopped, 0 namespace(s) removed');
    expect((await lab('status', '--id', id)).out).toContain(`lab "${id}" is not up`);
  });
});

describe('lab with host-gw', () => {
  const id = ids.hostGw;

  it('comes up with 3 hosts × 2 pods, routes via the hosts, the whole matrix passes, and goes down clean', async () => {
    await upReaching(id, '30/30 pod pairs reachable', '--backend', 'host-gw');
    const routes = await lab('exec', 'h1', '--id', id, '--', 'ip', 'route');
    expect(routes.out.match(/10\.244\.\d+\.0\/24 via 192\.0\.2\.[23] dev eth0/g)).toHaveLength(2);
    await downLeavesNothing(id);
  });
});

/** The wireguard-go each of the lab's flanneld started (its children), by PID and start time. */
function wireguardGo(state: LabState): ProcessRecord[] {
  return state.hosts.flatMap((h) => childrenNamed(state.processes[h.name]?.pid ?? 0, 'wireguard-go'))
    .map((pid) => ({ pid, startTime: processStartTime(pid) ?? '', netns: '', argv: [], log: '' }));
}

describe('lab with wireguard', () => {
  const id = ids.wireguard;

  it('runs a wireguard-go per host on its own /run/wireguard, keeps the key over a restart, and down leaves none', async () => {
    const out = await upReaching(id, '6/6 pod pairs reachable', '--backend', 'wireguard', '--pods', '1');
    expect(out).toContain('{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}');
    // WireGuard costs 80 bytes of the underlay's 1500; a TUN device has no MAC.
    expect(out).toMatch(/^\| h1 \| 192\.0\.2\.1 \| 10\.244\.\d+\.1\/24 \| 1420 \| flannel-wg \| - \| running/m);
    expect(out.match(/^\| 10\.244\.\d+\.0\/24 \| 192\.0\.2\.\d \| wireguard \|/gm)).toHaveLength(3);
    const before = stateOf(id);
    const first = wireguardGo(before);
    expect(first).toHaveLength(3);
    for (const h of before.hosts) expect(existsSync(wireguardSocketOf(before.processes[h.name]?.pid ?? 0, 'flannel-wg')), h.name).toBe(true);
    const keyFile = join(labDir(id), 'h1', 'wireguard.key');
    const key = readFileSync(keyFile, 'utf8');

    const restart = await lab('restart', 'h1', '--id', id);
    expect(restart.code, restart.out).toBe(0);
    expect(readFileSync(keyFile, 'utf8')).toBe(key);
    const after = stateOf(id);
    const second = wireguardGo(after);
    expect(second).toHaveLength(3);
    // h1's old wireguard-go went with its flanneld; the other hosts' are the same processes.
    expect(first.filter(isRunning).map((r) => r.pid)).toEqual(second.slice(1).map((r) => r.pid));
    const status = await lab('status', '--id', id);
    expect(status.code, status.out).toBe(0);
    expect(status.out).toContain('6/6 pod pairs reachable');

    await downLeavesNothing(id);
    expect([...first, ...second].filter(isRunning)).toEqual([]);
  });
});

describe('dual-stack lab (--ipv6) with vxlan', () => {
  const id = ids.dual;

  it('comes up with both families on the underlay and the pods, and every pod reaches every other over each', async () => {
    const out = await upReaching(id, 'pod pairs reachable: IPv4 30/30, IPv6 30/30', '--ipv6');
    expect(out).toContain('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"2001:db8:a::/48","Backend":{"Type":"vxlan"}}');
    expect(out).toMatch(/• underlay bridge 192\.0\.2\.0\/24 \+ 2001:db8:2::\/64 in ftl-\w+-hub … done/);
    // vxlan over IPv6 costs 70 bytes, so both devices take the smaller MTU.
    expect(out).toMatch(/^\| h1 \| 192\.0\.2\.1, 2001:db8:2::1 \| 10\.244\.\d+\.1\/24, 2001:db8:a:[0-9a-f]+::1\/64 \| 1430 \| flannel\.1, flannel-v6\.1 \|/m);
    expect(out.match(/^\| 10\.244\.\d+\.0\/24, 2001:db8:a:[0-9a-f]+::\/64 \| 192\.0\.2\.\d, 2001:db8:2::\d \| vxlan \|/gm)).toHaveLength(3);
    const state = stateOf(id);
    expect(state.stack).toBe('dual');
    expect(state.pods.every((p) => /^10\.244\./.test(p.ip) && p.ip6?.startsWith('2001:db8:a:'))).toBe(true);
    const routes = await lab('exec', 'h1', '--id', id, '--', 'ip', '-6', 'route');
    expect(routes.out.match(/2001:db8:a:[0-9a-f]+::\/64 via 2001:db8:a:[0-9a-f]+:: dev flannel-v6\.1 .*onlink/g)).toHaveLength(2);
  });

  it('keeps the mode for status, add-pod and restart without being told again', async () => {
    expect((await lab('restart', 'h1', '--id', id)).code).toBe(0);
    const added = await lab('add-pod', 'h2', '--id', id);
    expect(added.code, added.out).toBe(0);
    expect(added.out).toMatch(/done, h2-p3 10\.244\.\d+\.4, 2001:db8:a:[0-9a-f]+::4/);
    expect(added.out).toMatch(/^\| IPv4: from \\ to \|/m);
    expect(added.out).toMatch(/^\| IPv6: from \\ to \|/m);
    expect(added.out.match(/^\| h2-p3 \| ok \| ok \| ok \| ok \| ok \| ok \| — \|$/gm)).toHaveLength(2);
    const status = await lab('status', '--id', id);
    expect(status.out).toContain('pod pairs reachable: IPv4 42/42, IPv6 42/42');
    expect(status.code, status.out).toBe(0);
  });

  it('down leaves no namespace, process or file', async () => {
    await downLeavesNothing(id);
  });
});

describe('dual-stack lab (--ipv6) with host-gw', () => {
  const id = ids.dualHostGw;

  it('routes each family via the peer host, and a pod on a host\'s fresh cni0 answers over IPv6 at once', async () => {
    const run = await lab('up', '--id', id, '--ipv6', '--backend', 'host-gw', '--pods', '0');
    expect(run.code, run.out).toBe(0);
    // Each first pod gets a new cni0 from the bridge plugin, whose gateway address goes through DAD first; the flannel
    // plugin's ADD returns only after that, so the new pod's IPv6 pings right away must all answer.
    for (const host of ['h1', 'h2', 'h3']) {
      const added = await lab('add-pod', host, '--id', id);
      expect(added.code, added.out).toBe(0);
      expect(added.out).not.toContain('FAIL');
    }
    const status = await lab('status', '--id', id);
    expect(status.out).toContain('pod pairs reachable: IPv4 6/6, IPv6 6/6');
    const routes = await lab('exec', 'h1', '--id', id, '--', 'ip', '-6', 'route');
    expect(routes.out.match(/2001:db8:a:[0-9a-f]+::\/64 via 2001:db8:2::[23] dev eth0/g)).toHaveLength(2);
    await downLeavesNothing(id);
  });
});

describe('IPv6-only lab (--ipv6-only) with vxlan', () => {
  const id = ids.v6;

  it('has no IPv4 on the hosts, etcd on [2001:db8:2::fe]:2379, and every pod reaches every other over IPv6', async () => {
    const out = await upReaching(id, 'pod pairs reachable: IPv6 30/30', '--ipv6-only');
    expect(out).toContain('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8:a::/48","Backend":{"Type":"vxlan"}}');
    expect(out).toContain('• etcd on http://[2001:db8:2::fe]:2379, network config written … done');
    expect(out).toMatch(/^\| h1 \| 2001:db8:2::1 \| 2001:db8:a:[0-9a-f]+::1\/64 \| 1430 \| flannel-v6\.1 \|/m);
    expect(out.match(/^\| 2001:db8:a:[0-9a-f]+::\/64 \| 2001:db8:2::\d \| vxlan \|/gm)).toHaveLength(3);
    expect(out).not.toMatch(/IPv4: from/);
    const state = stateOf(id);
    expect(state.stack).toBe('v6');
    expect(state.processes['h1']?.argv).toContain('--etcd-endpoints=http://[2001:db8:2::fe]:2379');
    expect((await lab('exec', 'h1', '--id', id, '--', 'ip', '-4', 'addr', 'show', 'dev', 'eth0')).out.trim()).toBe('');
    expect((await lab('exec', 'h1', '--id', id, '--', 'ip', '-4', 'route')).out.trim()).toBe('');
  });

  it('survives an etcd and a flanneld restart, then goes down leaving nothing', async () => {
    expect((await lab('restart', 'etcd', '--id', id)).code).toBe(0);
    expect((await lab('restart', 'h2', '--id', id)).code).toBe(0);
    const status = await lab('status', '--id', id);
    expect(status.out).toContain('pod pairs reachable: IPv6 30/30');
    expect(status.out.match(/^\| 2001:db8:a:[0-9a-f]+::\/64 \| 2001:db8:2::\d \| vxlan \|/gm)).toHaveLength(3);
    await downLeavesNothing(id);
  });
});

describe('lab command line', () => {
  it('refuses udp with IPv6 before making anything', async () => {
    const run = await lab('up', '--id', ids.v6, '--ipv6', '--backend', 'udp');
    expect(run.code).toBe(2);
    expect(run.out).toContain('lab: --backend udp carries IPv4 only');
    expect(namespacesOf(ids.v6)).toEqual([]);
  });
});
