/**
 * Side by side with upstream flannel in Kubernetes mode, on the real control plane (test/helpers/kube-cluster.ts:
 * kube-apiserver, node IPAM, etcd 3.6): hosts alternate between upstream's flanneld v0.28.9 and ours, both with
 * --kube-subnet-mgr and the manifest's service account. Proven here: every pod reaches every other over vxlan, and
 * the Node annotations each side publishes are what the other publishes (same keys, same value spelling), so either
 * daemon reads the other's; and a node changes daemon in place, upstream → ours → upstream, keeping its podCIDR, its
 * VTEP MAC and its pods' traffic.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLANNEL_ANNOTATION, startKubeCluster, type KubeCluster } from '../helpers/kube-cluster.js';
import { NetnsRun, removeStaleNamespaces } from '../helpers/netns.js';
import { killStaleTrackedProcesses } from '../helpers/processes.js';
import { addPod, ping, pingMatrix, type Pod } from '../helpers/topology.js';

const run = new NetnsRun('uk');
const HOSTS = ['h1', 'h2', 'h3', 'h4'];
const UPSTREAM = ['h2', 'h4'];
let cluster: KubeCluster;
const pods: Pod[] = [];

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  cluster = await startKubeCluster(run, { hosts: 4, netConf: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } } });
});

afterAll(async () => {
  await cluster?.stop();
  await run.cleanup();
});

/** A Node's flannel annotations with what differs from node to node (its address, its VTEP MAC) blanked. */
const shape = (annotations: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(annotations).map(([k, v]) =>
  [k, k === `${FLANNEL_ANNOTATION}public-ip` ? '-' : v.replace(/"VtepMAC":"[^"]*"/, '"VtepMAC":"-"')]));

describe('upstream flanneld and ours with --kube-subnet-mgr on one cluster (vxlan)', () => {
  it('lets every pod reach every other, and both publish the same annotations', async () => {
    for (const host of HOSTS) {
      await cluster.registerNode(host);
      if (UPSTREAM.includes(host)) cluster.startUpstream(host);
      else cluster.start(host);
    }
    for (const host of HOSTS) {
      const env = await cluster.waitForSubnetEnv(host);
      const subnet = /FLANNEL_SUBNET=(\S+)/.exec(env)?.[1]?.replace(/\.1\/24$/, '.0/24') as string;
      pods.push(await addPod(cluster.topology.host(host), 'p1', subnet, 1));
    }
    const failures = await pingMatrix(pods, { count: 2 });
    expect(failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`)).toEqual([]);
    const ours = shape(await cluster.annotations('h1'));
    const theirs = shape(await cluster.annotations('h2'));
    expect(Object.keys(ours).sort()).toEqual(Object.keys(theirs).sort());
    expect(theirs).toEqual(ours);
  });
});

describe('in-place migration of one node between upstream flanneld and ours, --kube-subnet-mgr', () => {
  it('keeps the VTEP MAC in its annotations and its pod talking, upstream → ours → upstream', async () => {
    const mac = async (): Promise<string | undefined> => /"VtepMAC":"([^"]+)"/.exec((await cluster.annotations('h2'))[`${FLANNEL_ANNOTATION}backend-data`] ?? '')?.[1];
    const first = await mac();
    expect(first).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    const h1Pod = pods.find((p) => p.host.name === 'h1') as Pod;
    const h2Pod = pods.find((p) => p.host.name === 'h2') as Pod;
    for (const next of ['ours', 'upstream'] as const) {
      const pinging = ping(h1Pod.ns, h2Pod.ip, { count: 100, intervalSec: 0.02 });
      await new Promise((r) => setTimeout(r, 300));
      await cluster.daemon('h2')?.stop('SIGTERM', 5000);
      if (next === 'ours') cluster.start('h2');
      else cluster.startUpstream('h2');
      await cluster.waitForSubnetEnv('h2');
      const result = await pinging;
      expect(result.transmitted, `to ${next}: ${result.output}`).toBe(100);
      expect(result.received, `to ${next}: ${result.output}`).toBeGreaterThanOrEqual(98);
      expect(await mac(), `VtepMAC after moving to ${next}`).toBe(first);
      const failures = await pingMatrix(pods, { count: 2 });
      expect(failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`)).toEqual([]);
    }
  });
});
