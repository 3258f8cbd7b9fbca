/**
 * Kubernetes mode with IPv6, end to end: the fake API served from the hub (test/helpers/kube-api-in-netns.ts), the
 * real flanneld with --kube-subnet-mgr on each host of a dual-stack or IPv6-only underlay, Nodes with one podCIDR per
 * family in spec.podCIDRs. Proven here: each node publishes both families' annotations (and only the IPv6 ones on an
 * IPv6-only cluster), every pod reaches every other pod over each family with vxlan and host-gw, a change to a peer's
 * IPv6 annotations alone (public-ipv6 through the operator's public-ipv6-overwrite, the IPv6 VtepMAC) is applied
 * on the other hosts, node-public-ipv6 picks the address a node publishes, and a node whose podCIDRs lack the IPv6
 * CIDR while net-conf.json enables IPv6 says so and waits (without publishing anything) until the Node is fixed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startKubeLab, type KubeLab } from '../helpers/kube-api-in-netns.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { addPod, pingMatrix, type Pod } from '../helpers/topology.js';

const P = 'flannel.alpha.coreos.com/';
const V6_NETWORK = '2001:db8:a::/48';
const DUAL = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: V6_NETWORK };
const v4Cidr = (host: string): string => `10.244.${host.slice(1)}.0/24`;
const v6Cidr = (host: string): string => `2001:db8:a:${host.slice(1)}::/64`;
const v6Endpoints = (pods: readonly Pod[]): Pod[] => pods.map((p) => ({ ...p, ip: p.ip6 as string }));
const describeFailures = (failures: { from: Pod; to: { ip: string } }[]): string[] => failures.map((f) => `${f.from.name}@${f.from.host.name} -> ${f.to.ip}`);
const macOf = async (ns: Netns, dev: string): Promise<string | undefined> => /link\/ether (\S+)/.exec(await ns.ip('link', 'show', dev))?.[1];
const fdb = (ns: Netns, dev: string): Promise<string> => ns.exec('bridge', ['fdb', 'show', 'dev', dev]);
const annotationsOf = (lab: KubeLab, host: string): Record<string, string> => lab.api.node(lab.nodeOf(host))?.metadata?.annotations ?? {};
const flannelAnnotations = (lab: KubeLab, host: string): string[] => Object.keys(annotationsOf(lab, host)).filter((k) => k.startsWith(P));

/** Waits for the host's subnet.env, failing at once (with its output) if its flanneld exits. */
async function waitForSubnetEnv(lab: KubeLab, host: string, timeoutMs = 20_000): Promise<string> {
  const proc = lab.daemon(host);
  try {
    return await waitFor(`${host} subnet.env`, () => {
      if (proc?.child.exitCode !== null) throw new Error(`flanneld on ${host} exited`);
      return lab.readEnv(host);
    }, timeoutMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}; flanneld output:\n${proc?.output().slice(-3000)}`);
  }
}

/** Adds one Node per host with the given podCIDRs, starts every flanneld and waits for each subnet.env. */
async function startNodes(lab: KubeLab, hosts: readonly string[], podCIDRs: (host: string) => string[]): Promise<void> {
  for (const host of hosts) {
    const cidrs = podCIDRs(host);
    lab.api.addNode({ name: lab.nodeOf(host), internalIP: lab.topology.host(host).ip, podCIDR: cidrs[0] as string, podCIDRs: cidrs });
    lab.start(host);
  }
  for (const host of hosts) await waitForSubnetEnv(lab, host);
}

async function addPods(lab: KubeLab, hosts: readonly string[], podCIDRs: (host: string) => string[]): Promise<Pod[]> {
  const pods: Pod[] = [];
  for (const host of hosts) pods.push(await addPod(lab.topology.host(host), `p${host.slice(1)}`, podCIDRs(host), 1));
  return pods;
}

const dualCidrs = (host: string): string[] => [v4Cidr(host), v6Cidr(host)];

describe('dual-stack Kubernetes mode with vxlan', () => {
  const run = new NetnsRun('kd');
  let lab: KubeLab;
  const pods: Pod[] = [];
  const ns = (host: string): Netns => lab.topology.host(host).ns;
  /** h3's operator-chosen public IPv6 (node-public-ipv6), a second address on its eth0. */
  const H3_NODE_PUBLIC_IPV6 = '2001:db8:2::33';

  beforeAll(async () => {
    killStaleTrackedProcesses();
    await removeStaleNamespaces();
    lab = await startKubeLab(run, { hosts: 4, stack: 'dual', netConf: { ...DUAL, Backend: { Type: 'vxlan' } }, api: { bookmarkIntervalMs: 500 } });
    // The kernel lists the newest IPv6 address first and flanneld detects the first one, so h3's own address is
    // added back after the operator's: without node-public-ipv6, h3 would publish 2001:db8:2::3.
    const h3 = ns('h3');
    await h3.ip('addr', 'add', `${H3_NODE_PUBLIC_IPV6}/64`, 'dev', 'eth0', 'nodad');
    await h3.ip('addr', 'del', '2001:db8:2::3/64', 'dev', 'eth0');
    await h3.ip('addr', 'add', '2001:db8:2::3/64', 'dev', 'eth0', 'nodad');
    await h3.ip('-6', 'route', 'replace', 'default', 'via', '2001:db8:2::fe');
    expect(await h3.ip('-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'global')).toMatch(/^\d+: eth0 +inet6 2001:db8:2::3\/64 /);
    // h4's Node has only an IPv4 podCIDR although net-conf.json enables IPv6 (a cluster without an IPv6 --cluster-cidr).
    lab.api.addNode({ name: lab.nodeOf('h4'), internalIP: lab.topology.host('h4').ip, podCIDR: v4Cidr('h4'), podCIDRs: [v4Cidr('h4')] });
    lab.start('h4');
    lab.api.addNode({
      name: lab.nodeOf('h3'), internalIP: lab.topology.host('h3').ip, podCIDR: v4Cidr('h3'), podCIDRs: dualCidrs('h3'),
      annotations: { [`${P}node-public-ipv6`]: H3_NODE_PUBLIC_IPV6 },
    });
    lab.start('h3');
    await startNodes(lab, ['h1', 'h2'], dualCidrs);
    await waitForSubnetEnv(lab, 'h3');
  });

  afterAll(async () => {
    await lab?.stop();
    await run.cleanup();
  });

  it('publishes backend-data, backend-v6-data, public-ip and public-ipv6, and writes both families to subnet.env', async () => {
    for (const host of ['h1', 'h2', 'h3']) {
      const h = lab.topology.host(host);
      expect(annotationsOf(lab, host)).toMatchObject({
        [`${P}kube-subnet-manager`]: 'true',
        [`${P}backend-type`]: 'vxlan',
        [`${P}backend-data`]: `{"VNI":1,"VtepMAC":"${await macOf(h.ns, 'flannel.1')}"}`,
        [`${P}backend-v6-data`]: `{"VNI":1,"VtepMAC":"${await macOf(h.ns, 'flannel-v6.1')}"}`,
        [`${P}public-ip`]: h.ip,
        // node-public-ipv6, set by the operator on h3's Node, wins over the address flanneld would detect.
        [`${P}public-ipv6`]: host === 'h3' ? H3_NODE_PUBLIC_IPV6 : h.ip6,
      });
      if (host === 'h3') expect(lab.daemon(host)?.output()).toMatch(/"publicIPv6":"2001:db8:2::33".*"msg":"using the public IP recorded for this node"/);
      const env = lab.readEnv(host);
      expect(env).toContain(`FLANNEL_NETWORK=10.244.0.0/16\n`);
      expect(env).toContain(`FLANNEL_SUBNET=${v4Cidr(host).replace('.0/', '.1/')}\n`);
      expect(env).toContain(`FLANNEL_IPV6_NETWORK=${V6_NETWORK}\n`);
      expect(env).toContain(`FLANNEL_IPV6_SUBNET=${v6Cidr(host).replace('::/', '::1/')}\n`);
      expect(env).toContain('FLANNEL_MTU=1430\n');
    }
    expect(lab.api.node(lab.nodeOf('h1'))?.status?.conditions?.find((c) => c.type === 'NetworkUnavailable')?.status).toBe('False');
    // Each peer's IPv6 subnet through flannel-v6.1, its FDB entry to the peer's public IPv6.
    const h1 = ns('h1');
    expect(await h1.ip('-6', 'route', 'show', v6Cidr('h2'))).toMatch(/^2001:db8:a:2::\/64 via 2001:db8:a:2:: dev flannel-v6\.1 .*onlink/);
    expect(await fdb(h1, 'flannel-v6.1')).toContain(`${await macOf(ns('h3'), 'flannel-v6.1')} dst ${H3_NODE_PUBLIC_IPV6} `);
  });

  it('says a node whose spec.podCIDRs lack the IPv6 CIDR cannot get a lease, publishes nothing, and starts once the Node has one', async () => {
    const h4 = lab.daemon('h4')!;
    const said = `node \\"${lab.nodeOf('h4')}\\" has no IPv6 podCIDR but net-conf.json enables IPv6 (spec.podCIDRs: ${v4Cidr('h4')})`;
    await waitFor('h4 to say what is missing', () => (h4.output().includes(said) ? true : undefined), 20_000);
    expect(h4.output()).toContain('cannot get subnet lease yet; retrying');
    // It keeps waiting (upstream exits and leaves restarting to the kubelet): no lease, no annotations, no peer entries.
    expect(h4.child.exitCode).toBeNull();
    expect(lab.readEnv('h4')).toBeUndefined();
    expect(flannelAnnotations(lab, 'h4')).toEqual([]);
    expect((await ns('h1').ip('route', 'show', v4Cidr('h4'))).trim()).toBe('');
    // spec.podCIDRs cannot change once set, so the fix is a Node re-created with both families.
    lab.api.deleteNode(lab.nodeOf('h4'));
    lab.api.addNode({ name: lab.nodeOf('h4'), internalIP: lab.topology.host('h4').ip, podCIDR: v4Cidr('h4'), podCIDRs: dualCidrs('h4') });
    // The lease is retried with backoff (1 s doubling to at most 30 s).
    const env = await waitForSubnetEnv(lab, 'h4', 40_000);
    expect(env).toContain(`FLANNEL_IPV6_SUBNET=${v6Cidr('h4').replace('::/', '::1/')}\n`);
    await waitFor('h1 IPv6 route to h4', async () => ((await ns('h1').ip('-6', 'route', 'show', v6Cidr('h4'))).includes('dev flannel-v6.1') ? true : undefined), 10_000);
  });

  it('carries pod traffic between every pair of hosts over IPv4 and IPv6', async () => {
    pods.push(...(await addPods(lab, ['h1', 'h2', 'h3', 'h4'], dualCidrs)));
    expect(describeFailures(await pingMatrix(pods, { count: 1 }))).toEqual([]);
    expect(describeFailures(await pingMatrix(v6Endpoints(pods), { count: 1 }))).toEqual([]);
  });

  it("applies a peer's public-ipv6 change alone (public-ipv6-overwrite) on the other hosts, IPv4 untouched", async () => {
    const overwrite = '2001:db8:2::22';
    await ns('h2').ip('addr', 'add', `${overwrite}/64`, 'dev', 'eth0', 'nodad');
    const mac6 = await macOf(ns('h2'), 'flannel-v6.1');
    const mac4 = await macOf(ns('h2'), 'flannel.1');
    const setOverwrite = (value: string | undefined): void => {
      lab.api.updateNode(lab.nodeOf('h2'), (n) => {
        const annotations = { ...n.metadata?.annotations };
        if (value === undefined) delete annotations[`${P}public-ipv6-overwrite`];
        else annotations[`${P}public-ipv6-overwrite`] = value;
        n.metadata = { ...n.metadata, annotations };
      });
    };
    const fdbFollows = async (dst: string): Promise<void> => {
      for (const host of ['h1', 'h3', 'h4']) {
        await waitFor(`${host} FDB entry for h2's IPv6 VTEP to ${dst}`, async () => ((await fdb(ns(host), 'flannel-v6.1')).includes(`${mac6} dst ${dst} `) ? true : undefined), 10_000);
        const entries = (await fdb(ns(host), 'flannel-v6.1')).split('\n').filter((l) => l.startsWith(`${mac6} `));
        expect(entries).toEqual([`${mac6} dst ${dst} self permanent`]);
        expect(await fdb(ns(host), 'flannel.1')).toContain(`${mac4} dst 192.0.2.2 self permanent`);
      }
    };
    setOverwrite(overwrite);
    // h2's flanneld sees its Node changed and re-publishes public-ipv6 with the overwrite; the rest stays as it was.
    await waitFor('h2 to publish the overwrite', () => (annotationsOf(lab, 'h2')[`${P}public-ipv6`] === overwrite ? true : undefined), 10_000);
    expect(annotationsOf(lab, 'h2')[`${P}public-ip`]).toBe('192.0.2.2');
    await fdbFollows(overwrite);
    expect(describeFailures(await pingMatrix(v6Endpoints(pods), { count: 1 }))).toEqual([]);
    setOverwrite(undefined);
    await waitFor('h2 to publish its own address again', () => (annotationsOf(lab, 'h2')[`${P}public-ipv6`] === '2001:db8:2::2' ? true : undefined), 10_000);
    await fdbFollows('2001:db8:2::2');
    // Gone again, so a later restart of h2 detects 2001:db8:2::2 (the kernel lists the newest IPv6 address first).
    await ns('h2').ip('addr', 'del', `${overwrite}/64`, 'dev', 'eth0');
  });

  it("applies a peer's IPv6 VtepMAC change alone, dropping the entries for the old MAC", async () => {
    const annotations = (mac6: string): Record<string, string> => ({
      [`${P}kube-subnet-manager`]: 'true', [`${P}backend-type`]: 'vxlan',
      [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:00:99"}', [`${P}public-ip`]: '192.0.2.99',
      [`${P}backend-v6-data`]: `{"VNI":1,"VtepMAC":"${mac6}"}`, [`${P}public-ipv6`]: '2001:db8:2::99',
    });
    lab.api.addNode({ name: 'node-far', podCIDR: v4Cidr('h9'), podCIDRs: dualCidrs('h9'), annotations: annotations('0a:00:00:00:06:99') });
    const h1 = ns('h1');
    await waitFor('h1 FDB entry for the new node', async () => ((await fdb(h1, 'flannel-v6.1')).includes('0a:00:00:00:06:99 dst 2001:db8:2::99 ') ? true : undefined), 10_000);
    // As if the far node's flannel-v6.1 were re-created with a new MAC: only backend-v6-data changes.
    lab.api.updateNode('node-far', (n) => {
      n.metadata = { ...n.metadata, annotations: { ...n.metadata?.annotations, ...annotations('0a:00:00:00:06:9a') } };
    });
    await waitFor('h1 FDB entry for the new MAC', async () => ((await fdb(h1, 'flannel-v6.1')).includes('0a:00:00:00:06:9a dst 2001:db8:2::99 ') ? true : undefined), 10_000);
    expect(await fdb(h1, 'flannel-v6.1')).not.toContain('0a:00:00:00:06:99');
    expect((await h1.ip('-6', 'neigh', 'show', '2001:db8:a:9::', 'dev', 'flannel-v6.1')).trim()).toBe('2001:db8:a:9:: lladdr 0a:00:00:00:06:9a PERMANENT');
    expect(await fdb(h1, 'flannel.1')).toContain('0a:00:00:00:00:99 dst 192.0.2.99 self permanent');
    lab.api.deleteNode('node-far');
    await waitFor('h1 to drop the far node', async () => ((await fdb(h1, 'flannel-v6.1')).includes('0a:00:00:00:06:9a') ? undefined : true), 10_000);
  });
  it('keeps both VTEP MACs across a restart that lost the devices (as after a reboot): peers need no update', async () => {
    const h2 = ns('h2');
    const before = annotationsOf(lab, 'h2');
    const peerFdb = await fdb(ns('h1'), 'flannel-v6.1');
    await lab.daemon('h2')?.stop();
    await h2.ip('link', 'del', 'flannel.1');
    await h2.ip('link', 'del', 'flannel-v6.1');
    lab.start('h2');
    await waitForSubnetEnv(lab, 'h2');
    // The MACs come back from backend-data and backend-v6-data, so the node publishes exactly what it had.
    expect(before[`${P}backend-data`]).toBe(`{"VNI":1,"VtepMAC":"${await macOf(h2, 'flannel.1')}"}`);
    expect(before[`${P}backend-v6-data`]).toBe(`{"VNI":1,"VtepMAC":"${await macOf(h2, 'flannel-v6.1')}"}`);
    expect(annotationsOf(lab, 'h2')).toEqual(before);
    expect(await fdb(ns('h1'), 'flannel-v6.1')).toBe(peerFdb);
    expect(describeFailures(await pingMatrix(v6Endpoints(pods), { count: 1 }))).toEqual([]);
    expect(describeFailures(await pingMatrix(pods, { count: 1 }))).toEqual([]);
  });
});

