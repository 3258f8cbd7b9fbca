/**
 * The lab in Kubernetes mode (`up --kube`), driven as an operator drives it: the real control plane in the hub
 * (etcd 3.6, kube-apiserver, node IPAM), each host's Node registered and its flanneld in --kube-subnet-mgr mode.
 * Proven here: 3 hosts × 2 pods come up with every pair reaching every other and the subnets node IPAM assigned;
 * `kubectl` passes its arguments and exit status through; a Node deleted with it leaves the other hosts' routes;
 * restarting kube-apiserver costs pods nothing; dual-stack, IPv6-only and udp come up the same way; `down` leaves
 * nothing behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { V1Node } from '@kubernetes/client-node';
import { Netns } from '../../lab/netns.js';
import { downLeavesNothing, lab, stateOf, steadyPing, subnetOf, takeDownStaleLabs, upReaching } from '../helpers/lab-driver.js';
import { waitFor } from '../helpers/processes.js';

const ids = { v4: `t${process.pid}k`, dual: `t${process.pid}q`, v6: `t${process.pid}w`, udp: `t${process.pid}u` };

beforeAll(takeDownStaleLabs);
afterAll(async () => {
  for (const id of Object.values(ids)) await lab('down', '--id', id);
});

async function nodes(id: string): Promise<V1Node[]> {
  const run = await lab('kubectl', '--id', id, '--', 'get', 'nodes', '-o', 'json');
  expect(run.code, run.out).toBe(0);
  return (JSON.parse(run.out) as { items: V1Node[] }).items;
}

describe('lab --kube (vxlan)', () => {
  const id = ids.v4;

  it('comes up with 3 hosts × 2 pods on the subnets node IPAM assigned, every pod reaching every other', async () => {
    const out = await upReaching(id, '30/30 pod pairs reachable', '--kube');
    expect(out).toMatch(/• Kubernetes control plane: etcd 3\.6, kube-apiserver on https:\/\/192\.0\.2\.254:6443, node IPAM \(10\.244\.0\.0\/16 \/24 per node\) … done/);
    expect(stateOf(id).kube).toBe(true);
    const all = await nodes(id);
    expect(all.map((n) => n.metadata?.name).sort()).toEqual(['h1', 'h2', 'h3']);
    for (const node of all) {
      const name = node.metadata?.name as string;
      expect(subnetOf(id, name).replace(/\.1\/24$/, '.0/24')).toBe(node.spec?.podCIDR);
      expect(out).toContain(`| ${name} | ${node.spec?.podCIDR} | ${stateOf(id).hosts.find((h) => h.name === name)?.ip} | vxlan |`);
      expect(node.status?.conditions?.find((c) => c.type === 'NetworkUnavailable')).toMatchObject({ status: 'False', reason: 'FlannelIsUp' });
    }
  });

  it('runs kubectl with the admin kubeconfig and passes its exit status through', async () => {
    const missing = await lab('kubectl', '--id', id, '--', 'get', 'node', 'nope');
    expect(missing.code).toBe(1);
    expect(missing.out).toContain('nodes "nope" not found');
    const version = await lab('kubectl', '--id', id, '--', 'version', '-o', 'json');
    expect(version.code, version.out).toBe(0);
    expect(JSON.parse(version.out)).toMatchObject({ clientVersion: { gitVersion: 'v1.35.4' }, serverVersion: { gitVersion: 'v1.35.4' } });
  });

  it('keeps pods talking while kube-apiserver restarts', async () => {
    const target = stateOf(id).pods.find((p) => p.name === 'h2-p1')?.ip as string;
    const pinging = steadyPing(id, 'h1-p1', target, 100);
    const restart = await lab('restart', 'kube-apiserver', '--id', id);
    expect(restart.code, restart.out).toBe(0);
    const { sent, received } = await pinging;
    expect(sent).toBe(100);
    expect(received).toBe(100);
    const status = await lab('status', '--id', id);
    expect(status.out).toContain('30/30 pod pairs reachable');
    expect(status.out.match(/False \(FlannelIsUp\)/g)).toHaveLength(3);
  });

  it("takes a Node deleted with kubectl out of the other hosts' routes", async () => {
    const h3 = subnetOf(id, 'h3').replace(/\.1\/24$/, '.0/24');
    const h1 = new Netns(`ftl-${id}-h1`);
    expect(await h1.ip('route', 'show', h3)).toContain('dev flannel.1');
    expect((await lab('kill', 'h3', '--id', id)).code).toBe(0);
    const deleted = await lab('kubectl', '--id', id, '--', 'delete', 'node', 'h3');
    expect(deleted.code, deleted.out).toBe(0);
    await waitFor('h1 to drop the route to h3', async () => ((await h1.ip('route', 'show', h3)).trim() === '' ? true : undefined), 15_000);
  });

  it('goes down leaving nothing behind', () => downLeavesNothing(id));
});

describe('lab --kube with other families and backends', () => {
  it('dual-stack (--ipv6): node IPAM hands out both families and every pair answers over each', async () => {
    const out = await upReaching(ids.dual, 'pod pairs reachable: IPv4 30/30, IPv6 30/30', '--kube', '--ipv6');
    expect(out).toContain('node IPAM (10.244.0.0/16 /24 + 2001:db8:a::/48 /64 per node)');
    for (const node of await nodes(ids.dual)) expect(node.spec?.podCIDRs).toHaveLength(2);
    await downLeavesNothing(ids.dual);
  });

  it('IPv6 only (--ipv6-only): the apiserver on [2001:db8:2::fe]:6443, every pair answers over IPv6', async () => {
    const out = await upReaching(ids.v6, 'pod pairs reachable: IPv6 6/6', '--kube', '--ipv6-only', '--pods', '1');
    expect(out).toContain('kube-apiserver on https://[2001:db8:2::fe]:6443');
    for (const node of await nodes(ids.v6)) expect(node.spec?.podCIDRs?.[0]).toMatch(/^2001:db8:a:(?:[0-9a-f]{1,4}:)?:\/64$/);
    await downLeavesNothing(ids.v6);
  });

  it('udp: every pair answers through flannel0', async () => {
    await upReaching(ids.udp, '6/6 pod pairs reachable', '--kube', '--backend', 'udp', '--pods', '1');
    await downLeavesNothing(ids.udp);
  });
});
