/**
 * Kubernetes mode with IPv6, end to end against a real control plane (test/helpers/kube-cluster.ts: etcd 3.6,
 * kube-apiserver, kube-controller-manager running node IPAM with one --cluster-cidr per family of net-conf.json), the
 * real flanneld with --kube-subnet-mgr on each host of a dual-stack or IPv6-only underlay. Nodes are registered as a
 * kubelet would and get one podCIDR per family from node IPAM, so every expectation reads them from the API. Proven
 * here: each node publishes both families' annotations (and only the IPv6 ones on an IPv6-only cluster, whose API is
 * served over IPv6), every pod reaches every other pod over each family with vxlan and host-gw, a change an operator
 * makes to a peer's IPv6 annotations alone (public-ipv6 through public-ipv6-overwrite, the IPv6 VtepMAC) with kubectl
 * is applied on the other hosts, node-public-ipv6 picks the address a node publishes, both VTEP MACs survive a
 * restart that lost the devices, and a node whose podCIDRs lack the IPv6 CIDR while net-conf.json enables IPv6 says
 * so and waits (without publishing anything) until the Node is fixed.
 *
 * That last Node is h4, created with an IPv4 podCIDR already in its spec, as a Node allocated before the cluster
 * went dual-stack is: the real range allocator only marks podCIDRs it finds as taken and never adds the missing
 * family (upstream's behaviour, and the case flanneld's message is about), so node IPAM keeps running for everyone
 * else. This was preferred over `nodeIpam: false` with hand-patched podCIDRs because the fix is then the real one:
 * the Node deleted and registered again, and node IPAM giving it both families.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLANNEL_ANNOTATION as P, startKubeCluster, type KubeCluster } from '../helpers/kube-cluster.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { addPod, pingMatrix, type Pod } from '../helpers/topology.js';

const V6_NETWORK = '2001:db8:a::/48';
const DUAL = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6_NETWORK };
const V4_POD_CIDR = /^10\.244\.\d+\.0\/24$/;
const V6_POD_CIDR = /^2001:db8:a:[0-9a-f:]*:\/64$/;
/** The CIDR's network address: the next hop flanneld routes a vxlan peer's subnet through. */
const netAddr = (cidr: string): string => cidr.split('/')[0] as string;
/** The address flanneld gives the node itself in its subnet (subnet.env's FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET). */
const firstV4 = (cidr: string): string => cidr.replace('.0/', '.1/');
const firstV6 = (cidr: string): string => cidr.replace('::/', '::1/');
const v6Endpoints = (pods: readonly Pod[]): Pod[] => pods.map((p) => ({ ...p, ip: p.ip6 as string }));
const describeFailures = (failures: { from: Pod; to: { ip: string } }[]): string[] => failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`);
const macOf = async (ns: Netns, dev: string): Promise<string | undefined> => /link\/ether (\S+)/.exec(await ns.ip('link', 'show', dev))?.[1];
const fdb = (ns: Netns, dev: string): Promise<string> => ns.exec('bridge', ['fdb', 'show', 'dev', dev]);
const allAnnotations = async (cluster: KubeCluster, name: string): Promise<Record<string, string>> => (await cluster.node(name))?.metadata?.annotations ?? {};

/** The podCIDRs node IPAM gave the Node, once it has one per family wanted. */
async function podCidrsOf(cluster: KubeCluster, name: string, families: number): Promise<string[]> {
  return waitFor(`node IPAM to give ${name} ${families} podCIDR(s)`, async () => {
    const cidrs = (await cluster.node(name))?.spec?.podCIDRs;
    return cidrs?.length === families ? cidrs : undefined;
  }, 20_000);
}

/** Registers each host's Node, starts its flanneld, waits for every subnet.env; the podCIDRs node IPAM gave each. */
async function startNodes(cluster: KubeCluster, hosts: readonly string[], families: number): Promise<Record<string, string[]>> {
  for (const host of hosts) {
    await cluster.registerNode(host);
    cluster.start(host);
  }
  const cidrs: Record<string, string[]> = {};
  for (const host of hosts) {
    await cluster.waitForSubnetEnv(host);
    cidrs[host] = await podCidrsOf(cluster, host, families);
  }
  return cidrs;
}

async function addPods(cluster: KubeCluster, cidrs: Record<string, string[]>): Promise<Pod[]> {
  const pods: Pod[] = [];
  for (const [host, hostCidrs] of Object.entries(cidrs)) pods.push(await addPod(cluster.topology.host(host), `p${host.slice(1)}`, hostCidrs, 1));
  return pods;
}

// Once per file, before any cluster: a crashed earlier run's processes and namespaces (each describe cleans its own).
beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
});

describe('dual-stack Kubernetes mode with vxlan', () => {
  const run = new NetnsRun('kd');
  let cluster: KubeCluster;
  /** podCIDRs per host, IPv4 first, as node IPAM assigned them. */
  const cidrs: Record<string, string[]> = {};
  const v4 = (host: string): string => cidrs[host]?.[0] as string;
  const v6 = (host: string): string => cidrs[host]?.[1] as string;
  const pods: Pod[] = [];
  const ns = (host: string): Netns => cluster.topology.host(host).ns;
  /** h3's operator-chosen public IPv6 (node-public-ipv6), a second address on its eth0. */
  const H3_NODE_PUBLIC_IPV6 = '2001:db8:2::33';
  /** h4's podCIDR from before the cluster had an IPv6 range: inside Network, far from what node IPAM hands out first. */
  const H4_V4_ONLY = '10.244.200.0/24';

  beforeAll(async () => {
    cluster = await startKubeCluster(run, { hosts: 4, stack: 'dual', netConf: { ...DUAL, Backend: { Type: 'vxlan' } } });
    // The kernel lists the newest IPv6 address first and flanneld detects the first one, so h3's own address is
    // added back after the operator's: without node-public-ipv6, h3 would publish 2001:db8:2::3.
    const h3 = ns('h3');
    await h3.ip('addr', 'add', `${H3_NODE_PUBLIC_IPV6}/64`, 'dev', 'eth0', 'nodad');
    await h3.ip('addr', 'del', '2001:db8:2::3/64', 'dev', 'eth0');
    await h3.ip('addr', 'add', '2001:db8:2::3/64', 'dev', 'eth0', 'nodad');
    await h3.ip('-6', 'route', 'replace', 'default', 'via', '2001:db8:2::fe');
    expect(await h3.ip('-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'global')).toMatch(/^\d+: eth0 +inet6 2001:db8:2::3\/64 /);
    // spec.podCIDR(s) may be set when a Node is created; node IPAM then only marks it taken.
    const h4 = cluster.topology.host('h4');
    await cluster.kubectl.run(['create', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'Node',
      metadata: { name: 'h4', labels: { 'kubernetes.io/hostname': 'h4', 'kubernetes.io/os': 'linux' } },
      spec: { podCIDR: H4_V4_ONLY, podCIDRs: [H4_V4_ONLY] },
      status: { addresses: [{ type: 'InternalIP', address: h4.ip }, { type: 'InternalIP', address: h4.ip6 }, { type: 'Hostname', address: 'h4' }] },
    }));
    cluster.start('h4');
    // The operator's annotation is on the Node before its flanneld first reads it.
    await cluster.registerNode('h3');
    await cluster.kubectl.run(['annotate', 'node', 'h3', `${P}node-public-ipv6=${H3_NODE_PUBLIC_IPV6}`]);
    cluster.start('h3');
    Object.assign(cidrs, await startNodes(cluster, ['h1', 'h2'], 2));
    await cluster.waitForSubnetEnv('h3');
    cidrs['h3'] = await podCidrsOf(cluster, 'h3', 2);
  });

  afterAll(async () => {
    await cluster?.stop();
    await run.cleanup();
  });

  it('publishes backend-data, backend-v6-data, public-ip and public-ipv6, and writes both families to subnet.env', async () => {
    for (const host of ['h1', 'h2', 'h3']) {
      const [c4, c6] = cidrs[host] ?? [];
      expect(c4).toMatch(V4_POD_CIDR);
      expect(c6).toMatch(V6_POD_CIDR);
      const h = cluster.topology.host(host);
      expect(await cluster.annotations(host)).toMatchObject({
        [`${P}kube-subnet-manager`]: 'true',
        [`${P}backend-type`]: 'vxlan',
        [`${P}backend-data`]: `{"VNI":1,"VtepMAC":"${await macOf(h.ns, 'flannel.1')}"}`,
        [`${P}backend-v6-data`]: `{"VNI":1,"VtepMAC":"${await macOf(h.ns, 'flannel-v6.1')}"}`,
        [`${P}public-ip`]: h.ip,
        // node-public-ipv6, set by the operator on h3's Node, wins over the address flanneld would detect.
        [`${P}public-ipv6`]: host === 'h3' ? H3_NODE_PUBLIC_IPV6 : h.ip6,
      });
      if (host === 'h3') expect(cluster.daemon(host)?.output()).toMatch(/"publicIPv6":"2001:db8:2::33".*"msg":"using the public IP recorded for this node"/);
      const env = cluster.readEnv(host);
      expect(env).toContain(`FLANNEL_NETWORK=10.244.0.0/16\n`);
      expect(env).toContain(`FLANNEL_SUBNET=${firstV4(v4(host))}\n`);
      expect(env).toContain(`FLANNEL_IPV6_NETWORK=${V6_NETWORK}\n`);
      expect(env).toContain(`FLANNEL_IPV6_SUBNET=${firstV6(v6(host))}\n`);
      expect(env).toContain('FLANNEL_MTU=1430\n');
    }
    expect(new Set(['h1', 'h2', 'h3'].flatMap((h) => cidrs[h] ?? [])).size).toBe(6);
    // The condition is patched after the lease, so it may land a moment after subnet.env.
    await waitFor('h1 NetworkUnavailable=False', async () => {
      const cond = (await cluster.node('h1'))?.status?.conditions?.find((c) => c.type === 'NetworkUnavailable');
      return cond?.status === 'False' ? cond : undefined;
    }, 20_000);
    // Each peer's IPv6 subnet through flannel-v6.1, its FDB entry to the peer's public IPv6.
    const h1 = ns('h1');
    const route = (await h1.ip('-6', 'route', 'show', v6('h2'))).trim();
    expect(route.startsWith(`${v6('h2')} via ${netAddr(v6('h2'))} dev flannel-v6.1 `)).toBe(true);
    expect(route).toContain('onlink');
    expect(await fdb(h1, 'flannel-v6.1')).toContain(`${await macOf(ns('h3'), 'flannel-v6.1')} dst ${H3_NODE_PUBLIC_IPV6} `);
  });

  it('says a node whose spec.podCIDRs lack the IPv6 CIDR cannot get a lease, publishes nothing, and starts once the Node has one', async () => {
    const h4 = cluster.daemon('h4')!;
    const said = `node \\"h4\\" has no IPv6 podCIDR but net-conf.json enables IPv6 (spec.podCIDRs: ${H4_V4_ONLY})`;
    await waitFor('h4 to say what is missing', () => (h4.output().includes(said) ? true : undefined), 20_000);
    expect(h4.output()).toContain('cannot get subnet lease yet; retrying');
    // The real node IPAM left the Node as it was created: no IPv6 podCIDR added.
    const stuck = await cluster.node('h4');
    expect(stuck?.spec?.podCIDRs).toEqual([H4_V4_ONLY]);
    expect(stuck?.status?.conditions?.find((c) => c.type === 'NetworkUnavailable')).toBeUndefined();
    // It keeps waiting (upstream exits and leaves restarting to the kubelet): no lease, no annotations, no peer entries.
    expect(h4.child.exitCode).toBeNull();
    expect(cluster.readEnv('h4')).toBeUndefined();
    expect(await cluster.annotations('h4')).toEqual({});
    expect((await ns('h1').ip('route', 'show', H4_V4_ONLY)).trim()).toBe('');
    // spec.podCIDRs cannot change once set, so the fix is the Node re-created: node IPAM then gives it both families.
    await cluster.kubectl.deleteNode('h4');
    await waitFor('the old h4 Node to be gone', async () => ((await cluster.node('h4')) === undefined ? true : undefined), 10_000);
    await cluster.registerNode('h4');
    cidrs['h4'] = await podCidrsOf(cluster, 'h4', 2);
    expect(v4('h4')).toMatch(V4_POD_CIDR);
    expect(v6('h4')).toMatch(V6_POD_CIDR);
    // The lease is retried with backoff (1 s doubling to at most 30 s).
    const env = await cluster.waitForSubnetEnv('h4', 40_000);
    expect(env).toContain(`FLANNEL_SUBNET=${firstV4(v4('h4'))}\n`);
    expect(env).toContain(`FLANNEL_IPV6_SUBNET=${firstV6(v6('h4'))}\n`);
    await waitFor('h1 IPv6 route to h4', async () => ((await ns('h1').ip('-6', 'route', 'show', v6('h4'))).includes('dev flannel-v6.1') ? true : undefined), 10_000);
  });

  it('carries pod traffic between every pair of hosts over IPv4 and IPv6', async () => {
    pods.push(...(await addPods(cluster, Object.fromEntries(['h1', 'h2', 'h3', 'h4'].map((h) => [h, cidrs[h] ?? []])))));
    expect(describeFailures(await pingMatrix(pods, { count: 1 }))).toEqual([]);
    expect(describeFailures(await pingMatrix(v6Endpoints(pods), { count: 1 }))).toEqual([]);
  });

  it("applies a peer's public-ipv6 change alone (public-ipv6-overwrite) on the other hosts, IPv4 untouched", async () => {
    const overwrite = '2001:db8:2::22';
    await ns('h2').ip('addr', 'add', `${overwrite}/64`, 'dev', 'eth0', 'nodad');
    const mac6 = await macOf(ns('h2'), 'flannel-v6.1');
    const mac4 = await macOf(ns('h2'), 'flannel.1');
    const publicIpv6 = async (): Promise<string | undefined> => (await cluster.annotations('h2'))[`${P}public-ipv6`];
    const fdbFollows = async (dst: string): Promise<void> => {
      for (const host of ['h1', 'h3', 'h4']) {
        await waitFor(`${host} FDB entry for h2's IPv6 VTEP to ${dst}`, async () => ((await fdb(ns(host), 'flannel-v6.1')).includes(`${mac6} dst ${dst} `) ? true : undefined), 10_000);
        const entries = (await fdb(ns(host), 'flannel-v6.1')).split('\n').filter((l) => l.startsWith(`${mac6} `));
        expect(entries).toEqual([`${mac6} dst ${dst} self permanent`]);
        expect(await fdb(ns(host), 'flannel.1')).toContain(`${mac4} dst 192.0.2.2 self permanent`);
      }
    };
    // What an operator does: kubectl changes the Node's metadata, flanneld (which patches nodes/status) follows.
    await cluster.kubectl.run(['annotate', 'node', 'h2', `${P}public-ipv6-overwrite=${overwrite}`, '--overwrite']);
    // h2's flanneld sees its Node changed and re-publishes public-ipv6 with the overwrite; the rest stays as it was.
    await waitFor('h2 to publish the overwrite', async () => ((await publicIpv6()) === overwrite ? true : undefined), 10_000);
    expect((await cluster.annotations('h2'))[`${P}public-ip`]).toBe('192.0.2.2');
    await fdbFollows(overwrite);
    expect(describeFailures(await pingMatrix(v6Endpoints(pods), { count: 1 }))).toEqual([]);
    await cluster.kubectl.run(['annotate', 'node', 'h2', `${P}public-ipv6-overwrite-`]);
    await waitFor('h2 to publish its own address again', async () => ((await publicIpv6()) === '2001:db8:2::2' ? true : undefined), 10_000);
    await fdbFollows('2001:db8:2::2');
    // Gone again, so a later restart of h2 detects 2001:db8:2::2 (the kernel lists the newest IPv6 address first).
    await ns('h2').ip('addr', 'del', `${overwrite}/64`, 'dev', 'eth0');
  });

  it("applies a peer's IPv6 VtepMAC change alone, dropping the entries for the old MAC", async () => {
    const v6Data = (mac6: string): string => `${P}backend-v6-data={"VNI":1,"VtepMAC":"${mac6}"}`;
    // A node without a flanneld of its own here: its annotations say where its VTEPs are, node IPAM gives its podCIDRs.
    await cluster.createPeerNode('far', {
      'kube-subnet-manager': 'true', 'backend-type': 'vxlan',
      'backend-data': '{"VNI":1,"VtepMAC":"0a:00:00:00:00:99"}', 'public-ip': '192.0.2.99',
      'backend-v6-data': '{"VNI":1,"VtepMAC":"0a:00:00:00:06:99"}', 'public-ipv6': '2001:db8:2::99',
    });
    const [, far6] = await podCidrsOf(cluster, 'far', 2);
    const h1 = ns('h1');
    await waitFor('h1 FDB entry for the new node', async () => ((await fdb(h1, 'flannel-v6.1')).includes('0a:00:00:00:06:99 dst 2001:db8:2::99 ') ? true : undefined), 10_000);
    // As if the far node's flannel-v6.1 were re-created with a new MAC: only backend-v6-data changes.
    await cluster.kubectl.run(['annotate', 'node', 'far', v6Data('0a:00:00:00:06:9a'), '--overwrite']);
    await waitFor('h1 FDB entry for the new MAC', async () => ((await fdb(h1, 'flannel-v6.1')).includes('0a:00:00:00:06:9a dst 2001:db8:2::99 ') ? true : undefined), 10_000);
    expect(await fdb(h1, 'flannel-v6.1')).not.toContain('0a:00:00:00:06:99');
    const far6Addr = netAddr(far6 as string);
    expect((await h1.ip('-6', 'neigh', 'show', far6Addr, 'dev', 'flannel-v6.1')).trim()).toBe(`${far6Addr} lladdr 0a:00:00:00:06:9a PERMANENT`);
    expect(await fdb(h1, 'flannel.1')).toContain('0a:00:00:00:00:99 dst 192.0.2.99 self permanent');
    await cluster.kubectl.deleteNode('far');
    await waitFor('h1 to drop the far node', async () => ((await fdb(h1, 'flannel-v6.1')).includes('0a:00:00:00:06:9a') ? undefined : true), 10_000);
  });

  it('keeps both VTEP MACs across a restart that lost the devices (as after a reboot): peers need no update', async () => {
    const h2 = ns('h2');
    const before = await allAnnotations(cluster, 'h2');
    const peerFdb = await fdb(ns('h1'), 'flannel-v6.1');
    await cluster.daemon('h2')?.stop();
    await h2.ip('link', 'del', 'flannel.1');
    await h2.ip('link', 'del', 'flannel-v6.1');
    cluster.start('h2');
    await cluster.waitForSubnetEnv('h2');
    // The MACs come back from backend-data and backend-v6-data, so the node publishes exactly what it had.
    expect(before[`${P}backend-data`]).toBe(`{"VNI":1,"VtepMAC":"${await macOf(h2, 'flannel.1')}"}`);
    expect(before[`${P}backend-v6-data`]).toBe(`{"VNI":1,"VtepMAC":"${await macOf(h2, 'flannel-v6.1')}"}`);
    expect(await allAnnotations(cluster, 'h2')).toEqual(before);
    expect(await fdb(ns('h1'), 'flannel-v6.1')).toBe(peerFdb);
    expect(describeFailures(await pingMatrix(v6Endpoints(pods), { count: 1 }))).toEqual([]);
    expect(describeFailures(await pingMatrix(pods, { count: 1 }))).toEqual([]);
  });
});

