/**
 * Kubernetes mode end to end against a real control plane (test/helpers/kube-cluster.ts): etcd 3.6, kube-apiserver
 * with TLS and RBAC, kube-controller-manager running node IPAM, in the hub at https://192.0.2.254:6443; each host
 * runs the real flanneld with --kube-subnet-mgr and the manifest's service account. Scenarios: Nodes registered
 * before node IPAM runs wait, then start with the podCIDRs it assigns; each node publishes its annotations and
 * NetworkUnavailable=False; pods ping across hosts; a Node deleted from the API leaves its peers' datapath; the
 * apiserver restarted while the hosts cannot reach it, and etcd compacted, leaves the datapath in place and a Node
 * added meanwhile reaches every datapath; every request flanneld made is one the manifest's ClusterRole grants, and
 * the real authorizer refuses what it does not grant.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KUBE_API_CALLS } from '../../flanneld/subnet/kube/kube-api-calls.js';
import { Kubectl } from '../../lab/kube/kubectl.js';
import { FLANNELD_BIN } from '../helpers/flanneld-process.js';
import { FLANNEL_ANNOTATION as P, startKubeCluster, type KubeCluster } from '../helpers/kube-cluster.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { addPod, pingMatrix, type Pod, type Topology } from '../helpers/topology.js';

const run = new NetnsRun('ku');
const HOSTS = ['h1', 'h2', 'h3'];
let cluster: KubeCluster;
let topology: Topology;
const podCidr: Record<string, string> = {};
const pods: Pod[] = [];

const routeTo = async (ns: Netns, subnet: string): Promise<string> => (await ns.ip('route', 'show', subnet)).trim();
/** Hosts cannot reach the apiserver (their own OUTPUT chain rejects it) until `allowApi`. */
const blockApi = (ns: Netns): Promise<string> => ns.exec('iptables', ['-I', 'OUTPUT', '-p', 'tcp', '--dport', '6443', '-j', 'REJECT', '--reject-with', 'tcp-reset']);
const allowApi = (ns: Netns): Promise<string> => ns.exec('iptables', ['-D', 'OUTPUT', '-p', 'tcp', '--dport', '6443', '-j', 'REJECT', '--reject-with', 'tcp-reset']);

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  cluster = await startKubeCluster(run, {
    hosts: 3,
    netConf: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
    flanneldArgs: ['--healthz-port=8081', '--healthz-ip=127.0.0.1'],
    nodeIpam: false,
  });
  topology = cluster.topology;
});

afterAll(async () => {
  await cluster?.stop();
  await run.cleanup();
});

