/**
 * A wrong or hostile entry in the shared store must not take over or cut off a node. Two hosts run the real
 * flanneld (vxlan) against real etcd; each case writes what another node could write under the subnets prefix, then
 * checks both that it had no effect on the kernel (routes, FDB, the node's own connected and cni0 routes) and that
 * the real peers still talk, that /readyz stays 200, and that `flanneld status` names the refused lease and why.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { FLANNELD_BIN } from '../helpers/flanneld-process.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { pingMatrix } from '../helpers/topology.js';

const run = new NetnsRun('hs');
const PREFIX = '/coreos.com/network/subnets/';
let cluster: Cluster;
let h1: Netns;

const lease = (publicIP: string, mac: string): string => JSON.stringify({ PublicIP: publicIP, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });
const put = (key: string, value: string): Promise<string> => cluster.etcdctl('put', `${PREFIX}${key}`, value);
const del = (key: string): Promise<string> => cluster.etcdctl('del', `${PREFIX}${key}`);
const routes = async (ns: Netns): Promise<string> => ns.ip('route', 'show');
const fdb = (ns: Netns): Promise<string> => ns.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1']);

interface Status {
  readonly ready: boolean;
  readonly refusedPeers: readonly { peer: string; reason: string; detail: string }[];
  readonly peers: readonly { subnet?: string }[];
}
async function status(ns: Netns): Promise<Status> {
  return JSON.parse(await ns.exec(process.execPath, [FLANNELD_BIN, 'status', '--json', '--healthz-port=8081'])) as Status;
}
async function readyz(ns: Netns): Promise<string> {
  return ns.exec(process.execPath, ['-e', "fetch('http://127.0.0.1:8081/readyz').then(async r => console.log(r.status, await r.text()))"]);
}
const refusedOn = async (ns: Netns, key: string): Promise<{ reason: string; detail: string } | undefined> =>
  (await status(ns)).refusedPeers.find((r) => r.peer === key);

/** Both hosts ready, the pods of h1 and h2 talking, and nothing of the cases left in status. */
async function peersStillTalk(): Promise<void> {
  expect(await pingMatrix(cluster.pods, { count: 1 })).toEqual([]);
  for (const h of cluster.topology.hosts) expect(await readyz(h.ns)).toContain('200 ok');
}

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  cluster = await startCluster(run, {
    hosts: 2,
    // The hosts lease below 10.244.128.0, so the hostile leases of the cases (10.244.197-199.0/24) never name a
    // host's own subnet: the allocator picks at random, and a case that hit one would be another case entirely.
    config: { Network: '10.244.0.0/16', SubnetMax: '10.244.127.0', Backend: { Type: 'vxlan' } },
    flanneldArgs: ['--healthz-port=8081', '--healthz-ip=127.0.0.1'],
  });
  h1 = cluster.topology.host('h1').ns;
});

// A failure says what each daemon said last, which is where the reason is.
afterEach(({ task }) => {
  if (task.result?.state !== 'fail' || !cluster) return;
  for (const h of cluster.topology.hosts) console.log(`--- flanneld on ${h.name}:\n${cluster.daemon(h.name).output().slice(-6000)}`);
});

afterAll(async () => {
  await cluster?.stop();
  await run.cleanup();
});

