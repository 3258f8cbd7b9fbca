/**
 * Self-healing and restarts on a real vxlan overlay: entries and the device deleted behind flanneld's back come
 * back within a second; a restart keeps subnet and VTEP MAC and loses no pod traffic; stale entries from a
 * vanished peer are removed at start; a deleted lease takes its entries away on the other hosts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor } from '../helpers/processes.js';
import { ping, pingMatrix } from '../helpers/topology.js';

const run = new NetnsRun('rp');
let cluster: Cluster;
let h1: Netns;

const routeTo = async (ns: Netns, subnet: string): Promise<string> => (await ns.ip('route', 'show', subnet)).trim();
const macOf = async (ns: Netns): Promise<string> => /link\/ether (\S+)/.exec(await ns.ip('link', 'show', 'flannel.1'))?.[1] ?? '';
const subnetAddr = (subnet: string): string => subnet.split('/')[0] as string;
/** FDB listing, order-independent (re-added entries move in the kernel's list). */
const fdbOf = async (ns: Netns): Promise<string> => (await ns.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).split('\n').sort().join('\n');
const allPodsTalk = async (): Promise<void> => {
  const failures = await pingMatrix(cluster.pods, { count: 1 });
  expect(failures.map((f) => `${f.from.ip} -> ${f.to.ip}`)).toEqual([]);
};

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  cluster = await startCluster(run, {
    hosts: 3,
    config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
    flanneldArgs: ['--datapath-resync=30'],
  });
  h1 = cluster.topology.host('h1').ns;
  await allPodsTalk();
});

afterAll(async () => {
  if (process.env['DEBUG_H1']) console.log(cluster?.daemon('h1').output().slice(-6000));
  await cluster?.stop();
  await run.cleanup();
});

describe('vxlan self-healing', () => {
  it.each([
    ['route', async (s: string) => h1.ip('route', 'del', s)],
    ['neighbour', async (s: string) => h1.ip('neigh', 'del', subnetAddr(s), 'dev', 'flannel.1')],
    ['FDB entry', async () => {
      const fdb = await h1.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1']);
      const line = fdb.split('\n').find((l) => l.includes('dst 192.0.2.2 '));
      const mac = line?.split(' ')[0] ?? '';
      return h1.exec('bridge', ['fdb', 'del', mac, 'dev', 'flannel.1', 'dst', '192.0.2.2', 'self']);
    }],
  ])('restores a %s deleted behind its back within a second', async (_what, remove) => {
    const h2Subnet = cluster.subnetOf('h2');
    const before = {
      route: await routeTo(h1, h2Subnet),
      neigh: await h1.ip('neigh', 'show', subnetAddr(h2Subnet), 'dev', 'flannel.1'),
      fdb: await fdbOf(h1),
    };
    await remove(h2Subnet);
    const started = Date.now();
    await waitFor('repair', async () => {
      const now = {
        route: await routeTo(h1, h2Subnet),
        neigh: await h1.ip('neigh', 'show', subnetAddr(h2Subnet), 'dev', 'flannel.1'),
        fdb: await fdbOf(h1),
      };
      return now.route === before.route && now.neigh === before.neigh && now.fdb === before.fdb ? true : undefined;
    }, 1000, 20);
    expect(Date.now() - started).toBeLessThan(1000);
    await allPodsTalk();
  });

  it('re-creates a deleted device with the same MAC and every peer entry', async () => {
    const mac = await macOf(h1);
    const routes = (await h1.ip('route', 'show', 'dev', 'flannel.1')).trim();
    await h1.ip('link', 'del', 'flannel.1');
    await waitFor('device and routes back', async () => ((await h1.ip('route', 'show', 'dev', 'flannel.1').catch(() => '')).trim() === routes ? true : undefined), 3000, 50);
    expect(await macOf(h1)).toBe(mac);
    expect(await h1.ip('-4', 'addr', 'show', 'flannel.1')).toContain(`inet ${subnetAddr(cluster.subnetOf('h1'))}/32`);
    await allPodsTalk();
  });
});

describe('restarts', () => {
  it('keeps subnet and VTEP MAC across a restart, without touching peers or losing pod traffic', async () => {
    const h2 = cluster.topology.host('h2').ns;
    const subnet = cluster.subnetOf('h2');
    const mac = await macOf(h2);
    const peerFdb = await fdbOf(h1);
    const [p1, p2] = [cluster.pods[0]!, cluster.pods[1]!];
    // 100 pings 30 ms apart (3 s) from a pod on h1 to the pod on h2 while h2's flanneld restarts.
    const traffic = ping(p1.ns, p2.ip, { count: 100, intervalSec: 0.03, waitSec: 1 });
    await new Promise((r) => setTimeout(r, 300));
    await cluster.stopDaemon('h2');
    await cluster.startDaemon('h2');
    const result = await traffic;
    expect(result.received).toBe(100);
    expect(cluster.subnetOf('h2')).toBe(subnet);
    expect(await macOf(h2)).toBe(mac);
    expect(await fdbOf(h1)).toBe(peerFdb);
  });

  it('removes stale entries left from a peer that vanished while it was down', async () => {
    await cluster.stopDaemon('h1');
    await h1.ip('neigh', 'replace', '10.244.250.0', 'lladdr', '0e:2a:0b:0b:0b:0b', 'dev', 'flannel.1', 'nud', 'permanent');
    await h1.exec('bridge', ['fdb', 'replace', '0e:2a:0b:0b:0b:0b', 'dev', 'flannel.1', 'dst', '192.0.2.99', 'self', 'permanent']);
    // Left by an earlier run of ours, so it carries our protocol; a route of anyone else's would be left alone.
    await h1.ip('route', 'replace', '10.244.250.0/24', 'via', '10.244.250.0', 'dev', 'flannel.1', 'onlink', 'proto', '70');
    await cluster.startDaemon('h1');
    await waitFor('stale route gone', async () => ((await routeTo(h1, '10.244.250.0/24')) === '' ? true : undefined), 5000);
    expect(await h1.ip('neigh', 'show', 'dev', 'flannel.1')).not.toContain('10.244.250.0');
    expect(await h1.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).not.toContain('0e:2a:0b:0b:0b:0b');
    await allPodsTalk();
  });

  it('drops a peer whose lease is deleted', async () => {
    const h3Subnet = cluster.subnetOf('h3');
    expect(await routeTo(h1, h3Subnet)).not.toBe('');
    await cluster.stopDaemon('h3');
    await cluster.etcdctl('del', `/coreos.com/network/subnets/${h3Subnet.replace('/', '-')}`);
    await waitFor('h3 entries gone on h1', async () => ((await routeTo(h1, h3Subnet)) === '' ? true : undefined), 5000);
    expect(await h1.ip('neigh', 'show', subnetAddr(h3Subnet), 'dev', 'flannel.1')).toBe('');
    expect(await h1.exec('bridge', ['fdb', 'show', 'dev', 'flannel.1'])).not.toContain('dst 192.0.2.3 ');
  });
});
