/**
 * The lab's sub-commands. Each works from the recorded state, so they can be run from any shell while the lab is up;
 * `down` also works without that record, from the namespace names alone.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from './netns.js';
import type { LabOptions } from './lab-args.js';
import { etcdArgv, etcdHealthy, labEtcd, putNetworkConfig, readLeases, type LabEtcd } from './lab-etcd.js';
import { pingMatrix, type MatrixResult } from './lab-matrix.js';
import { labNetworkConfig } from './lab-network-config.js';
import { addLabPod, nextPodIndex } from './lab-pods.js';
import { isRunning, logTail, processesInNetns, startDetached, stopProcess, withPrivateWireguardRun } from './lab-processes.js';
import { hostsTable, leasesTable, matrixTable, podsTable, readSubnetEnv } from './lab-report.js';
import {
  addressesText, findHost, labDir, labNetns, labNetnsPrefix, loadLabState, REPO_ROOT, requireLabState, saveLabState, stackFamilies,
  type HostRecord, type LabState, type PodRecord, type ProcessRecord,
} from './lab-state.js';
import { createHost, createHub, hostAddresses, underlayText } from './lab-underlay.js';
import { kubectlFor } from './kube/control-plane.js';
import { upstreamFlanneld } from './kube/kube-tools.js';
import {
  describeControlPlane, isControlPlaneComponent, kubeFlanneldArgv, labControlPlane, nodesTable, registerLabNode, runKubectl,
  startLabControlPlane, waitForComponent,
} from './lab-kube.js';
import {
  downKubeletHosts, flannelPods, isKubeletHostProcess, kubeletPodExec, upKubeletHosts, waitForKubeletHostProcess,
} from './lab-kubelet.js';
import type { Progress } from './progress.js';
import {
  bgpFlanneldArgs, describeRouter, hostSubnets, LAB_AS, labBgpNeighbors, OFFICE, officeSource, ROUTER, routerHint, routerReport, startLabRouter,
  waitForRouter, waitForRoutes,
} from './lab-bgp.js';

export interface LabContext {
  readonly opts: LabOptions;
  readonly progress: Progress;
  /** One line of report output. */
  readonly print: (text: string) => void;
}

const FLANNELD = join(REPO_ROOT, 'dist/flanneld/main.js');
/** Each host's flanneld serves /healthz, /readyz, /metrics and /status on its own loopback. */
export const LAB_HEALTHZ_PORT = 8471;
/** The kube-flannel pods' (manifests/kube-flannel.yml: --healthz-port=8081, on the host network). */
const MANIFEST_HEALTHZ_PORT = 8081;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function flanneldArgv(host: HostRecord, etcdEndpoint: string): string[] {
  return [FLANNELD, `--etcd-endpoints=${etcdEndpoint}`, '--ip-masq', `--subnet-file=${join(host.dir, 'subnet.env')}`,
    `--healthz-ip=127.0.0.1`, `--healthz-port=${LAB_HEALTHZ_PORT}`];
}

/**
 * A host's flanneld as the lab starts it: a /run/wireguard of its own for wireguard-go's sockets, and its WireGuard
 * key in the host's dir rather than the machine-wide default, so a restart keeps the key and `down` removes it.
 */
function hostDaemonArgv(host: HostRecord, argv: readonly string[]): string[] {
  return withPrivateWireguardRun(['env', `WIREGUARD_KEY_FILE=${join(host.dir, 'wireguard.key')}`, ...argv]);
}

/** Until the daemon has (re)written subnet.env since `since`; fails at once, with its log, if the daemon exits. */
async function waitForSubnetEnv(host: HostRecord, record: ProcessRecord, since: number, timeoutMs = 60_000): Promise<void> {
  const file = join(host.dir, 'subnet.env');
  for (const deadline = Date.now() + timeoutMs; ; await sleep(50)) {
    if (existsSync(file) && statSync(file).mtimeMs >= since) return;
    if (!isRunning(record)) throw new Error(`flanneld on ${host.name} exited before writing subnet.env; the end of ${record.log}:\n${logTail(record.log)}`);
    if (Date.now() > deadline) throw new Error(`flanneld on ${host.name} has not written subnet.env after ${timeoutMs} ms; see ${record.log}`);
  }
}

async function waitForEtcd(etcd: LabEtcd, record: ProcessRecord, timeoutMs = 30_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await etcdHealthy(etcd)); await sleep(100)) {
    if (!isRunning(record)) throw new Error(`etcd exited; the end of ${record.log}:\n${logTail(record.log)}`);
    if (Date.now() > deadline) throw new Error(`etcd is not healthy after ${timeoutMs} ms; see ${record.log}`);
  }
}

