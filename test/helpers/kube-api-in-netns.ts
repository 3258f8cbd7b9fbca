/**
 * Makes a FakeKubeApi (which lives in the test runner) reachable at host:port inside a network namespace, through
 * test/drivers/unix-forward.ts running in that namespace and the fake's unix socket; and a "kube lab": a topology
 * whose hub serves the fake API, with the real flanneld in Kubernetes mode on each host.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startFakeKubeApi, type FakeKubeApi, type FakeKubeApiOptions } from './fake-kube-api.js';
import { startFlanneld } from './flanneld-process.js';
import type { Netns, NetnsRun } from './netns.js';
import { spawnTracked, waitFor, type TrackedProcess } from './processes.js';
import { HUB_IP, HUB_IP6, buildTopology, type Topology, type TopologyOptions } from './topology.js';

const DRIVER = fileURLToPath(new URL('../../dist/test/drivers/unix-forward.js', import.meta.url));
const READY_TIMEOUT_MS = 10_000;

/** Resolves once the forwarder is listening; the caller stops it (TrackedProcess.stop, by PID). */
export async function exposeInNetns(api: FakeKubeApi, ns: Netns, host: string, port: number): Promise<TrackedProcess> {
  const proc = spawnTracked('ip', ['netns', 'exec', ns.name, process.execPath, DRIVER, host, String(port), api.socketPath], {}, DRIVER);
  let listening = false;
  createInterface({ input: proc.child.stdout! }).on('line', (line) => {
    if (line.trim() === 'listening') listening = true;
  });
  // An early exit (port taken, no such namespace, driver not built) fails at once instead of after the timeout.
  const exited = proc.exited.then((code) => {
    throw new Error(`kube API forwarder in ${ns.name} exited (${code}): ${proc.output().trim()}`);
  });
  const ready = waitFor(`the kube API forwarder on ${host}:${port} in ${ns.name}`, () => (listening ? true : undefined), READY_TIMEOUT_MS, 20);
  try {
    await Promise.race([ready, exited]);
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  } finally {
    exited.catch(() => undefined);
    ready.catch(() => undefined);
  }
  return proc;
}

/** A topology with the fake API served from its hub and the real flanneld in --kube-subnet-mgr mode per host. */
export interface KubeLab {
  readonly topology: Topology;
  readonly api: FakeKubeApi;
  /** The URL hosts reach the API at: the hub's IPv4 address, or its IPv6 one on an IPv6-only underlay. */
  readonly apiUrl: string;
  readonly dir: string;
  /** The Node name of a host: node-h1, … */
  nodeOf(host: string): string;
  envFile(host: string): string;
  /** The host's subnet.env, or undefined while flanneld has not written it. */
  readEnv(host: string): string | undefined;
  /**
   * Starts flanneld for `host` (NODE_NAME = nodeOf(host)) with the lab's flags and `extraArgs`, after removing the
   * host's subnet.env (so its reappearance means this daemon wrote it); does not wait.
   */
  start(host: string, extraArgs?: readonly string[]): TrackedProcess;
  daemon(host: string): TrackedProcess | undefined;
  /** Stops every daemon and the forwarder (by PID), closes the API and removes the namespaces. */
  stop(): Promise<void>;
}

export interface KubeLabOptions extends TopologyOptions {
  /** Written to net-conf.json, which every flanneld reads. */
  readonly netConf: object;
  readonly api?: FakeKubeApiOptions;
  /** Flags every flanneld gets besides the kube ones. */
  readonly flanneldArgs?: readonly string[];
}

const API_PORT = 6443;

export async function startKubeLab(run: NetnsRun, opts: KubeLabOptions): Promise<KubeLab> {
  const { netConf, api: apiOptions, flanneldArgs = [], ...topologyOptions } = opts;
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-kube-'));
  const netConfPath = join(dir, 'net-conf.json');
  writeFileSync(netConfPath, JSON.stringify(netConf));
  const topology = await buildTopology(run, topologyOptions);
  const api = await startFakeKubeApi(apiOptions);
  const v6Only = topology.stack === 'v6';
  const forwarder = await exposeInNetns(api, topology.hub, v6Only ? HUB_IP6 : HUB_IP, API_PORT).catch(async (err: unknown) => {
    await api.close();
    throw err;
  });
  const apiUrl = v6Only ? `http://[${HUB_IP6}]:${API_PORT}` : `http://${HUB_IP}:${API_PORT}`;
  const daemons = new Map<string, TrackedProcess>();
  const nodeOf = (host: string): string => `node-${host}`;
  const envFile = (host: string): string => join(dir, `${host}.env`);
  return {
    topology,
    api,
    apiUrl,
    dir,
    nodeOf,
    envFile,
    readEnv: (host) => (existsSync(envFile(host)) ? readFileSync(envFile(host), 'utf8') : undefined),
    start(host, extraArgs = []) {
      rmSync(envFile(host), { force: true });
      const proc = startFlanneld(topology.host(host).ns.name, [
        '--kube-subnet-mgr',
        `--kube-api-url=${apiUrl}`,
        `--net-config-path=${netConfPath}`,
        `--subnet-file=${envFile(host)}`,
        ...flanneldArgs,
        ...extraArgs,
      ], { NODE_NAME: nodeOf(host) });
      daemons.set(host, proc);
      return proc;
    },
    daemon: (host) => daemons.get(host),
    async stop() {
      if (process.env['DEBUG_KUBE']) for (const [h, d] of daemons) console.log(h, d.output().slice(-4000));
      for (const d of daemons.values()) await d.stop();
      await forwarder.stop();
      await api.close();
      await run.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
