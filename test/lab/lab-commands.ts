/**
 * The lab's sub-commands. Each works from the recorded state, so they can be run from any shell while the lab is up;
 * `down` also works without that record, from the namespace names alone.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Netns, sh } from '../helpers/netns.js';
import type { LabOptions } from './lab-args.js';
import { etcdArgv, etcdHealthy, LAB_ETCD_ENDPOINT, putNetworkConfig, readLeases } from './lab-etcd.js';
import { pingMatrix } from './lab-matrix.js';
import { labNetworkConfig } from './lab-network-config.js';
import { addLabPod, nextPodIndex } from './lab-pods.js';
import { isRunning, logTail, processesInNetns, startDetached, stopProcess } from './lab-processes.js';
import { hostsTable, leasesTable, matrixTable, podsTable, readSubnetEnv } from './lab-report.js';
import {
  findHost, labDir, labNetns, labNetnsPrefix, loadLabState, REPO_ROOT, requireLabState, saveLabState,
  type HostRecord, type LabState, type PodRecord, type ProcessRecord,
} from './lab-state.js';
import { createHost, createHub } from './lab-underlay.js';
import type { Progress } from './progress.js';

export interface LabContext {
  readonly opts: LabOptions;
  readonly progress: Progress;
  /** One line of report output. */
  readonly print: (text: string) => void;
}

const FLANNELD = join(REPO_ROOT, 'dist/flanneld/main.js');
/** Each host's flanneld serves /healthz, /readyz, /metrics and /status on its own loopback. */
export const LAB_HEALTHZ_PORT = 8471;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function flanneldArgv(host: HostRecord): string[] {
  return [FLANNELD, `--etcd-endpoints=${LAB_ETCD_ENDPOINT}`, '--ip-masq', `--subnet-file=${join(host.dir, 'subnet.env')}`,
    `--healthz-ip=127.0.0.1`, `--healthz-port=${LAB_HEALTHZ_PORT}`];
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

async function waitForEtcd(hub: Netns, record: ProcessRecord, timeoutMs = 30_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await etcdHealthy(hub)); await sleep(100)) {
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
  const state: LabState = { id: opts.id, networkConfig: network.text, backendType: network.backendType, hosts: [], pods: [], processes: {} };
  saveLabState(state);
  print(`lab ${opts.id}: ${opts.hosts} host(s) × ${opts.pods} pod(s), network config ${network.text}`);
  try {
    const hub = await progress.step(`underlay bridge 192.0.2.0/24 in ${labNetns(opts.id, 'hub')}`, () => createHub(opts.id));
    await progress.step(`etcd on ${LAB_ETCD_ENDPOINT}, network config written`, async () => {
      state.processes['etcd'] = startDetached(hub.name, etcdArgv(dir), join(dir, 'etcd.log'));
      saveLabState(state);
      await waitForEtcd(hub, state.processes['etcd']);
      await putNetworkConfig(hub, network.text);
    });
    const started = Date.now();
    for (let i = 1; i <= opts.hosts; i++) {
      await progress.step(`host h${i} (192.0.2.${i}) and its flanneld`, async () => {
        const host = await createHost(opts.id, i);
        state.hosts.push(host);
        state.processes[host.name] = startDetached(host.netns, flanneldArgv(host), join(host.dir, 'flanneld.log'));
        saveLabState(state);
      });
    }
    await progress.step('every flanneld has its lease and wrote subnet.env', async () => {
      await Promise.all(state.hosts.map((h) => waitForSubnetEnv(h, state.processes[h.name] as ProcessRecord, started - 1000)));
    });
    if (opts.pods > 0) {
      await progress.step(`${opts.pods} pod(s) per host via 10-flannel.conflist (flannel → bridge + host-local, portmap)`, async () => {
        for (const host of state.hosts) {
          for (let p = 1; p <= opts.pods; p++) {
            state.pods.push(await addLabPod(opts.id, host, p));
            saveLabState(state);
          }
        }
      });
    }
  } catch (err) {
    print(`\nthe lab is left as it is for a look around; \`npm run lab -- down --id ${opts.id}\` removes it`);
    throw err;
  }
  await report(ctx, state);
}

export async function status(ctx: LabContext): Promise<void> {
  await report(ctx, requireLabState(ctx.opts.id));
}

async function report(ctx: LabContext, state: LabState): Promise<void> {
  const { print } = ctx;
  const hub = new Netns(labNetns(state.id, 'hub'));
  print(`\n${await hostsTable(state, LAB_HEALTHZ_PORT)}`);
  const etcd = state.processes['etcd'];
  const leases = etcd && isRunning(etcd) ? await readLeases(hub).catch(() => undefined) : undefined;
  print(leases ? `\n${leasesTable(leases)}` : `\netcd is not reachable (${etcd && isRunning(etcd) ? 'running' : 'stopped'}); leases unknown`);
  if (state.pods.length > 0) {
    print(`\n${podsTable(state.pods)}`);
    const result = await pingMatrix(state.pods);
    print(`\n${matrixTable(state.pods, result)}`);
    const pairs = state.pods.length * (state.pods.length - 1);
    print(`\n${pairs - result.failures}/${pairs} pod pairs reachable`);
    if (result.failures > 0) process.exitCode = 1;
  }
  const h1 = state.hosts[0];
  if (h1) {
    print(`\nlook around: npm run lab -- exec ${h1.name} -- ip route · ip -n ${h1.netns} route · bridge -n ${h1.netns} fdb show`);
    print(`daemon logs: ${join(labDir(state.id), '<host>', 'flanneld.log')}`);
  }
}

