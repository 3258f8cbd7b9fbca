/**
 * flanneld's BGP socket (flanneld/bgp/bgp-tcp.ts over native/tcp) on a real kernel: the SYN leaves from the node's
 * address with the multihop TTL asked for (or the kernel's default without one), and with a TCP-MD5 option when
 * the router has a password. The connector runs in a node namespace, in a child node process (the test process
 * lives in the root namespace, which it never uses), and a tcpdump in the router namespace reads the SYN.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLANNELD_BIN } from '../helpers/flanneld-process.js';
import { NetnsRun, linkPair, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, spawnTracked, waitFor, type TrackedProcess } from '../helpers/processes.js';

const NODE_IP = '192.0.2.1';
const ROUTER_IP = '192.0.2.250';
const TCP_MODULE = FLANNELD_BIN.replace(/main\.js$/, 'bgp/bgp-tcp.js');
const IP_MODULE = FLANNELD_BIN.replace(/main\.js$/, 'ip/address.js');

const run = new NetnsRun('btcp');
let node: Netns;
let router: Netns;
let listener: TrackedProcess;

/** Connects from the node namespace as flanneld would, then closes; resolves to the connector's outcome. */
function dial(peer: string): Promise<string> {
  const script = `const { tcpConnector } = await import(${JSON.stringify(TCP_MODULE)}); const { parseIp } = await import(${JSON.stringify(IP_MODULE)});
const peer = ${peer};
const t = await tcpConnector()({ ...peer, address: parseIp(peer.address) }, parseIp(${JSON.stringify(NODE_IP)}), AbortSignal.timeout(12000)).then((t) => (t.close(), 'connected'), (e) => e.message);
process.stdout.write(t); process.exit(0);`;
  return node.exec(process.execPath, ['--input-type=module', '-e', script]);
}

/** The first SYN to port 179 that tcpdump sees on the router's side, verbose (TTL and TCP options). */
function captureSyn(): TrackedProcess {
  return spawnTracked('ip', ['netns', 'exec', router.name, 'tcpdump', '-i', 'any', '-nn', '-v', '-c', '1', '--immediate-mode', '-l', 'tcp[tcpflags] & tcp-syn != 0 and dst port 179'], {}, 'tcpdump');
}

async function synFor(peer: string): Promise<{ dialled: string; syn: string }> {
  const capture = captureSyn();
  await waitFor('tcpdump listening', () => (capture.output().includes('listening on') ? true : undefined), 5000);
  const dialled = await dial(peer);
  await waitFor('the SYN captured', () => (capture.child.exitCode !== null ? true : undefined), 5000, 50);
  return { dialled, syn: capture.output() };
}

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  node = await run.create('node');
  router = await run.create('rtr');
  await linkPair(node, router, NODE_IP, ROUTER_IP);
  listener = spawnTracked('ip', ['netns', 'exec', router.name, process.execPath, '-e', `require('node:net').createServer((s) => s.on('error', () => undefined)).listen(179, '${ROUTER_IP}')`], {}, 'node');
  await waitFor('the listener', async () => ((await router.exec('ss', ['-ltn'])).includes(`${ROUTER_IP}:179`) ? true : undefined), 5000, 50);
}, 30_000);

afterAll(async () => {
  await listener?.stop('SIGTERM', 2000);
  await run.cleanup();
});

describe('the BGP socket on a real kernel', () => {
  it("sends the SYN from the node's address with the multihop TTL", async () => {
    const { dialled, syn } = await synFor(`{ address: '${ROUTER_IP}', remoteAs: 65001, multihopTtl: 7 }`);
    expect(dialled).toBe('connected');
    expect(syn).toMatch(/ttl 7,/);
    expect(syn).toContain(`${NODE_IP}.`);
    expect(syn).not.toMatch(/md5/i);
  });

  it("keeps the kernel's TTL without one", async () => {
    const { dialled, syn } = await synFor(`{ address: '${ROUTER_IP}', remoteAs: 65001 }`);
    expect(dialled).toBe('connected');
    expect(syn).toMatch(/ttl 64,/);
  });

  it('signs the SYN with TCP-MD5 when the router has a password (a listener without the key never answers it)', async () => {
    const { dialled, syn } = await synFor(`{ address: '${ROUTER_IP}', remoteAs: 65001, password: 'k3y' }`);
    expect(syn).toMatch(/md5/i);
    expect(dialled).toContain('does the router have the same password?');
  }, 30_000);
});