export async function up(ctx: LabContext): Promise<void> {
  const { opts, progress, print } = ctx;
  const network = labNetworkConfig(opts);
  if (loadLabState(opts.id) || labNamespaces(opts.id).length > 0) {
    print(`lab ${opts.id} exists; replacing it`);
    await down(ctx, true);
  }
  const dir = labDir(opts.id);
  const { stack } = network;
  const state: LabState = {
    id: opts.id, networkConfig: network.text, backendType: network.backendType, stack, ...(opts.kube ? { kube: true } : {}),
    ...(opts.kubelet ? { kubelet: true } : {}), ...(opts.bgp ? { bgp: { as: LAB_AS, neighbors: labBgpNeighbors(opts.hosts, stack) } } : {}),
    hosts: [], pods: [], processes: {},
  };
  saveLabState(state);
  const mode = `${opts.kubelet ? 'kubelet mode, ' : opts.kube ? 'Kubernetes mode, ' : ''}${opts.bgp ? 'BGP to a router, ' : ''}`;
  print(`lab ${opts.id}: ${opts.hosts} host(s) × ${opts.pods} pod(s), ${mode}network config ${network.text}`);
  try {
    const hub = await progress.step(`underlay bridge ${underlayText(stack)} in ${labNetns(opts.id, 'hub')}`, () => createHub(opts.id, stack));
    let daemonArgv: (host: HostRecord) => string[];
    let register: (host: HostRecord) => Promise<void> = async () => undefined;
    if (opts.kubelet) {
      const spec = await progress.step(describeControlPlane(state), () => startLabControlPlane(state, () => saveLabState(state)));
      await upKubeletHosts({
        state, spec, progress, save: () => saveLabState(state), hosts: opts.hosts, podsPerHost: opts.pods,
        createHost: (i) => createHost(opts.id, i, stack),
      });
      await report(ctx, state);
      return;
    }
    if (opts.kube) {
      const spec = await progress.step(describeControlPlane(state), () => startLabControlPlane(state, () => saveLabState(state)));
      const kubectl = kubectlFor(spec);
      register = (host) => registerLabNode(kubectl, host);
      daemonArgv = (host) => kubeFlanneldArgv(FLANNELD, state, host, LAB_HEALTHZ_PORT);
    } else {
      const etcd = labEtcd(opts.id, stack);
      await progress.step(`etcd on ${etcd.endpoint}, network config written`, async () => {
        state.processes['etcd'] = startDetached(hub.name, etcdArgv(dir, stack), join(dir, 'etcd.log'));
        saveLabState(state);
        await waitForEtcd(etcd, state.processes['etcd']);
        await putNetworkConfig(etcd, network.text);
      });
      daemonArgv = (host) => flanneldArgv(host, etcd.endpoint);
    }
    const bgp = state.bgp;
    if (bgp) {
      await progress.step(describeRouter(opts.id, stack), () => startLabRouter({ ...state, bgp }, () => saveLabState(state)));
      const labArgv = daemonArgv;
      daemonArgv = (host) => [...labArgv(host), ...bgpFlanneldArgs(stack)];
    }
    const started = Date.now();
    const upstreamBinary = opts.upstream.length > 0 ? await progress.step('upstream flanneld v0.28.9 (tools/build.sh flannel; cached)', async () => upstreamFlanneld()) : '';
    for (let i = 1; i <= opts.hosts; i++) {
      const upstream = opts.upstream.includes(`h${i}`);
      const which = upstream ? "upstream's flanneld" : 'its flanneld';
      await progress.step(`host h${i} (${addressesText(hostAddresses(i, stack))}) ${opts.kube ? 'registers its Node and runs' : 'and'} ${which}`, async () => {
        const host: HostRecord = { ...(await createHost(opts.id, i, stack)), ...(upstream ? { upstream: true } : {}) };
        state.hosts.push(host);
        await register(host);
        // Upstream takes the same flags; it picks the interface of the default route, which lab hosts lack.
        const argv = upstream ? [...daemonArgv(host).map((a) => (a === FLANNELD ? upstreamBinary : a)), '--iface=eth0'] : daemonArgv(host);
        state.processes[host.name] = startDetached(host.netns, hostDaemonArgv(host, argv), join(host.dir, 'flanneld.log'));
        saveLabState(state);
      });
    }
    await progress.step('every flanneld has its lease and wrote subnet.env', async () => {
      await Promise.all(state.hosts.map((h) => waitForSubnetEnv(h, state.processes[h.name] as ProcessRecord, started - 1000)));
    });
    if (bgp) {
      await progress.step("the router learnt every host's subnet", () => waitForRoutes({ ...state, bgp }, hostSubnets(state.hosts)), (n) => `${n} route(s)`);
    }
    if (opts.pods > 0) {
      await progress.step(`${opts.pods} pod(s) per host via 10-flannel.conflist (flannel → bridge + host-local, portmap)`, async () => {
        // Hosts in parallel (each has its own IPAM and CNI state): with IPv6 a host's first ADD waits 1-2 s for the
        // gateway on its new cni0 to finish DAD, paid once rather than once per host. allSettled: no CNI call is
        // still running when a failure is reported.
        const made = await Promise.allSettled(state.hosts.map(async (host) => {
          for (let p = 1; p <= opts.pods; p++) {
            state.pods.push(await addLabPod(opts.id, host, p));
            saveLabState(state);
          }
        }));
        state.pods.sort(byPodName);
        saveLabState(state);
        for (const m of made) if (m.status === 'rejected') throw m.reason;
      });
    }
  } catch (err) {
    print(`\nthe lab is left as it is for a look around; \`npm run lab -- down --id ${opts.id}\` removes it`);
    throw err;
  }
  await report(ctx, state);
}