describe('a hostile shared store', () => {
  it("a lease for the underlay's /24 leaves the connected route alone, before and after it is deleted", async () => {
    const connected = (await h1.ip('route', 'show', '192.0.2.0/24')).trim();
    expect(connected).toContain('dev eth0 proto kernel');
    await put('192.0.2.0-24', lease('192.0.2.2', '0a:00:00:00:00:01'));
    await waitFor('h1 to refuse it', () => refusedOn(h1, '192.0.2.0-24'), 30_000);
    expect(await refusedOn(h1, '192.0.2.0-24')).toMatchObject({ reason: 'outside-network' });
    expect((await h1.ip('route', 'show', '192.0.2.0/24')).trim()).toBe(connected);
    await del('192.0.2.0-24');
    await waitFor('h1 to forget it', async () => ((await refusedOn(h1, '192.0.2.0-24')) ? undefined : true), 30_000);
    expect((await h1.ip('route', 'show', '192.0.2.0/24')).trim()).toBe(connected);
    await peersStillTalk();
  });

  it('leases covering half or a quarter of the address space never become routes', async () => {
    await put('128.0.0.0-1', lease('192.0.2.50', '0a:00:00:00:00:02'));
    await put('64.0.0.0-2', lease('192.0.2.51', '0a:00:00:00:00:03'));
    await waitFor('h1 to refuse both', async () => ((await status(h1)).refusedPeers.length === 2 ? true : undefined), 30_000);
    expect(await routes(h1)).not.toMatch(/^(128\.0\.0\.0\/1|64\.0\.0\.0\/2) /m);
    await peersStillTalk();
    await del('128.0.0.0-1');
    await del('64.0.0.0-2');
  });

  it("a lease publishing another peer's VtepMAC neither takes that peer's FDB entry nor removes it when deleted", async () => {
    const h2Mac = /link\/ether (\S+)/.exec(await cluster.topology.host('h2').ns.ip('link', 'show', 'flannel.1'))?.[1] as string;
    const h2Entry = `${h2Mac} dst 192.0.2.2`;
    expect(await fdb(h1)).toContain(h2Entry);
    await put('10.244.199.0-24', lease('192.0.2.77', h2Mac));
    await waitFor('h1 to refuse the impostor', () => refusedOn(h1, '10.244.199.0-24'), 30_000);
    expect(await refusedOn(h1, '10.244.199.0-24')).toMatchObject({ reason: 'duplicate-vtep-mac' });
    expect(await fdb(h1)).toContain(h2Entry);
    expect(await fdb(h1)).not.toContain('dst 192.0.2.77');
    await del('10.244.199.0-24');
    await waitFor('h1 to forget the impostor', async () => ((await refusedOn(h1, '10.244.199.0-24')) ? undefined : true), 30_000);
    expect(await fdb(h1)).toContain(h2Entry);
    await peersStillTalk();
  });

  it('a lease with a multicast VtepMAC is refused on every node, which all stay ready', async () => {
    await put('10.244.198.0-24', lease('192.0.2.78', '01:00:5e:00:00:01'));
    for (const h of cluster.topology.hosts) {
      const refused = await waitFor(`${h.name} to refuse it`, () => refusedOn(h.ns, '10.244.198.0-24'), 30_000);
      expect(refused).toEqual({ peer: '10.244.198.0-24', reason: 'bad-vtep-mac', detail: 'VtepMAC 01:00:5e:00:00:01 is a multicast address' });
      expect((await status(h.ns)).ready).toBe(true);
    }
    expect(await routes(h1)).not.toContain('10.244.198.0/24');
    await peersStillTalk();
    await del('10.244.198.0-24');
  });

  it("a second lease covering this node's own subnet leaves its cni0 route alone, put and deleted", async () => {
    const own = cluster.subnetOf('h1');
    const before = (await h1.ip('route', 'show', own)).trim();
    expect(before).toContain('dev cni0');
    const [a, b] = own.split('.');
    const wide = `${a}.${b}.0.0-16`;
    await put(wide, lease('192.0.2.79', '0a:00:00:00:00:04'));
    await waitFor('h1 to refuse it', () => refusedOn(h1, wide), 30_000);
    await del(wide);
    await waitFor('h1 to forget it', async () => ((await refusedOn(h1, wide)) ? undefined : true), 30_000);
    expect((await h1.ip('route', 'show', own)).trim()).toBe(before);
    await peersStillTalk();
  });

  it("programs peer routes with its own protocol, and leaves an operator's route at a peer's destination alone", async () => {
    const h2Subnet = cluster.subnetOf('h2');
    expect(await h1.ip('route', 'show', h2Subnet)).toContain('proto 70');
    await h1.ip('route', 'add', '10.244.197.0/24', 'via', '192.0.2.254', 'proto', 'static');
    await put('10.244.197.0-24', lease('192.0.2.80', '0a:00:00:00:00:05'));
    const refused = await waitFor('h1 to report the collision', () => refusedOn(h1, '10.244.197.0-24'), 30_000);
    expect(refused).toMatchObject({ reason: 'datapath-collision' });
    expect((await h1.ip('route', 'show', '10.244.197.0/24')).trim()).toBe('10.244.197.0/24 via 192.0.2.254 dev eth0 proto static');
    expect((await status(h1)).ready).toBe(true);
    await del('10.244.197.0-24');
    await waitFor('h1 to forget it', async () => ((await refusedOn(h1, '10.244.197.0-24')) ? undefined : true), 30_000);
    expect((await h1.ip('route', 'show', '10.244.197.0/24')).trim()).toBe('10.244.197.0/24 via 192.0.2.254 dev eth0 proto static');
    await h1.ip('route', 'del', '10.244.197.0/24', 'via', '192.0.2.254', 'proto', 'static');
    await peersStillTalk();
  });

  it('counts refusals by reason in /metrics', async () => {
    const metrics = await h1.exec(process.execPath, ['-e', "fetch('http://127.0.0.1:8081/metrics').then(async r => console.log(await r.text()))"]);
    expect(metrics).toMatch(/^flanneld_peer_refusals_total\{reason="outside-network"\} 3$/m);
    expect(metrics).toMatch(/^flanneld_peer_refusals_total\{reason="duplicate-vtep-mac"\} 1$/m);
    expect(metrics).toMatch(/^flanneld_peer_refusals_total\{reason="bad-vtep-mac"\} 1$/m);
    expect(metrics).toMatch(/^flanneld_refused_peers\{reason="outside-network"\} 0$/m);
  });
});
