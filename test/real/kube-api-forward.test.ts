/**
 * The fake kube API reached from inside a network namespace: the forwarder (test/drivers/unix-forward.ts) listens on
 * 192.0.2.254:6443 in the namespace and relays to the fake's unix socket, which is how a flanneld started in a test
 * namespace will reach the fake running in the test runner. Nothing is added to the root namespace.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeKubeApi, type FakeKubeApi } from '../helpers/fake-kube-api.js';
import { exposeInNetns } from '../helpers/kube-api-in-netns.js';
import { NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, type TrackedProcess } from '../helpers/processes.js';

const run = new NetnsRun('kapi');
let api: FakeKubeApi | undefined;
let ns: Netns;
let forwarder: TrackedProcess | undefined;

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  api = await startFakeKubeApi();
  api.addNode({ name: 'n1', podCIDR: '10.244.1.0/24', internalIP: '192.0.2.1' });
  ns = await run.create('ns');
  await ns.ip('addr', 'add', '192.0.2.254/32', 'dev', 'lo');
  forwarder = await exposeInNetns(api, ns, '192.0.2.254', 6443);
});

afterAll(async () => {
  await forwarder?.stop();
  await api?.close();
  await run.cleanup();
});

describe('fake kube API in a namespace', () => {
  it('serves the node list to a client inside the namespace', async () => {
    const script = [
      "fetch('http://192.0.2.254:6443/api/v1/nodes')",
      '.then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.json() })))',
      '.catch((e) => { console.error(e); process.exit(1); })',
    ].join('');
    const out = JSON.parse(await ns.exec(process.execPath, ['-e', script])) as {
      status: number;
      body: { kind: string; metadata: { resourceVersion: string }; items: { metadata: { name: string }; spec: { podCIDR: string } }[] };
    };
    expect(out.status).toBe(200);
    expect(out.body.kind).toBe('NodeList');
    expect(out.body.metadata.resourceVersion).toBe(api!.resourceVersion());
    expect(out.body.items.map((n) => [n.metadata.name, n.spec.podCIDR])).toEqual([['n1', '10.244.1.0/24']]);
    expect(api!.requests.at(-1)).toMatchObject({ method: 'GET', path: '/api/v1/nodes', verb: 'list', resource: 'nodes', status: 200 });
  });
});