/** The namespace `exec` runs in: hub (or etcd), a host or a pod of this lab. */
function resolveNetns(state: LabState, target: string): string {
  const short = target === 'etcd' ? 'hub' : target;
  const known = ['hub', ...state.hosts.map((h) => h.name), ...state.pods.map((p) => p.name)];
  if (!known.includes(short)) throw new Error(`no "${target}" in lab ${state.id} (one of ${known.join(', ')})`);
  return labNetns(state.id, short);
}

export function exec(ctx: LabContext): number {
  const state = requireLabState(ctx.opts.id);
  const netns = resolveNetns(state, ctx.opts.target as string);
  const run = spawnSync('ip', ['netns', 'exec', netns, ...ctx.opts.execArgv], { stdio: 'inherit' });
  if (run.error) throw run.error;
  return run.status ?? 1;
}

export async function addPod(ctx: LabContext): Promise<void> {
  const state = requireLabState(ctx.opts.id);
  const host = findHost(state, ctx.opts.target as string);
  if (!readSubnetEnv(host).has('FLANNEL_SUBNET')) throw new Error(`${host.name} has no subnet.env yet; is its flanneld running? (npm run lab -- status)`);
  const pod = await ctx.progress.step(`pod on ${host.name} via 10-flannel.conflist`, async () => {
    const created = await addLabPod(state.id, host, nextPodIndex(state.pods, host.name));
    state.pods.push(created);
    saveLabState(state);
    return created;
  }, (p: PodRecord) => `${p.name} ${p.ip}`);
  const result = await pingMatrix(state.pods, [pod]);
  ctx.print(`\n${matrixTable(state.pods, result, [pod])}`);
  if (result.failures > 0) process.exitCode = 1;
}

function processFor(state: LabState, target: string): ProcessRecord {
  const record = state.processes[target];
  if (!record) throw new Error(`no process "${target}" in lab ${state.id} (one of ${Object.keys(state.processes).join(', ')})`);
  return record;
}

export async function kill(ctx: LabContext): Promise<void> {
  const state = requireLabState(ctx.opts.id);
  const target = ctx.opts.target as string;
  const record = processFor(state, target);
  if (!isRunning(record)) throw new Error(`${target} is not running (restart it with: npm run lab -- restart ${target} --id ${state.id})`);
  await stopProcess(record, 'SIGKILL');
  ctx.print(target === 'etcd'
    ? `etcd killed (pid ${record.pid}); every flanneld keeps its datapath and retries until etcd is back`
    : `flanneld on ${target} killed (pid ${record.pid}); its routes, FDB entries and lease stay until it is restarted or the lease expires`);
}

export async function restart(ctx: LabContext): Promise<void> {
  const state = requireLabState(ctx.opts.id);
  const target = ctx.opts.target as string;
  const old = processFor(state, target);
  await ctx.progress.step(`restart ${target === 'etcd' ? 'etcd' : `flanneld on ${target}`}`, async () => {
    await stopProcess(old, 'SIGTERM');
    const since = Date.now();
    const record = startDetached(old.netns, old.argv, old.log);
    state.processes[target] = record;
    saveLabState(state);
    if (target === 'etcd') await waitForEtcd(new Netns(old.netns), record);
    else await waitForSubnetEnv(findHost(state, target), record, since);
    return record;
  }, (r) => `pid ${r.pid}`);
}

function labNamespaces(id: string): string[] {
  const prefix = labNetnsPrefix(id);
  return existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(prefix)) : [];
}

export async function down(ctx: LabContext, quiet = false): Promise<void> {
  const { id } = ctx.opts;
  const state = loadLabState(id);
  let stopped = 0;
  for (const record of Object.values(state?.processes ?? {})) if (await stopProcess(record)) stopped++;
  const names = labNamespaces(id);
  // Whatever still runs in our namespaces (a daemon whose record was lost, an exec'd shell) is ours to stop.
  for (const name of names) for (const record of await processesInNetns(name)) if (await stopProcess(record)) stopped++;
  for (const name of names.sort().reverse()) await sh('ip', ['netns', 'del', name]).catch(() => undefined);
  const dir = labDir(id);
  const hadDir = existsSync(dir);
  rmSync(dir, { recursive: true, force: true });
  if (!quiet) ctx.print(`lab ${id} is down: ${stopped} process(es) stopped, ${names.length} namespace(s) removed${hadDir ? `, ${dir} removed` : ''}`);
}
