/**
 * The `flannel` CNI plugin driven as a runtime drives it, with Debian's bridge/host-local/portmap/loopback, pods as
 * namespaces of this run: every verb, both netns forms, result shapes per spec version, the bad-input table (right
 * code, a message naming the problem, nothing changed on the node), concurrency, DEL/GC freeing addresses, and
 * dual-stack / IPv6-only subnet.env (an address, routes and a reachable gateway per family, on the first pod too).
 * Every case runs for the script form; the self-contained form gets an ADD/CHECK/DEL smoke run when it is built.
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CniNode,
  DEFAULT_SUBNET_ENV,
  FLANNEL_VERSIONS,
  formUnavailable,
  REFERENCE_PLUGIN_DIR,
  SCRIPT_FORM,
  SEA_FORM,
  type CniOutcome,
  type CniPod,
  type InvokeOptions,
  type PluginForm,
  type SubnetEnvFields,
} from '../helpers/cni-runtime.js';
import { NetnsRun, removeStaleNamespaces } from '../helpers/netns.js';
import { killStaleTrackedProcesses } from '../helpers/processes.js';
import { ping } from '../helpers/topology.js';

const run = new NetnsRun('cni');
const nodes: CniNode[] = [];
const NODE_SUBNET = /^10\.244\.7\.(\d+)\/24$/;
const scriptMissing = formUnavailable(SCRIPT_FORM);
const seaMissing = formUnavailable(SEA_FORM);
const referenceMissing = existsSync(join(REFERENCE_PLUGIN_DIR, 'bridge')) ? undefined : `${REFERENCE_PLUGIN_DIR}/bridge is missing (scripts/install-deps.sh)`;

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
});

afterAll(async () => {
  for (const node of nodes.splice(0)) await node.cleanup();
  await run.cleanup();
});

let nodeCount = 0;
async function newNode(form: PluginForm, cniVersion?: string, subnetEnv?: SubnetEnvFields): Promise<CniNode> {
  const node = await CniNode.create(run, { name: `n${++nodeCount}`, form, ...(cniVersion ? { cniVersion } : {}), ...(subnetEnv ? { subnetEnv } : {}) });
  nodes.push(node);
  return node;
}

/** A success: exit 0, nothing on stderr; returns the parsed stdout. */
function ok(outcome: CniOutcome, what: string): unknown {
  const context = `${what}: exit ${outcome.code}, stdout ${outcome.stdout || '(empty)'}, stderr ${outcome.stderr || '(empty)'}`;
  expect(outcome.code, context).toBe(0);
  expect(outcome.stderr, context).toBe('');
  return outcome.json;
}

/** A CNI error object on stdout with `code` and a message matching every pattern. */
function failsWith(outcome: CniOutcome, code: number, ...patterns: RegExp[]): void {
  const context = `exit ${outcome.code}, stdout ${outcome.stdout}, stderr ${outcome.stderr}`;
  expect(outcome.code, context).not.toBe(0);
  expect(outcome.json, context).toMatchObject({ code, msg: expect.any(String) });
  const msg = (outcome.json as { msg: string }).msg;
  for (const p of patterns) expect(msg, context).toMatch(p);
  expect(typeof (outcome.json as { cniVersion?: unknown }).cniVersion, context).toBe('string');
}

interface AddResult {
  cniVersion: string;
  interfaces: { name: string; mac: string; sandbox?: string; mtu?: number }[];
  ips: { address: string; gateway?: string; interface?: number; version?: string }[];
  routes: { dst: string; gw?: string }[];
}

function podAddress(result: unknown): string {
  const ips = (result as AddResult).ips;
  expect(ips).toHaveLength(1);
  return ips[0]!.address.split('/')[0]!;
}

async function addOk(node: CniNode, pod: CniPod, cniVersion?: string): Promise<AddResult> {
  return ok(await node.add(pod, cniVersion ? { cniVersion } : {}), `ADD ${pod.containerId}`) as AddResult;
}

async function podAddrs(pod: CniPod): Promise<string> {
  return pod.ns.ip('-o', '-4', 'addr', 'show');
}

/** Files anywhere under /var/lib/cni that mention this run's container IDs (there must be none). */
function strayStateFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(dir, name);
      const st = statSync(p, { throwIfNoEntry: false });
      if (st?.isDirectory()) walk(p);
      else if (name.startsWith(`c${process.pid}-`) || (st?.isFile() && st.size < 4096 && readFileSync(p, 'utf8').includes(`c${process.pid}-`))) out.push(p);
    }
  };
  walk('/var/lib/cni');
  return out;
}