/** h1-p1, h1-p2, …, h2-p1, … in number order, as the tables list them. */
function byPodName(a: PodRecord, b: PodRecord): number {
  const numbers = (p: PodRecord): number[] => (p.name.match(/\d+/g) ?? []).map(Number);
  const [ah = 0, ap = 0] = numbers(a);
  const [bh = 0, bp = 0] = numbers(b);
  return ah - bh || ap - bp;
}

export async function status(ctx: LabContext): Promise<void> {
  await report(ctx, requireLabState(ctx.opts.id));
}

async function report(ctx: LabContext, state: LabState): Promise<void> {
  const { print } = ctx;
  print(`\n${await hostsTable(state, state.kubelet ? MANIFEST_HEALTHZ_PORT : LAB_HEALTHZ_PORT, state.kubelet ? await flannelPodsOf(state) : undefined)}`);
  print(`\n${state.kube ? await nodesReport(state) : await leasesReport(state)}`);
  if (state.bgp) print(`\n${await routerReport({ ...state, bgp: state.bgp })}`);
  if (state.pods.length > 0) {
    print(`\n${podsTable(state.pods, stackFamilies(state.stack))}`);
    // With --bgp the office is one more source: its row shows what the router's routes are worth.
    const office = state.bgp ? officeSource(state) : undefined;
    const results = await printMatrices(ctx, state, office ? [...state.pods, office] : state.pods);
    const fromOffice = (key: string): boolean => key.startsWith(`${OFFICE}>`);
    const counts = results.map((r) => pairsReachable(r, (key) => !fromOffice(key)));
    // An IPv4 lab keeps the verdict it always printed; with IPv6 each family gets its count.
    print(state.stack === 'v4' ? `\n${counts[0]} pod pairs reachable` : `\npod pairs reachable: ${results.map((r, i) => `IPv${r.family} ${counts[i]}`).join(', ')}`);
    if (office) {
      const officeCounts = results.map((r) => pairsReachable(r, fromOffice));
      print(state.stack === 'v4' ? `office → every pod: ${officeCounts[0]} reachable` : `office → every pod: ${results.map((r, i) => `IPv${r.family} ${officeCounts[i]}`).join(', ')}`);
    }
  }
  const h1 = state.hosts[0];
  if (h1) {
    const route = state.stack === 'v4' ? 'route' : '-6 route';
    print(`\nlook around: npm run lab -- exec ${h1.name} -- ip ${route} · ip -n ${h1.netns} ${route} · bridge -n ${h1.netns} fdb show`);
    if (state.kube) print(`the cluster: npm run lab -- kubectl${idFlag(state)} -- get nodes -o wide · admin kubeconfig ${join(labDir(state.id), 'kubeconfig')} (from the hub: ${labNetns(state.id, 'hub')})`);
    if (state.bgp) print(routerHint(state, idFlag(state)));
    print(`daemon logs: ${join(labDir(state.id), '<host>', 'flanneld.log')}${state.kube ? `; control plane logs: ${join(labDir(state.id), '<component>.log')}` : ''}`);
  }
}

