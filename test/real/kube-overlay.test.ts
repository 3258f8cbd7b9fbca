/**
 * Kubernetes mode end to end. No kube-apiserver can be installed here, so the API is the in-process fake
 * (test/helpers/fake-kube-api.ts), reached from the host namespaces through a forwarder in the hub at
 * 192.0.2.254:6443; each host runs the real flanneld with --kube-subnet-mgr, which talks to it through the real
 * @kubernetes/client-node. Scenarios: three nodes publish their annotations and mark their network available, pods
 * ping across hosts; a node without a podCIDR waits and starts once node IPAM sets one; a node deleted from the API
 * leaves its peers' datapath; the API going away leaves the datapath in place, and what changed meanwhile (across
 * a compaction, so through 410 Gone and a re-list) is applied when it returns. Every call made is one the manifest's
 * ClusterRole grants.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KUBE_API_CALLS } from '../../flanneld/subnet/kube/kube-api-calls.js';
import type { FakeKubeApi } from '../helpers/fake-kube-api.js';
import { startKubeLab, type KubeLab } from '../helpers/kube-api-in-netns.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { addPod, pingMatrix, type Pod, type Topology } from '../helpers/topology.js';

const run = new NetnsRun('ku');
const P = 'flannel.alpha.coreos.com/';
const PODCIDR: Record<string, string> = { h1: '10.244.1.0/24', h2: '10.244.2.0/24', h3: '10.244.3.0/24' };
let lab: KubeLab;
let topology: Topology;
let api: FakeKubeApi;
const pods: Pod[] = [];

const nodeOf = (host: string): string => lab.nodeOf(host);
const readEnv = (host: string): string | undefined => lab.readEnv(host);
const routeTo = async (ns: Netns, subnet: string): Promise<string> => (await ns.ip('route', 'show', subnet)).trim();

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  lab = await startKubeLab(run, {
    hosts: 3,
    netConf: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
    api: { bookmarkIntervalMs: 500 },
    flanneldArgs: ['--healthz-port=8081', '--healthz-ip=127.0.0.1'],
  });
  ({ topology, api } = lab);
  for (const host of ['h1', 'h2', 'h3']) {
    api.addNode({ name: nodeOf(host), internalIP: topology.host(host).ip, ...(host === 'h3' ? {} : { podCIDR: PODCIDR[host] as string }) });
    lab.start(host);
  }
});

afterAll(async () => {
  await lab?.stop();
  await run.cleanup();
});

describe('flanneld with --kube-subnet-mgr', () => {
  it('publishes its lease as node annotations and sets NetworkUnavailable=False', async () => {
    for (const host of ['h1', 'h2']) {
      await waitFor(`${host} subnet.env`, () => readEnv(host), 20_000);
      expect(readEnv(host)).toContain(`FLANNEL_SUBNET=${PODCIDR[host]?.replace('.0/24', '.1/24')}`);
      const node = await waitFor(`${host} annotations and condition`, () => {
        const n = api.node(nodeOf(host));
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
      expect(node.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
      const healthz = await topology.host(host).ns.exec('node', ['-e', "fetch('http://127.0.0.1:8081/readyz').then(async r => console.log(r.status, await r.text()))"]);
      expect(healthz).toContain('200 ok');
    }
  });

  it('waits for node IPAM to set a podCIDR, says so, and starts once it is set', async () => {
    await waitFor('h3 to say it waits', () => (lab.daemon('h3')?.output().includes('has no spec.podCIDR yet') ? true : undefined), 20_000);
    expect(lab.daemon('h3')?.output()).toContain(`node \\"${nodeOf('h3')}\\" has no spec.podCIDR yet`);
    expect(readEnv('h3')).toBeUndefined();
    api.updateNode(nodeOf('h3'), (n) => {
      n.spec = { ...n.spec, podCIDR: PODCIDR['h3'] as string, podCIDRs: [PODCIDR['h3'] as string] };
    });
    await waitFor('h3 subnet.env', () => readEnv('h3'), 20_000);
    expect(readEnv('h3')).toContain('FLANNEL_SUBNET=10.244.3.1/24');
    await waitFor('h1 route to h3', async () => ((await routeTo(topology.host('h1').ns, '10.244.3.0/24')).includes('dev flannel.1') ? true : undefined), 10_000);
  });

  it('carries pod traffic between every pair of hosts', async () => {
    for (const [i, host] of ['h1', 'h2', 'h3'].entries()) pods.push(await addPod(topology.host(host), `p${i + 1}`, PODCIDR[host] as string, 1));
    const failures = await pingMatrix(pods, { count: 1 });
    expect(failures.map((f) => `${f.from.ip} -> ${f.to.ip}`)).toEqual([]);
  });

  it("removes a node deleted from the API from its peers' datapath", async () => {
    await lab.daemon('h3')?.stop();
    api.deleteNode(nodeOf('h3'));
    for (const host of ['h1', 'h2']) {
      await waitFor(`${host} to drop the route to h3`, async () => ((await routeTo(topology.host(host).ns, '10.244.3.0/24')) === '' ? true : undefined), 10_000);
    }
    const fdb = await topology.host('h1').ns.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1']);
    expect(fdb).not.toContain('dst 192.0.2.3');
  });

  it('keeps the datapath while the API is away and applies what changed meanwhile when it returns', async () => {
    await api.setAvailable(false);
    await new Promise((r) => setTimeout(r, 2000));
    const [p1, p2] = pods;
    expect(await pingMatrix([p1 as Pod, p2 as Pod], { count: 1 })).toEqual([]);
    expect(await routeTo(topology.host('h1').ns, '10.244.2.0/24')).toContain('dev flannel.1');
    // Meanwhile a node joins and the history is compacted, so the watch cannot resume: 410, then a fresh list.
    api.addNode({
      name: 'node-far', podCIDR: '10.244.9.0/24', internalIP: '192.0.2.99',
      annotations: {
        [`${P}kube-subnet-manager`]: 'true', [`${P}backend-type`]: 'vxlan',
        [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:00:99"}', [`${P}public-ip`]: '192.0.2.99',
      },
    });
    api.compact();
    await api.setAvailable(true);
    for (const host of ['h1', 'h2']) {
      await waitFor(`${host} route to the node that joined`, async () => ((await routeTo(topology.host(host).ns, '10.244.9.0/24')).includes('via 10.244.9.0 dev flannel.1') ? true : undefined), 15_000);
    }
    expect(await topology.host('h1').ns.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).toContain('0a:00:00:00:00:99 dst 192.0.2.99');
    expect(lab.daemon('h1')?.output()).toContain('listing again');
  });

  it('makes only the API calls the ClusterRole grants', () => {
    const granted = new Set(KUBE_API_CALLS.map((c) => `${c.verb} ${c.resource}`));
    const made = new Set(api.requests.map((r) => `${r.verb} ${r.resource}`));
    expect([...made].filter((c) => !granted.has(c))).toEqual([]);
    expect(made.has('watch nodes') && made.has('list nodes') && made.has('patch nodes/status')).toBe(true);
  });
});