describe('dual-stack Kubernetes mode with host-gw', () => {
  const run = new NetnsRun('kh');
  let cluster: KubeCluster;

  beforeAll(async () => {
    cluster = await startKubeCluster(run, { hosts: 3, stack: 'dual', netConf: { ...DUAL, Backend: { Type: 'host-gw' } } });
  });

  afterAll(async () => {
    await cluster?.stop();
    await run.cleanup();
  });

  it('publishes null backend data and both public IPs; every pod reaches every other over IPv4 and IPv6', async () => {
    const cidrs = await startNodes(cluster, ['h1', 'h2', 'h3'], 2);
    for (const [host, [c4, c6]] of Object.entries(cidrs)) {
      expect(c4).toMatch(V4_POD_CIDR);
      expect(c6).toMatch(V6_POD_CIDR);
      const h = cluster.topology.host(host);
      expect(await cluster.annotations(host)).toMatchObject({
        [`${P}backend-type`]: 'host-gw', [`${P}backend-data`]: 'null', [`${P}backend-v6-data`]: 'null',
        [`${P}public-ip`]: h.ip, [`${P}public-ipv6`]: h.ip6,
      });
    }
    const pods = await addPods(cluster, cidrs);
    expect(describeFailures(await pingMatrix(pods, { count: 1 }))).toEqual([]);
    expect(describeFailures(await pingMatrix(v6Endpoints(pods), { count: 1 }))).toEqual([]);
    expect((await cluster.topology.host('h1').ns.ip('-6', 'route', 'show', cidrs['h2']?.[1] as string)).trim()).toMatch(/via 2001:db8:2::2 dev eth0/);
  });
});