/** `reached/tried` over the pairs of a matrix whose `from>to` key `counted` takes. */
function pairsReachable(result: MatrixResult, counted: (key: string) => boolean): string {
  const verdicts = [...result.reachable].filter(([key]) => counted(key)).map(([, ok]) => ok);
  return `${verdicts.filter(Boolean).length}/${verdicts.length}`;
}

async function leasesReport(state: LabState): Promise<string> {
  const etcd = state.processes['etcd'];
  const leases = etcd && isRunning(etcd) ? await readLeases(labEtcd(state.id, state.stack)).catch(() => undefined) : undefined;
  return leases ? leasesTable(leases) : `etcd is not reachable (${etcd && isRunning(etcd) ? 'running' : 'stopped'}); leases unknown`;
}

/** A kubelet lab's kube-flannel pods by host, or an empty map while the apiserver is down. */
async function flannelPodsOf(state: LabState): Promise<Map<string, string>> {
  const api = state.processes['kube-apiserver'];
  return api && isRunning(api) ? flannelPods(kubectlFor(labControlPlane(state))) : new Map();
}

async function nodesReport(state: LabState): Promise<string> {
  const api = state.processes['kube-apiserver'];
  const nodes = api && isRunning(api) ? await kubectlFor(labControlPlane(state)).nodes().catch(() => undefined) : undefined;
  return nodes ? nodesTable(nodes) : `kube-apiserver is not reachable (${api && isRunning(api) ? 'running' : 'stopped'}); Nodes unknown`;
}

/** A matrix from `sources` to every pod for each family of the lab, printed; any failed pair makes the exit status 1. */
async function printMatrices(ctx: LabContext, state: LabState, sources: readonly PodRecord[]): Promise<MatrixResult[]> {
  const exec = state.kubelet ? kubeletPodExec(labControlPlane(state)) : undefined;
  const results = await Promise.all(stackFamilies(state.stack).map((f) => pingMatrix(f, state.pods, sources, exec)));
  for (const result of results) ctx.print(`\n${matrixTable(state.pods, result, sources, state.stack !== 'v4')}`);
  if (results.some((r) => r.failures > 0)) process.exitCode = 1;
  return results;
}

/** The namespace `exec` runs in: hub (or etcd), with --bgp the router or the office, a host or a pod of this lab. */
function resolveNetns(state: LabState, target: string): string {
  const short = target === 'etcd' ? 'hub' : target;
  const known = ['hub', ...(state.bgp ? [ROUTER, OFFICE] : []), ...state.hosts.map((h) => h.name), ...state.pods.map((p) => p.name)];
  if (!known.includes(short)) throw new Error(`no "${target}" in lab ${state.id} (one of ${known.join(', ')})`);
  return labNetns(state.id, short);
}

export function exec(ctx: LabContext): number {
  const state = requireLabState(ctx.opts.id);
  const kubePod = state.pods.find((p) => p.name === ctx.opts.target)?.kubePod;
  // A kubelet lab's pod is a Kubernetes pod: entered the way its users would, through the apiserver.
  if (kubePod) return runKubectl(state, ['exec', '-n', kubePod.split('/')[0] as string, kubePod.split('/')[1] as string, '--', ...ctx.opts.execArgv]);
  const netns = resolveNetns(state, ctx.opts.target as string);
  const run = spawnSync('ip', ['netns', 'exec', netns, ...ctx.opts.execArgv], { stdio: 'inherit' });
  if (run.error) throw run.error;
  return run.status ?? 1;
}

export async function addPod(ctx: LabContext): Promise<void> {
  const state = requireLabState(ctx.opts.id);
  const host = findHost(state, ctx.opts.target as string);
  const env = readSubnetEnv(host);
  if (!env.has('FLANNEL_SUBNET') && !env.has('FLANNEL_IPV6_SUBNET')) throw new Error(`${host.name} has no subnet.env yet; is its flanneld running? (npm run lab -- status)`);
  const pod = await ctx.progress.step(`pod on ${host.name} via 10-flannel.conflist`, async () => {
    const created = await addLabPod(state.id, host, nextPodIndex(state.pods, host.name));
    state.pods.push(created);
    saveLabState(state);
    return created;
  }, (p: PodRecord) => `${p.name} ${addressesText(p)}`);
  await printMatrices(ctx, state, [pod]);
}