describe.skipIf(scriptMissing ?? referenceMissing)(`flannel CNI plugin, script form${scriptMissing ?? referenceMissing ? ` (skipped: ${scriptMissing ?? referenceMissing})` : ''}`, () => {
  const form = SCRIPT_FORM;

  it('ADD (stock conflist, 0.3.1) gives an address in the node subnet, the route to the network, and saves upstream\'s delegate config', async () => {
    const node = await newNode(form);
    const pod = await node.pod('add');
    const result = await addOk(node, pod);
    const address = podAddress(result);
    expect(result.ips[0]).toMatchObject({ address: expect.stringMatching(NODE_SUBNET), gateway: '10.244.7.1', version: '4' });
    expect(address).not.toBe('10.244.7.1');
    expect(result.routes).toContainEqual({ dst: '10.244.0.0/16' });

    expect(await podAddrs(pod)).toContain(`eth0    inet ${address}/24`);
    const routes = await pod.ns.ip('route', 'show');
    expect(routes).toMatch(/^10\.244\.0\.0\/16 via 10\.244\.7\.1 dev eth0/m);
    expect(routes).toMatch(/^default via 10\.244\.7\.1 dev eth0/m); // isDefaultGateway from the conflist
    expect(await pod.ns.ip('link', 'show', 'eth0')).toMatch(/mtu 1450 /);
    expect(await node.host.ip('-o', '-4', 'addr', 'show', 'cni0')).toContain('inet 10.244.7.1/24');
    expect(await node.host.exec('bridge', ['-d', 'link', 'show'])).toMatch(/master cni0.*\n?.*hairpin on/);

    expect(node.reservations()).toEqual([{ ip: address, containerId: pod.containerId, ifname: 'eth0' }]);
    const savedPath = join(node.dataDir, pod.containerId);
    expect(statSync(node.dataDir).mode & 0o777).toBe(0o700);
    expect(statSync(savedPath).mode & 0o777).toBe(0o600);
    const saved = readFileSync(savedPath, 'utf8');
    expect(saved).toBe(JSON.stringify({
      cniVersion: '0.3.1', hairpinMode: true, ipMasq: false,
      ipam: { dataDir: node.ipamDir, ranges: [[{ subnet: '10.244.7.0/24' }]], routes: [{ dst: '10.244.0.0/16' }], type: 'host-local' },
      isDefaultGateway: true, isGateway: true, mtu: 1450, name: 'cbr0', type: 'bridge',
    }));
  });

  it('ADD and DEL work with the /proc/<pid>/ns/net form (cri-dockerd, ctr run --cni)', async () => {
    const node = await newNode(form, '1.0.0');
    const pod = await node.pod('proc', { procPath: true });
    expect(pod.netnsPath).toMatch(/^\/proc\/\d+\/ns\/net$/);
    const result = await addOk(node, pod);
    const address = podAddress(result);
    expect(await podAddrs(pod)).toContain(`inet ${address}/24`);
    expect(result.interfaces.find((i) => i.name === 'eth0')?.sandbox).toBe(pod.netnsPath);
    ok(await node.check(pod, result), 'CHECK');
    ok(await node.del(pod, { prevResult: result }), 'DEL');
    expect(node.reservations()).toEqual([]);
    expect(await podAddrs(pod)).not.toContain('eth0');
  });

  it('CHECK passes on a healthy pod and fails after the address is removed, the subnet changed or subnet.env is gone', async () => {
    const node = await newNode(form, '1.0.0');
    const pod = await node.pod('check');
    const result = await addOk(node, pod);
    const address = podAddress(result);
    ok(await node.check(pod, result), 'CHECK on a healthy pod');

    node.removeSubnetEnv();
    failsWith(await node.check(pod, result), 11, /subnet\.env/);
    node.writeSubnetEnv({ FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: '10.244.8.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true' });
    const moved = await node.check(pod, result);
    expect(moved.code).not.toBe(0);
    expect((moved.json as { msg?: string }).msg).toMatch(new RegExp(`${address.replaceAll('.', '\\.')}.*10\\.244\\.8\\.0/24`));
    node.writeSubnetEnv({ FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: '10.244.7.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true' });
    ok(await node.check(pod, result), 'CHECK with subnet.env restored');

    await pod.ns.ip('addr', 'del', `${address}/24`, 'dev', 'eth0');
    const missing = await node.check(pod, result);
    expect(missing.code, missing.stdout).not.toBe(0);
    expect((missing.json as { msg?: string }).msg, missing.stdout).toContain(address);
    ok(await node.del(pod, { prevResult: result }), 'DEL after a failed CHECK');
    expect(node.reservations()).toEqual([]);
  });

  it('DEL frees the address (host-local forgets it), removes the saved config and the veth, and prints nothing', async () => {
    const node = await newNode(form);
    const pod = await node.pod('del');
    const result = await addOk(node, pod);
    expect(node.reservations()).toHaveLength(1);
    const del = await node.del(pod, { prevResult: result });
    ok(del, 'DEL');
    expect(del.stdout).toBe('');
    expect(node.reservations()).toEqual([]);
    expect(node.savedConfigs().filter((n) => n.startsWith(pod.containerId))).toEqual([]);
    expect(await pod.ns.ip('-o', 'link', 'show')).not.toContain('eth0');
    expect(await node.host.ip('-o', 'link', 'show', 'type', 'veth')).toBe('');
  });

  it('ADD/DEL twice is safe: repeated DELs succeed, a second ADD leaves nothing behind after DEL, a new cycle works', async () => {
    const node = await newNode(form);
    const pod = await node.pod('twice');
    for (let cycle = 1; cycle <= 2; cycle++) {
      const result = await addOk(node, pod);
      expect(podAddress(result)).toMatch(/^10\.244\.7\./);
      ok(await node.del(pod, { prevResult: result }), `DEL cycle ${cycle}`);
      ok(await node.del(pod, { prevResult: result }), `second DEL cycle ${cycle}`);
      ok(await node.del(pod), `third DEL cycle ${cycle}, no prevResult`);
      expect(node.reservations()).toEqual([]);
    }
    // A runtime retrying ADD on a live attachment: either an error or the same address; DEL then clears all.
    const first = await addOk(node, pod);
    const again = await node.add(pod);
    if (again.code === 0) expect(podAddress(again.json)).toBe(podAddress(first));
    expect(node.reservations().length, JSON.stringify(node.reservations())).toBeLessThanOrEqual(1);
    ok(await node.del(pod, { prevResult: first }), 'DEL after the double ADD');
    expect(node.reservations()).toEqual([]);
    expect(await pod.ns.ip('-o', 'link', 'show')).not.toContain('eth0');
  });

  it('a second ADD on a live attachment does not take away the address the pod already has', async () => {
    const node = await newNode(form);
    const pod = await node.pod('live');
    const first = await addOk(node, pod);
    const address = podAddress(first);
    await node.add(pod);
    expect(node.reservations()).toEqual([{ ip: address, containerId: pod.containerId, ifname: 'eth0' }]);
    expect(await podAddrs(pod)).toContain(`inet ${address}/24`);
  });

  it('50 concurrent ADDs on one node get 50 distinct addresses; 50 concurrent DELs free them all', async () => {
    const node = await newNode(form);
    const pods: CniPod[] = [];
    for (let i = 0; i < 50; i++) pods.push(await node.pod(`p${i}`));
    const adds = await Promise.all(pods.map((p) => node.add(p)));
    for (const [i, a] of adds.entries()) ok(a, `ADD ${i}`);
    const addresses = adds.map((a) => podAddress(a.json));
    expect(new Set(addresses).size).toBe(50);
    for (const a of addresses) expect(a).toMatch(/^10\.244\.7\.(\d+)$/);
    expect(addresses).not.toContain('10.244.7.1');
    expect(node.reservations()).toHaveLength(50);
    const dels = await Promise.all(pods.map((p, i) => node.del(p, { prevResult: adds[i]!.json })));
    for (const [i, d] of dels.entries()) ok(d, `DEL ${i}`);
    expect(node.reservations()).toEqual([]);
    for (const p of pods) await node.removePod(p);
  });

  it('DEL after the saved config was wiped still frees the address (netns present)', async () => {
    const node = await newNode(form);
    const pod = await node.pod('wiped');
    const result = await addOk(node, pod);
    rmSync(node.dataDir, { recursive: true, force: true });
    ok(await node.del(pod, { prevResult: result }), 'DEL with no saved config');
    expect(node.reservations()).toEqual([]);
    expect(await pod.ns.ip('-o', 'link', 'show')).not.toContain('eth0');
  });

  it('DEL after the saved config was wiped and the netns is gone (no CNI_NETNS) still frees the address', async () => {
    const node = await newNode(form);
    const pod = await node.pod('gone');
    const result = await addOk(node, pod);
    rmSync(node.dataDir, { recursive: true, force: true });
    await node.removePod(pod);
    ok(await node.del(pod, { prevResult: result, env: { CNI_NETNS: undefined } }), 'DEL without netns and saved config');
    expect(node.reservations()).toEqual([]);
    ok(await node.del(pod, { env: { CNI_NETNS: undefined } }), 'repeated DEL');
  });

  it('DEL with neither saved config nor subnet.env rebuilds the delegate from prevResult and frees the address', async () => {
    const node = await newNode(form);
    const pod = await node.pod('prev');
    const result = await addOk(node, pod);
    rmSync(node.dataDir, { recursive: true, force: true });
    node.removeSubnetEnv();
    ok(await node.del(pod, { prevResult: result }), 'DEL from prevResult');
    expect(node.reservations()).toEqual([]);
  });

  it('GC frees the addresses and saved configs of vanished pods and keeps the valid ones', async () => {
    const node = await newNode(form, '1.1.0');
    const [a, b, c] = [await node.pod('gca'), await node.pod('gcb', { procPath: true }), await node.pod('gcc')];
    const results = [await addOk(node, a!), await addOk(node, b!), await addOk(node, c!)];
    expect(node.reservations()).toHaveLength(3);
    await node.removePod(b!);
    await node.removePod(c!);
    const gc = await node.gc([{ containerID: a!.containerId, ifname: 'eth0' }]);
    ok(gc, 'GC');
    expect(gc.stdout).toBe('');
    expect(node.reservations()).toEqual([{ ip: podAddress(results[0]), containerId: a!.containerId, ifname: 'eth0' }]);
    expect(node.savedConfigs().filter((n) => !n.startsWith('.')).map((n) => n.replace(/\.ifname$/, ''))).toEqual([a!.containerId, a!.containerId]);
    ok(await node.check(a!, results[0], { cniVersion: '1.1.0' }), 'CHECK on the pod GC kept');
    ok(await node.gc([{ containerID: a!.containerId, ifname: 'eth0' }]), 'second GC');
    expect(node.reservations()).toHaveLength(1);
  });

  for (const version of ['0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
    it(`the ADD result for cniVersion ${version} has that version's shape`, async () => {
      const node = await newNode(form, version);
      const pod = await node.pod(`v${version.replaceAll('.', '')}`);
      const result = await addOk(node, pod);
      expect(result.cniVersion).toBe(version);
      const eth0 = result.interfaces.findIndex((i) => i.name === 'eth0');
      expect(eth0, JSON.stringify(result)).toBeGreaterThanOrEqual(0);
      expect(result.interfaces[eth0]).toMatchObject({ name: 'eth0', mac: expect.stringMatching(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/), sandbox: pod.netnsPath });
      expect(result.interfaces).toContainEqual(expect.objectContaining({ name: 'cni0' }));
      expect(result.ips).toHaveLength(1);
      const ip = result.ips[0]!;
      expect(ip).toMatchObject({ address: expect.stringMatching(NODE_SUBNET), gateway: '10.244.7.1', interface: eth0 });
      if (version.startsWith('0.')) expect(ip.version).toBe('4');
      else expect(ip).not.toHaveProperty('version');
      expect(result.routes).toContainEqual({ dst: '10.244.0.0/16' });
      for (const key of Object.keys(result)) expect(['cniVersion', 'interfaces', 'ips', 'routes', 'dns']).toContain(key);
      if (version !== '0.3.1') ok(await node.check(pod, result, { cniVersion: version }), `CHECK ${version}`);
      ok(await node.del(pod, { prevResult: result }), `DEL ${version}`);
      expect(node.reservations()).toEqual([]);
    });
  }

  it('VERSION answers with the supported versions, echoing the asked cniVersion', async () => {
    const node = await newNode(form);
    for (const asked of ['0.3.1', '1.0.0', '1.1.0']) {
      const out = await node.version(asked);
      expect(ok(out, `VERSION ${asked}`)).toEqual({ cniVersion: asked, supportedVersions: [...FLANNEL_VERSIONS] });
    }
  });

  it('STATUS passes with a complete subnet.env and fails with code 50 while it is missing or incomplete', async () => {
    const node = await newNode(form, '1.1.0');
    const ready = await node.status();
    ok(ready, 'STATUS');
    expect(ready.stdout).toBe('');
    node.removeSubnetEnv();
    failsWith(await node.status(), 50, /subnet\.env/);
    node.writeSubnetEnv({ FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: '10.244.7.1/24' });
    failsWith(await node.status(), 50, /FLANNEL_MTU/);
    node.writeSubnetEnv({ FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: '10.244.7.1/24', FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true' });
    ok(await node.status({ env: { CNI_PATH: undefined } }), 'STATUS without CNI_PATH');
  });

  describe('bad input: the right code, a message naming the problem, and nothing changed on the node', () => {
    let node: CniNode;
    let pod: CniPod;

    beforeAll(async () => {
      node = await newNode(form, '1.0.0');
      pod = await node.pod('bad');
    });

    interface BadCase {
      readonly name: string;
      readonly verb?: string;
      readonly code: number;
      readonly msg: readonly RegExp[];
      readonly opts?: InvokeOptions | ((node: CniNode) => InvokeOptions);
      readonly subnetEnv?: string | null;
    }
    const goodEnv = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';
    const cases: BadCase[] = [
      { name: 'invalid JSON', code: 6, msg: [/netconf/i, /JSON/i], opts: { stdin: '{"cniVersion":"1.0.0","name":"cbr0","type":"flannel",' } },
      { name: 'a config that is not an object', code: 6, msg: [/netconf/i], opts: { stdin: '["flannel"]' } },
      { name: 'unknown cniVersion', code: 1, msg: [/9\.9\.9/, /version/i], opts: { cniVersion: '9.9.9' } },
      { name: 'missing CNI_COMMAND', code: 4, msg: [/CNI_COMMAND/], opts: { env: { CNI_COMMAND: undefined } } },
      { name: 'unknown CNI_COMMAND', code: 4, msg: [/CNI_COMMAND/, /BOGUS/], opts: { env: { CNI_COMMAND: 'BOGUS' } } },
      ...['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'].map((v): BadCase => ({ name: `ADD without ${v}`, code: 4, msg: [new RegExp(v)], opts: { env: { [v]: undefined } } })),
      ...['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'].map((v): BadCase => ({ name: `DEL without ${v}`, verb: 'DEL', code: 4, msg: [new RegExp(v)], opts: { env: { [v]: undefined } } })),
      ...['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'].map((v): BadCase => ({ name: `CHECK without ${v}`, verb: 'CHECK', code: 4, msg: [new RegExp(v)], opts: { env: { [v]: undefined }, prevResult: { cniVersion: '1.0.0', ips: [] } } })),
      { name: 'GC without CNI_PATH', verb: 'GC', code: 4, msg: [/CNI_PATH/], opts: { cniVersion: '1.1.0', env: { CNI_PATH: undefined }, conf: { 'cni.dev/valid-attachments': [] } } },
      { name: 'delegate type not a string', code: 7, msg: [/'delegate' dictionary, if present, must have \(string\) 'type' field/], opts: { conf: { delegate: { type: 5 } } } },
      { name: 'delegate with name', code: 7, msg: [/'delegate' dictionary must not have 'name' field, it'll be set by flannel/], opts: { conf: { delegate: { name: 'x' } } } },
      { name: 'delegate with ipam', code: 7, msg: [/'delegate' dictionary must not have 'ipam' field, it'll be set by flannel/], opts: { conf: { delegate: { ipam: { type: 'host-local' } } } } },
      { name: 'delegate not an object', code: 7, msg: [/delegate/] , opts: { conf: { delegate: 'bridge' } } },
      { name: 'delegate type not in CNI_PATH', code: 7, msg: [/no-such-plugin/], opts: { conf: { delegate: { type: 'no-such-plugin' } } } },
      { name: 'delegate type that is a path', code: 7, msg: [/\.\.\/bridge/], opts: { conf: { delegate: { type: '../bridge' } } } },
      { name: 'bad ipam.routes', code: 7, msg: [/ipam\.routes/], opts: (n) => ({ conf: { ipam: { dataDir: n.ipamDir, routes: 'none' } } }) },
      { name: 'subnet.env missing (ADD: try again later)', code: 11, msg: [/subnet\.env/, /flannel/i], subnetEnv: null },
      { name: 'subnet.env empty', code: 7, msg: [/FLANNEL_NETWORK/, /FLANNEL_SUBNET/, /FLANNEL_MTU/, /FLANNEL_IPMASQ/], subnetEnv: '' },
      { name: 'subnet.env not KEY=value', code: 7, msg: [/is missing/], subnetEnv: 'this is not an env file\n' },
      { name: 'subnet.env FLANNEL_SUBNET not a CIDR', code: 7, msg: [/FLANNEL_SUBNET/, /10\.244\.7\.300\/24/], subnetEnv: goodEnv.replace('10.244.7.1/24', '10.244.7.300/24') },
      { name: 'subnet.env FLANNEL_NETWORK not a CIDR', code: 7, msg: [/FLANNEL_NETWORK/, /banana/], subnetEnv: goodEnv.replace('10.244.0.0/16', 'banana') },
      { name: 'subnet.env FLANNEL_MTU not a number', code: 7, msg: [/FLANNEL_MTU/, /fast/], subnetEnv: goodEnv.replace('1450', 'fast') },
      { name: 'subnet.env without FLANNEL_MTU', code: 7, msg: [/FLANNEL_MTU/], subnetEnv: goodEnv.replace('FLANNEL_MTU=1450\n', '') },
      { name: 'subnet.env without FLANNEL_IPMASQ', code: 7, msg: [/FLANNEL_IPMASQ/], subnetEnv: goodEnv.replace('FLANNEL_IPMASQ=true\n', '') },
      { name: 'subnet.env without FLANNEL_SUBNET', code: 7, msg: [/FLANNEL_SUBNET/], subnetEnv: goodEnv.replace('FLANNEL_SUBNET=10.244.7.1/24\n', '') },
      { name: 'subnet.env without FLANNEL_NETWORK', code: 7, msg: [/FLANNEL_NETWORK/], subnetEnv: goodEnv.replace('FLANNEL_NETWORK=10.244.0.0/16\n', '') },
      { name: 'subnet.env cut off mid-line', code: 7, msg: [/FLANNEL_/], subnetEnv: goodEnv.slice(0, 40) },
      ...['../escape', '../../../../tmp/escape', 'a/b', '/abs', '.hidden', '..'].flatMap((id): BadCase[] => [
        { name: `ADD with container ID ${JSON.stringify(id)}`, code: 4, msg: [/CNI_CONTAINERID/], opts: { containerId: id } },
        { name: `DEL with container ID ${JSON.stringify(id)}`, verb: 'DEL', code: 4, msg: [/CNI_CONTAINERID/], opts: { containerId: id } },
      ]),
      { name: 'ADD with an interface name that cannot exist', code: 4, msg: [/CNI_IFNAME/], opts: { ifname: 'eth0/../x' } },
    ];

    for (const c of cases) {
      it(`${c.verb ?? 'ADD'}: ${c.name} -> code ${c.code}`, async () => {
        if (c.subnetEnv === null) node.removeSubnetEnv();
        else if (c.subnetEnv !== undefined) node.writeSubnetEnv(c.subnetEnv);
        try {
          const snap = await node.snapshot();
          const out = await node.invoke(c.verb ?? 'ADD', typeof c.opts === 'function' ? c.opts(node) : (c.opts ?? {}), pod);
          failsWith(out, c.code, ...c.msg);
          expect(await node.snapshot()).toBe(snap);
          expect(node.reservations()).toEqual([]);
        } finally {
          node.writeSubnetEnv(goodEnv);
        }
      });
    }

    it('nothing was written under /var/lib/cni by any case', () => {
      expect(strayStateFiles()).toEqual([]);
    });
  });

  describe('dual-stack and IPv6-only subnet.env (FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET)', () => {
    const V6_NETWORK = '2001:db8:a::/48';
    const V6_GATEWAY = '2001:db8:a:7::1';
    const V6_NODE_SUBNET = /^2001:db8:a:7::[0-9a-f]{1,4}\/64$/;
    const DUAL_STACK_ENV: SubnetEnvFields = { ...DEFAULT_SUBNET_ENV, FLANNEL_IPV6_NETWORK: V6_NETWORK, FLANNEL_IPV6_SUBNET: `${V6_GATEWAY}/64` };
    const V6_ONLY_ENV: SubnetEnvFields = { FLANNEL_IPV6_NETWORK: V6_NETWORK, FLANNEL_IPV6_SUBNET: `${V6_GATEWAY}/64`, FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true' };

    interface PodAddresses {
      readonly v4?: string;
      readonly v6?: string;
    }

    /** The result's addresses (without prefix length) by family; at most one of each. */
    function addressesOf(result: AddResult): PodAddresses {
      const bare = (v6: boolean): string[] => result.ips.filter((ip) => ip.address.includes(':') === v6).map((ip) => ip.address.split('/')[0]!);
      const [v4, v6] = [bare(false), bare(true)];
      expect(v4.length + v6.length, JSON.stringify(result.ips)).toBe(result.ips.length);
      expect(Math.max(v4.length, v6.length), JSON.stringify(result.ips)).toBeLessThanOrEqual(1);
      return { ...(v4[0] ? { v4: v4[0] } : {}), ...(v6[0] ? { v6: v6[0] } : {}) };
    }

    /**
     * What the kernel shows right after ADD, per family the pod has (and nothing of the other): the address on eth0
     * with DAD done, the flannel network and default routes via cni0's gateway, the gateway on cni0 no longer
     * tentative, and one ping of that gateway answered at the first try.
     */
    async function expectWired(node: CniNode, pod: CniPod, addrs: PodAddresses): Promise<void> {
      const eth0 = await pod.ns.ip('-o', 'addr', 'show', 'dev', 'eth0');
      expect(eth0).not.toMatch(/tentative|dadfailed/);
      const cni0 = await node.host.ip('-o', 'addr', 'show', 'dev', 'cni0');
      const routes4 = await pod.ns.ip('-4', 'route', 'show');
      const routes6 = await pod.ns.ip('-6', 'route', 'show');
      if (addrs.v4) {
        expect(eth0).toContain(`inet ${addrs.v4}/24 `);
        expect(routes4).toMatch(/^10\.244\.0\.0\/16 via 10\.244\.7\.1 dev eth0/m);
        expect(routes4).toMatch(/^default via 10\.244\.7\.1 dev eth0/m);
        expect(cni0).toContain('inet 10.244.7.1/24 ');
        expect((await ping(pod.ns, '10.244.7.1', { count: 1, waitSec: 1 })).ok).toBe(true);
      } else {
        expect(eth0).not.toContain('inet ');
        expect(routes4).toBe('');
        expect(cni0).not.toContain('inet ');
      }
      if (addrs.v6) {
        expect(eth0).toContain(`inet6 ${addrs.v6}/64 scope global`);
        expect(routes6).toMatch(/^2001:db8:a::\/48 via 2001:db8:a:7::1 dev eth0/m);
        expect(routes6).toMatch(/^default via 2001:db8:a:7::1 dev eth0/m);
        expect(cni0).toMatch(/inet6 2001:db8:a:7::1\/64 scope global \\/); // no "tentative" after "global"
        const p6 = await ping(pod.ns, V6_GATEWAY, { count: 1, waitSec: 1 });
        expect(p6.ok, p6.output).toBe(true);
      } else {
        expect(eth0).not.toMatch(/inet6 (?!fe80:)/);
        expect(routes6).not.toMatch(/^default|^2001:/m);
      }
    }

    /** The delegate config saved for `pod`: the stock one with a range and a route per family subnet.env has. */
    function expectSaved(node: CniNode, pod: CniPod, delegateVersion: string, families: { v4: boolean; v6: boolean }): void {
      expect(readFileSync(join(node.dataDir, pod.containerId), 'utf8')).toBe(JSON.stringify({
        cniVersion: delegateVersion, hairpinMode: true, ipMasq: false,
        ipam: {
          dataDir: node.ipamDir,
          ranges: [...(families.v4 ? [[{ subnet: '10.244.7.0/24' }]] : []), ...(families.v6 ? [[{ subnet: '2001:db8:a:7::/64' }]] : [])],
          routes: [...(families.v4 ? [{ dst: '10.244.0.0/16' }] : []), ...(families.v6 ? [{ dst: V6_NETWORK }] : [])],
          type: 'host-local',
        },
        isDefaultGateway: true, isGateway: true, mtu: 1450, name: 'cbr0', type: 'bridge',
      }));
    }

    function sortedReservations(node: CniNode): string[] {
      return node.reservations().map((r) => `${r.ip} ${r.containerId} ${r.ifname}`).sort();
    }

    async function delOk(node: CniNode, pod: CniPod, result: AddResult): Promise<void> {
      const del = await node.del(pod, { prevResult: result });
      ok(del, `DEL ${pod.containerId}`);
      expect(del.stdout).toBe('');
      expect(node.savedConfigs().filter((n) => n.startsWith(pod.containerId))).toEqual([]);
      expect(await pod.ns.ip('-o', 'link', 'show')).not.toContain('eth0');
    }

    for (const version of ['0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      it(`dual-stack ADD (${version}): an address of each family on eth0, both routes and gateways, pings over both, CHECK, DEL frees both`, async () => {
        const node = await newNode(form, version, DUAL_STACK_ENV);
        const pod = await node.pod(`ds${version.replaceAll('.', '')}`);
        const result = await addOk(node, pod);
        const legacy = version.startsWith('0.');
        expect(result.cniVersion).toBe(version);
        const eth0 = result.interfaces.findIndex((i) => i.name === 'eth0' && i.sandbox === pod.netnsPath);
        expect(eth0, JSON.stringify(result.interfaces)).toBeGreaterThanOrEqual(0);
        // host-local answers in range order: IPv4 (first range) before IPv6.
        expect(result.ips).toEqual([
          { address: expect.stringMatching(NODE_SUBNET), gateway: '10.244.7.1', interface: eth0, ...(legacy ? { version: '4' } : {}) },
          { address: expect.stringMatching(V6_NODE_SUBNET), gateway: V6_GATEWAY, interface: eth0, ...(legacy ? { version: '6' } : {}) },
        ]);
        expect(result.routes).toHaveLength(4);
        expect(result.routes).toEqual(expect.arrayContaining([
          { dst: '10.244.0.0/16' }, { dst: V6_NETWORK }, { dst: '0.0.0.0/0', gw: '10.244.7.1' }, { dst: '::/0', gw: V6_GATEWAY },
        ]));
        const addrs = addressesOf(result);
        expect([addrs.v4, addrs.v6]).not.toContain(undefined);
        expect([addrs.v4, addrs.v6]).not.toContain(V6_GATEWAY);
        await expectWired(node, pod, addrs);
        expectSaved(node, pod, version === '1.1.0' ? '1.0.0' : version, { v4: true, v6: true }); // Debian's bridge speaks up to 1.0.0
        expect(sortedReservations(node)).toEqual([`${addrs.v4} ${pod.containerId} eth0`, `${addrs.v6} ${pod.containerId} eth0`].sort());

        if (!legacy || version === '0.4.0') ok(await node.check(pod, result, { cniVersion: version }), `CHECK ${version}`); // 0.3.1 has no CHECK
        await delOk(node, pod, result);
        expect(node.reservations()).toEqual([]);
        expect(await node.host.ip('-o', 'link', 'show', 'type', 'veth')).toBe('');
      });
    }

    it('dual-stack CHECK fails once the pod lost its IPv6 address or the node\'s IPv6 subnet moved', async () => {
      const node = await newNode(form, '1.0.0', DUAL_STACK_ENV);
      const pod = await node.pod('dscheck');
      const result = await addOk(node, pod);
      const { v6 } = addressesOf(result);
      ok(await node.check(pod, result), 'CHECK on a healthy dual-stack pod');

      node.writeSubnetEnv({ ...DUAL_STACK_ENV, FLANNEL_IPV6_SUBNET: '2001:db8:a:8::1/64' });
      failsWith(await node.check(pod, result), 7, new RegExp(`${v6}/64 is outside this node's subnet 10\\.244\\.7\\.0/24, 2001:db8:a:8::/64`));
      node.writeSubnetEnv(DUAL_STACK_ENV);
      ok(await node.check(pod, result), 'CHECK with subnet.env restored');

      await pod.ns.ip('addr', 'del', `${v6}/64`, 'dev', 'eth0');
      const missing = await node.check(pod, result);
      expect(missing.code, missing.stdout).not.toBe(0);
      expect((missing.json as { msg?: string }).msg, missing.stdout).toContain(v6);
      await delOk(node, pod, result);
      expect(node.reservations()).toEqual([]);
    });

    for (const version of ['0.3.1', '1.0.0']) {
      it(`IPv6-only ADD (${version}): only an IPv6 address and IPv6 routes, pods reach the gateway and each other, DEL frees it`, async () => {
        const node = await newNode(form, version, V6_ONLY_ENV);
        const [a, b] = [await node.pod(`v6a${version.replaceAll('.', '')}`), await node.pod(`v6b${version.replaceAll('.', '')}`)];
        const first = await addOk(node, a!);
        expect(first.ips).toEqual([
          { address: expect.stringMatching(V6_NODE_SUBNET), gateway: V6_GATEWAY, interface: expect.any(Number), ...(version === '0.3.1' ? { version: '6' } : {}) },
        ]);
        expect(first.routes).toHaveLength(2);
        expect(first.routes).toEqual(expect.arrayContaining([{ dst: V6_NETWORK }, { dst: '::/0', gw: V6_GATEWAY }]));
        const addrsA = addressesOf(first);
        await expectWired(node, a!, addrsA);
        expectSaved(node, a!, version, { v4: false, v6: true });

        const second = await addOk(node, b!);
        const addrsB = addressesOf(second);
        await expectWired(node, b!, addrsB);
        expect(addrsB.v6).not.toBe(addrsA.v6);
        const across = await ping(a!.ns, addrsB.v6!, { count: 1, waitSec: 1 });
        expect(across.ok, across.output).toBe(true);
        expect(sortedReservations(node)).toEqual([`${addrsA.v6} ${a!.containerId} eth0`, `${addrsB.v6} ${b!.containerId} eth0`].sort());
        if (version !== '0.3.1') ok(await node.check(a!, first), 'CHECK');

        await delOk(node, a!, first);
        expect(sortedReservations(node)).toEqual([`${addrsB.v6} ${b!.containerId} eth0`]);
        await delOk(node, b!, second);
        expect(node.reservations()).toEqual([]);
      });
    }

    it('20 concurrent dual-stack ADDs get 20 distinct address pairs, each on its own pod; 20 concurrent DELs free all 40', async () => {
      const node = await newNode(form, '1.0.0', DUAL_STACK_ENV);
      const pods: CniPod[] = [];
      for (let i = 0; i < 20; i++) pods.push(await node.pod(`dsc${i}`));
      const adds = await Promise.all(pods.map((p) => node.add(p)));
      const results = adds.map((a, i) => ok(a, `ADD ${i}`) as AddResult);
      const pairs = results.map(addressesOf);
      for (const p of pairs) {
        expect(p.v4).toMatch(/^10\.244\.7\.\d+$/);
        expect(p.v6).toMatch(/^2001:db8:a:7::[0-9a-f]+$/);
      }
      expect(new Set(pairs.map((p) => p.v4)).size).toBe(20);
      expect(new Set(pairs.map((p) => p.v6)).size).toBe(20);
      expect(pairs.flatMap((p) => [p.v4, p.v6])).not.toContain('10.244.7.1');
      expect(pairs.flatMap((p) => [p.v4, p.v6])).not.toContain(V6_GATEWAY);
      expect(sortedReservations(node)).toEqual(pods.flatMap((pod, i) => [`${pairs[i]!.v4} ${pod.containerId} eth0`, `${pairs[i]!.v6} ${pod.containerId} eth0`]).sort());
      await Promise.all(pods.map(async (pod, i) => {
        const eth0 = await pod.ns.ip('-o', 'addr', 'show', 'dev', 'eth0');
        expect(eth0).toContain(`inet ${pairs[i]!.v4}/24 `);
        expect(eth0).toContain(`inet6 ${pairs[i]!.v6}/64 scope global`);
        const p6 = await ping(pod.ns, V6_GATEWAY, { count: 1, waitSec: 1 });
        expect(p6.ok, `${pod.containerId}: ${p6.output}`).toBe(true);
      }));
      const dels = await Promise.all(pods.map((p, i) => node.del(p, { prevResult: results[i] })));
      for (const [i, d] of dels.entries()) ok(d, `DEL ${i}`);
      expect(node.reservations()).toEqual([]);
      for (const p of pods) await node.removePod(p);
    });
  });
});

describe.skipIf(scriptMissing ?? seaMissing ?? referenceMissing)(
  `flannel CNI plugin, self-contained (SEA) form, smoke${scriptMissing ?? seaMissing ?? referenceMissing ? ` (skipped: ${seaMissing ?? scriptMissing ?? referenceMissing})` : ''}`,
  () => {
    const form = SEA_FORM;
    for (const procPath of [false, true]) {
      it(`ADD/CHECK/DEL without node on PATH (${procPath ? '/proc/<pid>/ns/net' : '/var/run/netns'} form)`, async () => {
        const node = await newNode(form, '1.0.0');
        const pod = await node.pod(procPath ? 'seap' : 'sean', { procPath });
        const result = await addOk(node, pod);
        const address = podAddress(result);
        expect(address).toMatch(/^10\.244\.7\./);
        expect(await podAddrs(pod)).toContain(`inet ${address}/24`);
        ok(await node.check(pod, result), 'CHECK');
        ok(await node.del(pod, { prevResult: result }), 'DEL');
        expect(node.reservations()).toEqual([]);
        const version = await node.version('1.1.0');
        expect(ok(version, 'VERSION')).toEqual({ cniVersion: '1.1.0', supportedVersions: [...FLANNEL_VERSIONS] });
      });
    }
    it('reports a bad container ID like the script form', async () => {
      const node = await newNode(form, '1.0.0');
      const pod = await node.pod('seabad');
      failsWith(await node.add(pod, { containerId: '../escape' }), 4, /CNI_CONTAINERID/);
    });
  },
);