describe('other Kubernetes-mode stacks', () => {
  let lab: KubeLab | undefined;
  let run: NetnsRun | undefined;
  afterEach(async () => {
    await lab?.stop();
    await run?.cleanup();
    lab = undefined;
  });

  it('dual-stack host-gw: publishes null backend data and both public IPs; every pod reaches every other over IPv4 and IPv6', async () => {
    run = new NetnsRun('kh');
    lab = await startKubeLab(run, { hosts: 3, stack: 'dual', netConf: { ...DUAL, Backend: { Type: 'host-gw' } } });
    const hosts = ['h1', 'h2', 'h3'];
    await startNodes(lab, hosts, dualCidrs);
    for (const host of hosts) {
      expect(annotationsOf(lab, host)).toMatchObject({
        [`${P}backend-type`]: 'host-gw', [`${P}backend-data`]: 'null', [`${P}backend-v6-data`]: 'null',
        [`${P}public-ip`]: lab.topology.host(host).ip, [`${P}public-ipv6`]: lab.topology.host(host).ip6,
      });
    }
    const pods = await addPods(lab, hosts, dualCidrs);
    expect(describeFailures(await pingMatrix(pods, { count: 1 }))).toEqual([]);
    expect(describeFailures(await pingMatrix(v6Endpoints(pods), { count: 1 }))).toEqual([]);
    expect((await lab.topology.host('h1').ns.ip('-6', 'route', 'show', v6Cidr('h2'))).trim()).toMatch(/via 2001:db8:2::2 dev eth0/);
  });

  it('IPv6-only vxlan: the API over IPv6, only IPv6 annotations, every pod reaches every other', async () => {
    run = new NetnsRun('k6');
    lab = await startKubeLab(run, {
      hosts: 3, stack: 'v6', netConf: { EnableIPv4: false, EnableIPv6: true, IPv6Network: V6_NETWORK, Backend: { Type: 'vxlan' } },
    });
    expect(lab.apiUrl).toBe('http://[2001:db8:2::fe]:6443');
    const hosts = ['h1', 'h2', 'h3'];
    const v6Only = (host: string): string[] => [v6Cidr(host)];
    await startNodes(lab, hosts, v6Only);
    for (const host of hosts) {
      const h = lab.topology.host(host);
      const annotations = annotationsOf(lab, host);
      expect(annotations).toMatchObject({
        [`${P}kube-subnet-manager`]: 'true', [`${P}backend-type`]: 'vxlan',
        [`${P}backend-v6-data`]: `{"VNI":1,"VtepMAC":"${await macOf(h.ns, 'flannel-v6.1')}"}`, [`${P}public-ipv6`]: h.ip6,
      });
      expect(annotations).not.toHaveProperty(`${P}backend-data`);
      expect(annotations).not.toHaveProperty(`${P}public-ip`);
      const env = lab.readEnv(host);
      expect(env).not.toMatch(/^FLANNEL_(NETWORK|SUBNET)=/m);
      expect(env).toContain(`FLANNEL_IPV6_SUBNET=${v6Cidr(host).replace('::/', '::1/')}\n`);
      expect(await h.ns.ip('-o', 'link', 'show')).not.toContain('flannel.1:');
    }
    const pods = await addPods(lab, hosts, v6Only);
    expect(describeFailures(await pingMatrix(pods, { count: 1 }))).toEqual([]);
  });
});
