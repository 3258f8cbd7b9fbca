/**
 * Side by side with upstream flannel in Kubernetes mode, on the real control plane (test/helpers/kube-cluster.ts:
 * kube-apiserver, node IPAM, etcd 3.6): hosts alternate between upstream's flanneld v0.28.9 and ours, both with
 * --kube-subnet-mgr and the manifest's service account. Proven here: every pod reaches every other over vxlan, and
 * the Node annotations each side publishes are what the other publishes (same keys, same value spelling), so either
 * daemon reads the other's and a node can change daemon without its peers noticing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLANNEL_ANNOTATION, startKubeCluster, type KubeCluster } from '../helpers/kube-cluster.js';
import { NetnsRun, removeStaleNamespaces } from '../helpers/netns.js';
import { killStaleTrackedProcesses } from '../helpers/processes.js';
import { addPod, pingMatrix, type Pod } from '../helpers/topology.js';

const run = new NetnsRun('uk');
const HOSTS = ['h1', 'h2', 'h3', 'h4'];
const UPSTREAM = ['h2', 'h4'];
let cluster: KubeCluster;

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
    const pods: Pod[] = [];
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