describe('IPv6-only Kubernetes mode with vxlan', () => {
  const run = new NetnsRun('k6');
  let cluster: KubeCluster;

  beforeAll(async () => {
    cluster = await startKubeCluster(run, {
      hosts: 3, stack: 'v6', netConf: { EnableIPv4: false, EnableIPv6: true, IPv6Network: V6_NETWORK, Backend: { Type: 'vxlan' } },
    });
  });

  afterAll(async () => {
    await cluster?.stop();
    await run.cleanup();
  });

  it('reaches the API over IPv6, gets one IPv6 podCIDR, publishes only IPv6 annotations; every pod reaches every other', async () => {
    expect(cluster.apiUrl).toBe('https://[2001:db8:2::fe]:6443');
    const cidrs = await startNodes(cluster, ['h1', 'h2', 'h3'], 1);
    for (const [host, [c6]] of Object.entries(cidrs)) {
      expect(c6).toMatch(V6_POD_CIDR);
      const h = cluster.topology.host(host);
      const annotations = await cluster.annotations(host);
      expect(annotations).toMatchObject({
        [`${P}kube-subnet-manager`]: 'true', [`${P}backend-type`]: 'vxlan',
        [`${P}backend-v6-data`]: `{"VNI":1,"VtepMAC":"${await macOf(h.ns, 'flannel-v6.1')}"}`, [`${P}public-ipv6`]: h.ip6,
      });
      expect(annotations).not.toHaveProperty(`${P}backend-data`);
      expect(annotations).not.toHaveProperty(`${P}public-ip`);
      const env = cluster.readEnv(host);
      expect(env).not.toMatch(/^FLANNEL_(NETWORK|SUBNET)=/m);
      expect(env).toContain(`FLANNEL_IPV6_SUBNET=${firstV6(c6 as string)}\n`);
      expect(await h.ns.ip('-o', 'link', 'show')).not.toContain('flannel.1:');
    }
    const pods = await addPods(cluster, cidrs);
    expect(describeFailures(await pingMatrix(pods, { count: 1 }))).toEqual([]);
  });
});
