/**
 * Packets crossing namespaces: three hosts on one underlay, etcd on the hub, the real flanneld on every host, a
 * pod per host. Every pod pings every other pod over vxlan, vxlan + DirectRouting and host-gw, and the path is
 * proven by the vxlan device's counters.
 */
import { describe, expect, it } from 'vitest';
import type { Cluster } from '../helpers/cluster.js';
import { clusterPerTest } from '../helpers/cluster-per-test.js';
import { linkStats, pingMatrix } from '../helpers/topology.js';

const startCluster = clusterPerTest();

async function txPackets(cluster: Cluster): Promise<number> {
  let sum = 0;
  for (const h of cluster.topology.hosts) sum += (await linkStats(h.ns, 'flannel.1'))?.txPackets ?? 0;
  return sum;
}

describe.each([
  { name: 'vxlan', backend: { Type: 'vxlan' }, encapsulated: true },
  { name: 'vxlan + DirectRouting', backend: { Type: 'vxlan', DirectRouting: true }, encapsulated: false },
  { name: 'host-gw', backend: { Type: 'host-gw' }, encapsulated: false },
])('overlay with $name', ({ backend, encapsulated }) => {
  it('lets every pod reach every other pod, on the expected path', async () => {
    const cluster = await startCluster('ov', { hosts: 3, config: { Network: '10.244.0.0/16', Backend: backend } });
    const before = await txPackets(cluster);
    const failures = await pingMatrix(cluster.pods, { count: 2 });
    expect(failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`)).toEqual([]);
    const sent = (await txPackets(cluster)) - before;
    if (encapsulated) expect(sent).toBeGreaterThanOrEqual(12);
    else expect(sent).toBe(0);
  });
});
