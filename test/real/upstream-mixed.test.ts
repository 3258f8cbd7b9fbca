/**
 * Side by side with upstream flannel in etcd mode: hosts alternate between upstream's flanneld (v0.28.9, built from
 * its Go module by tools/build.sh flannel) and ours on one etcd and one network. Proven here: every pod reaches every
 * other over vxlan, vxlan with DirectRouting and host-gw, whichever daemon runs on either end; and each side's lease
 * is byte for byte what the other writes for the same host (same keys, order and spelling), so either can read and
 * take over the other's.
 */
import { describe, expect, it } from 'vitest';
import { clusterPerTest } from '../helpers/cluster-per-test.js';
import type { Cluster } from '../helpers/cluster.js';
import { pingMatrix } from '../helpers/topology.js';

const startCluster = clusterPerTest();
const UPSTREAM = ['h2', 'h4'];

/** Every lease under the prefix: key → value as stored. */
async function leases(cluster: Cluster): Promise<Map<string, string>> {
  const out = await cluster.etcdctl('get', '--prefix', '/coreos.com/network/subnets/');
  const lines = out.trim().split('\n');
  const found = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) found.set(lines[i] as string, lines[i + 1] as string);
  return found;
}

/** A host's lease value with what differs from host to host (its public IP, its VTEP MAC) blanked. */
const shape = (value: string): string => value.replace(/"PublicIP":"[^"]*"/, '"PublicIP":"-"').replace(/"VtepMAC":"[^"]*"/g, '"VtepMAC":"-"');

describe.each([
  { name: 'vxlan', backend: { Type: 'vxlan' } },
  { name: 'vxlan + DirectRouting', backend: { Type: 'vxlan', DirectRouting: true } },
  { name: 'host-gw', backend: { Type: 'host-gw' } },
])('upstream flanneld and ours on one network, $name', ({ backend }) => {
  it('lets every pod reach every other, and both write the same lease', async () => {
    const cluster = await startCluster('up', { hosts: 4, upstream: UPSTREAM, config: { Network: '10.244.0.0/16', Backend: backend } });
    const failures = await pingMatrix(cluster.pods, { count: 2 });
    expect(failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`)).toEqual([]);
    const all = await leases(cluster);
    expect(all.size).toBe(4);
    const byHost = new Map(cluster.topology.hosts.map((h) => [h.name, all.get(`/coreos.com/network/subnets/${cluster.subnetOf(h.name).replace('/', '-')}`)]));
    const ours = shape(byHost.get('h1') as string);
    const theirs = shape(byHost.get('h2') as string);
    expect(theirs).toBe(ours);
    expect(shape(byHost.get('h3') as string)).toBe(ours);
    expect(shape(byHost.get('h4') as string)).toBe(theirs);
  });
});
