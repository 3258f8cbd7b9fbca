/**
 * What a lab made, written down as it is made (`.lab/<id>/state.json`), so status, kill, restart and down work on
 * exactly those namespaces and processes, also from another shell or after the lab command itself crashed.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Family } from '../flanneld/ip/address.js';
import type { LabStack } from './lab-args.js';

/** The checkout this module belongs to, from its source (lab/) and from its build (dist/lab/) alike. */
export const REPO_ROOT = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();

export interface ProcessRecord {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat at spawn time: tells our process from a later one that reused the PID. */
  readonly startTime: string;
  readonly netns: string;
  readonly argv: readonly string[];
  readonly log: string;
  /** A kubelet host's mount namespace file: the process was started with nsenter into it and `netns`. */
  readonly mountNs?: string;
}

export interface HostRecord {
  /** Short name: h1, h2, … */
  readonly name: string;
  /** Underlay address on eth0: IPv4, or IPv6 in an IPv6-only lab. */
  readonly ip: string;
  /** IPv6 underlay address on eth0 (dual-stack and IPv6-only labs). */
  readonly ip6?: string;
  readonly netns: string;
  /** subnet.env, the daemon log and the CNI/IPAM data of this host. */
  readonly dir: string;
  /** Where this host's flanneld writes subnet.env when not in `dir` (a kubelet host's private /run/flannel). */
  readonly subnetEnv?: string;
  /** The host runs upstream flannel's flanneld (`up --upstream`), not ours. */
  readonly upstream?: boolean;
}

export interface PodRecord {
  /** Short name: h1-p1, … */
  readonly name: string;
  readonly host: string;
  readonly netns: string;
  /** The first address CNI gave the pod: IPv4, or IPv6 in an IPv6-only lab. */
  readonly ip: string;
  /** The pod's IPv6 address (dual-stack and IPv6-only labs). */
  readonly ip6?: string;
  /** Kubelet mode: the Pod (`namespace/name`); commands reach it with `kubectl exec` (netns is then empty). */
  readonly kubePod?: string;
}

/** What `up --bgp` records: the AS, and the router's neighbours in configuration order (BIRD's n0, n1, …). */
export interface LabBgp {
  readonly as: number;
  readonly neighbors: readonly string[];
}

export interface LabState {
  readonly id: string;
  readonly networkConfig: string;
  readonly backendType: string;
  /** The families the lab was brought up with; every later sub-command works in them. */
  readonly stack: LabStack;
  /** Kubernetes mode (`up --kube`): a control plane in the hub instead of the etcd-mode store. */
  readonly kube?: boolean;
  /** Kubelet mode (`up --kubelet`, implies kube): containerd and a kubelet per host, flannel-ts as the DaemonSet. */
  readonly kubelet?: boolean;
  /** `up --bgp`: a BIRD router (process `router`) and an office host behind it; every flanneld announces to it. */
  readonly bgp?: LabBgp;
  readonly hosts: HostRecord[];
  readonly pods: PodRecord[];
  /** By name: `etcd`, with --bgp `router`, with --kube `kube-apiserver` and `kube-controller-manager`, and the host names (their flanneld). */
  readonly processes: Record<string, ProcessRecord>;
}

export const labDir = (id: string): string => join(REPO_ROOT, '.lab', id);
export const labNetnsPrefix = (id: string): string => `ftl-${id}-`;
export const labNetns = (id: string, short: string): string => `${labNetnsPrefix(id)}${short}`;
const stateFile = (id: string): string => join(labDir(id), 'state.json');

export function loadLabState(id: string): LabState | undefined {
  if (!existsSync(stateFile(id))) return undefined;
  // A lab brought up before the lab knew IPv6 has no stack recorded: it is IPv4.
  return { stack: 'v4', ...(JSON.parse(readFileSync(stateFile(id), 'utf8')) as Omit<LabState, 'stack'>) };
}

export function requireLabState(id: string): LabState {
  const state = loadLabState(id);
  if (!state) throw new Error(`lab "${id}" is not up (no ${stateFile(id)}); start it with: npm run lab -- up --id ${id}`);
  return state;
}

/** Atomic, so a crash mid-write never leaves `down` without the list of what to remove. */
export function saveLabState(state: LabState): void {
  mkdirSync(labDir(state.id), { recursive: true });
  const tmp = `${stateFile(state.id)}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2));
  renameSync(tmp, stateFile(state.id));
}

export function findHost(state: LabState, name: string): HostRecord {
  const host = state.hosts.find((h) => h.name === name);
  if (!host) throw new Error(`no host "${name}" in lab ${state.id} (hosts: ${state.hosts.map((h) => h.name).join(', ')})`);
  return host;
}

export const stackFamilies = (stack: LabStack): Family[] => (stack === 'v4' ? [4] : stack === 'dual' ? [4, 6] : [6]);

/** A pod's (or host's) address of one family, if it has one. */
export function addressOf(record: { readonly ip: string; readonly ip6?: string }, family: Family): string | undefined {
  return family === 6 ? record.ip6 : record.ip.includes(':') ? undefined : record.ip;
}

/** A record's addresses, one per family it has: `10.244.1.2, 2001:db8:a:1::2`. */
export const addressesText = (record: { readonly ip: string; readonly ip6?: string }): string =>
  record.ip6 && record.ip6 !== record.ip ? `${record.ip}, ${record.ip6}` : record.ip;