describe('flanneld with --kube-subnet-mgr on a real control plane', () => {
  it('waits while node IPAM has not given its Node a podCIDR, and starts with the one it assigns', async () => {
    for (const host of HOSTS) {
      await cluster.registerNode(host);
      cluster.start(host);
    }
    for (const host of HOSTS) {
      await waitFor(`${host} to say it waits`, () => (cluster.daemon(host)?.output().includes('has no spec.podCIDR yet') ? true : undefined), 30_000);
      expect(cluster.daemon(host)?.output()).toContain(`node \\"${host}\\" has no spec.podCIDR yet`);
      expect(cluster.readEnv(host)).toBeUndefined();
    }
    await cluster.startComponent('kube-controller-manager');
    for (const host of HOSTS) {
      const env = await cluster.waitForSubnetEnv(host);
      const node = await cluster.node(host);
      const cidr = node?.spec?.podCIDR as string;
      expect(cidr).toMatch(/^10\.244\.\d+\.0\/24$/);
      expect(node?.spec?.podCIDRs).toEqual([cidr]);
      expect(env).toContain(`FLANNEL_SUBNET=${cidr.replace('.0/24', '.1/24')}`);
      podCidr[host] = cidr;
    }
    expect(new Set(Object.values(podCidr)).size).toBe(3);
  });

  it('publishes its lease as Node annotations and sets NetworkUnavailable=False', async () => {
    for (const host of HOSTS) {
      const node = await waitFor(`${host} annotations and condition`, async () => {
        const n = await cluster.node(host);
        const cond = n?.status?.conditions?.find((c) => c.type === 'NetworkUnavailable');
        return cond?.status === 'False' && n?.metadata?.annotations?.[`${P}public-ip`] ? n : undefined;
      }, 20_000);
      const mac = /link\/ether (\S+)/.exec(await topology.host(host).ns.ip('link', 'show', 'flannel.1'))?.[1];
      expect(node.metadata?.annotations).toMatchObject({
        [`${P}kube-subnet-manager`]: 'true',
        [`${P}backend-type`]: 'vxlan',
        [`${P}backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`,
        [`${P}public-ip`]: topology.host(host).ip,
      });
      expect(node.status?.conditions?.find((c) => c.type === 'NetworkUnavailable')).toMatchObject({ status: 'False', reason: 'FlannelIsUp' });
      // The Node's other status, set at registration as a kubelet sets it, is left as it was.
      expect(node.status?.addresses).toContainEqual({ type: 'InternalIP', address: topology.host(host).ip });
      const healthz = await topology.host(host).ns.exec('node', ['-e', "fetch('http://127.0.0.1:8081/readyz').then(async r => console.log(r.status, await r.text()))"]);
      expect(healthz).toContain('200 ok');
    }
  });

  it('carries pod traffic between every pair of hosts', async () => {
    for (const [i, host] of HOSTS.entries()) pods.push(await addPod(topology.host(host), `p${i + 1}`, podCidr[host] as string, 1));
    const failures = await pingMatrix(pods, { count: 1 });
    expect(failures.map((f) => `${f.from.ip} -> ${f.to.ip}`)).toEqual([]);
  });

  it("removes a Node deleted from the API from its peers' datapath", async () => {
    await cluster.daemon('h3')?.stop();
    await cluster.kubectl.deleteNode('h3');
    for (const host of ['h1', 'h2']) {
      await waitFor(`${host} to drop the route to h3`, async () => ((await routeTo(topology.host(host).ns, podCidr['h3'] as string)) === '' ? true : undefined), 15_000);
    }
    expect(await topology.host('h1').ns.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).not.toContain(`dst ${topology.host('h3').ip}`);
  });

  it("refuses a Node whose annotations steal a live node's VtepMAC or publish a multicast one; the real peers keep talking", async () => {
    const h1 = topology.host('h1').ns;
    const h2Mac = /link\/ether (\S+)/.exec(await topology.host('h2').ns.ip('link', 'show', 'flannel.1'))?.[1] as string;
    const h2Fdb = `${h2Mac} dst ${topology.host('h2').ip}`;
    const peer = (mac: string, ip: string) => ({ 'kube-subnet-manager': 'true', 'backend-type': 'vxlan', 'backend-data': `{"VNI":1,"VtepMAC":"${mac}"}`, 'public-ip': ip });
    await cluster.createPeerNode('thief', peer(h2Mac, '192.0.2.77'));
    await cluster.createPeerNode('noisy', peer('01:00:5e:00:00:01', '192.0.2.78'));
    const refused = async (): Promise<string[]> => {
      const report = JSON.parse(await h1.exec(process.execPath, [FLANNELD_BIN, 'status', '--json', '--healthz-port=8081'])) as { refusedPeers: { reason: string }[] };
      return report.refusedPeers.map((r) => r.reason).sort();
    };
    await waitFor('h1 to refuse both', async () => ((await refused()).length === 2 ? true : undefined), 30_000);
    expect(await refused()).toEqual(['bad-vtep-mac', 'duplicate-vtep-mac']);
    expect(await h1.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).toContain(h2Fdb);
    expect(await h1.exec('node', ['-e', "fetch('http://127.0.0.1:8081/readyz').then(async r => console.log(r.status, await r.text()))"])).toContain('200 ok');
    await cluster.kubectl.run(['delete', 'node', 'thief', 'noisy']);
    await waitFor('h1 to forget them', async () => ((await refused()).length === 0 ? true : undefined), 30_000);
    expect(await h1.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).toContain(h2Fdb);
    expect(await pingMatrix([pods[0] as Pod, pods[1] as Pod], { count: 1 })).toEqual([]);
  });

  it('keeps the datapath across an apiserver restart and an etcd compaction, and applies a Node added meanwhile', async () => {
    const hosts = ['h1', 'h2'].map((h) => topology.host(h));
    for (const h of hosts) await blockApi(h.ns);
    await cluster.stopComponent('kube-apiserver');
    await cluster.startComponent('kube-apiserver');
    const [p1, p2] = pods;
    expect(await pingMatrix([p1 as Pod, p2 as Pod], { count: 1 })).toEqual([]);
    expect(await routeTo(hosts[0]!.ns, podCidr['h2'] as string)).toContain('dev flannel.1');
    // A node joins while the hosts cannot see it (node IPAM gives it a podCIDR), and etcd forgets the history since.
    await cluster.createPeerNode('far', {
      'kube-subnet-manager': 'true', 'backend-type': 'vxlan',
      'backend-data': '{"VNI":1,"VtepMAC":"0a:00:00:00:00:99"}', 'public-ip': '192.0.2.99',
    });
    const farCidr = await waitFor('node IPAM to give "far" a podCIDR', async () => (await cluster.kubectl.node('far'))?.spec?.podCIDR, 15_000);
    await cluster.compact();
    for (const h of hosts) await allowApi(h.ns);
    for (const h of hosts) {
      await waitFor(`${h.name} route to the node that joined`, async () => ((await routeTo(h.ns, farCidr)).includes(`via ${farCidr.replace('/24', '')} dev flannel.1`) ? true : undefined), 30_000);
    }
    expect(await hosts[0]!.ns.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).toContain('0a:00:00:00:00:99 dst 192.0.2.99');
    expect(await pingMatrix([p1 as Pod, p2 as Pod], { count: 1 })).toEqual([]);
  });

  it('makes only requests the manifest ClusterRole grants, all of them allowed by the real authorizer', () => {
    const granted = new Set(KUBE_API_CALLS.map((c) => `${c.verb} ${c.resource}`));
    const made = cluster.flannelRequests();
    expect(made.length).toBeGreaterThan(0);
    const calls = made.map((e) => `${e.verb} ${e.objectRef?.resource}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ''}`);
    expect([...new Set(calls)].filter((c) => !granted.has(c))).toEqual([]);
    expect(made.filter((e) => (e.responseStatus?.code ?? 200) === 403).map((e) => `${e.verb} ${e.requestURI}`)).toEqual([]);
    expect(new Set(calls)).toEqual(new Set(['get nodes', 'list nodes', 'watch nodes', 'patch nodes/status']));
  });

  it('is refused by the real authorizer outside the ClusterRole (list pods, delete or update nodes)', async () => {
    const asFlannel = new Kubectl(cluster.kubectl.binary, cluster.kubectl.hub, cluster.flannelKubeconfig);
    const refused = async (args: string[]): Promise<string> => {
      const err = await asFlannel.run(args).then(() => undefined, (e: Error) => e);
      return err?.message ?? 'allowed';
    };
    expect(await refused(['get', 'pods', '-A'])).toMatch(/Forbidden|cannot list resource "pods"/);
    expect(await refused(['delete', 'node', 'h2'])).toMatch(/Forbidden|cannot delete resource "nodes"/);
    expect(await refused(['label', 'node', 'h2', 'x=y'])).toMatch(/Forbidden|cannot patch resource "nodes"/);
    expect(await refused(['get', 'secrets', '-n', 'kube-system'])).toMatch(/Forbidden/);
    expect(await asFlannel.run(['auth', 'can-i', 'patch', 'nodes', '--subresource=status'])).toContain('yes');
    expect(await cluster.kubectl.node('h2')).toBeDefined();
  });
});