function processFor(state: LabState, target: string): ProcessRecord {
  const record = state.processes[target];
  if (!record) throw new Error(`no process "${target}" in lab ${state.id} (one of ${Object.keys(state.processes).join(', ')})`);
  return record;
}

/** What a killed flanneld leaves carrying traffic: kernel state, or with wireguard its orphaned wireguard-go too. */
const datapathLeft = (state: LabState): string =>
  state.backendType === 'wireguard' ? 'wireguard-go (orphaned, still carrying the device), routes' : 'routes, FDB entries';

export async function kill(ctx: LabContext): Promise<void> {
  const state = requireLabState(ctx.opts.id);
  const target = ctx.opts.target as string;
  const record = processFor(state, target);
  if (!isRunning(record)) throw new Error(`${target} is not running (restart it with: npm run lab -- restart ${target} --id ${state.id})`);
  await stopProcess(record, 'SIGKILL');
  if (isKubeletHostProcess(target)) {
    ctx.print(`${target} killed (pid ${record.pid}); the host's containers and the kube-flannel pod keep running without it`);
    return;
  }
  if (target === ROUTER) {
    ctx.print(`the router (BIRD) killed (pid ${record.pid}); the routes it installed stay in its kernel table, every flanneld retries its sessions until it is restarted`);
    return;
  }
  ctx.print(isControlPlaneComponent(target)
    ? `${target} killed (pid ${record.pid}); every flanneld keeps its datapath and retries until ${target === 'kube-controller-manager' ? 'the API is' : `${target} is`} back`
    : `flanneld on ${target} killed (pid ${record.pid}); its ${datapathLeft(state)} and ${state.kube ? 'Node annotations' : 'lease'} stay until it is restarted${state.kube ? '' : ' or the lease expires'}`);
}

export async function restart(ctx: LabContext): Promise<void> {
  const state = requireLabState(ctx.opts.id);
  const target = ctx.opts.target as string;
  const old = processFor(state, target);
  const what = target === ROUTER ? 'the router (BIRD)' : isControlPlaneComponent(target) || isKubeletHostProcess(target) ? target : `flanneld on ${target}`;
  await ctx.progress.step(`restart ${what}`, async () => {
    await stopProcess(old, 'SIGTERM');
    const since = Date.now();
    const record = startDetached(old.netns, old.argv, old.log, old.mountNs);
    state.processes[target] = record;
    saveLabState(state);
    if (state.kube && isControlPlaneComponent(target)) await waitForComponent(labControlPlane(state), target, record);
    else if (isKubeletHostProcess(target)) await waitForKubeletHostProcess(state, target, record);
    else if (target === 'etcd') await waitForEtcd(labEtcd(state.id, state.stack), record);
    else if (target === ROUTER) await waitForRouter(state.id, record);
    else await waitForSubnetEnv(findHost(state, target), record, since);
    return record;
  }, (r) => `pid ${r.pid}`);
}

export function kubectl(ctx: LabContext): number {
  return runKubectl(requireLabState(ctx.opts.id), ctx.opts.execArgv);
}

const idFlag = (state: LabState): string => (state.id === 'lab' ? '' : ` --id ${state.id}`);

function labNamespaces(id: string): string[] {
  const prefix = labNetnsPrefix(id);
  return existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(prefix)) : [];
}

export async function down(ctx: LabContext, quiet = false): Promise<void> {
  const { id } = ctx.opts;
  const state = loadLabState(id);
  // Kubelet hosts first, containers included, while containerd can still stop them cleanly.
  let stopped = await downKubeletHosts(id, state);
  // Newest first: daemons before the control plane, and the apiserver before its etcd (without etcd its graceful
  // stop hangs until the SIGKILL 10 s later).
  for (const record of Object.values(state?.processes ?? {}).reverse()) if (await stopProcess(record)) stopped++;
  const names = labNamespaces(id);
  // Whatever still runs in our namespaces (a daemon whose record was lost, an exec'd shell) is ours to stop.
  for (const name of names) for (const record of await processesInNetns(name)) if (await stopProcess(record)) stopped++;
  for (const name of names.sort().reverse()) await sh('ip', ['netns', 'del', name]).catch(() => undefined);
  const dir = labDir(id);
  const hadDir = existsSync(dir);
  rmSync(dir, { recursive: true, force: true });
  if (!quiet) ctx.print(`lab ${id} is down: ${stopped} process(es) stopped, ${names.length} namespace(s) removed${hadDir ? `, ${dir} removed` : ''}`);
}
