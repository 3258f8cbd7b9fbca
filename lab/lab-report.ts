/**
 * What `up` and `status` print: markdown tables of hosts (with their daemon's health), the leases as etcd holds
 * them, pods, and the ping matrix — pod by pod for small labs, host by host (ok/total) once that gets too wide.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Netns } from './netns.js';
import type { LeaseRow } from './lab-etcd.js';
import type { MatrixResult } from './lab-matrix.js';
import { isRunning, processStartTime } from './lab-processes.js';
import { addressesText, addressOf, REPO_ROOT, type HostRecord, type LabState, type PodRecord, type ProcessRecord } from './lab-state.js';
import type { Family } from '../flanneld/ip/address.js';
import type { StatusReport } from '../flanneld/health/daemon-status.js';
import { markdownTable } from '../flanneld/status/markdown-table.js';

const FLANNELD_MAIN = join(REPO_ROOT, 'dist/flanneld/main.js');

export { markdownTable };

export function readSubnetEnv(host: HostRecord): Map<string, string> {
  const env = new Map<string, string>();
  try {
    for (const m of readFileSync(host.subnetEnv ?? join(host.dir, 'subnet.env'), 'utf8').matchAll(/^(\w+)=(.*)$/gm)) env.set(m[1] as string, m[2] as string);
  } catch {
    // not written yet: the table shows '-'
  }
  return env;
}

/** Running with its uptime, or stopped: what `kill` and `restart` rehearse shows up here. */
export function daemonHealth(record: ProcessRecord | undefined): string {
  if (!record || !isRunning(record)) return 'stopped';
  const startTicks = Number(processStartTime(record.pid));
  const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) - startTicks / 100;
  return `running, pid ${record.pid}, up ${formatSeconds(uptime)}`;
}

function formatSeconds(s: number): string {
  if (s < 120) return `${Math.max(0, Math.round(s))} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

/** The flannel devices of a host (flannel.<VNI>, flannel-v6.<VNI> or flannel0) and their MACs; host-gw has none. */
async function flannelDevices(host: HostRecord): Promise<{ name: string; mac: string }> {
  const out = await new Netns(host.netns).ip('-o', 'link', 'show').catch(() => '');
  const found = [...out.matchAll(/^\d+: (flannel[.\w-]*?)(?:@\S+)?: .*?link\/(?:ether (\S+)|none)/gm)];
  return found.length === 0 ? { name: '-', mac: '-' } : { name: found.map((m) => m[1]).join(', '), mac: found.map((m) => m[2] ?? '-').join(', ') };
}

/** Several values of one cell (one per family), or '-' when there is none. */
const cell = (...values: (string | undefined | null)[]): string => [...new Set(values.filter((v): v is string => !!v))].join(', ') || '-';

/**
 * What the host's flanneld says about itself (`flanneld status --json` in the host's namespace): ready or why not,
 * stalled loops, peers answering probes, repairs.
 */
async function daemonView(host: HostRecord, running: boolean, port: number): Promise<string[]> {
  if (!running) return ['-', '-', '-'];
  const out = await new Netns(host.netns).exec(process.execPath, [FLANNELD_MAIN, 'status', '--json', `--healthz-port=${port}`]).catch((err: Error) => {
    return (err.cause as { stdout?: string } | undefined)?.stdout ?? '';
  });
  let report: StatusReport;
  try {
    report = JSON.parse(out) as StatusReport;
  } catch {
    return ['no answer', '-', '-'];
  }
  const health = report.ready && report.stalled.length === 0 ? 'ready' : [...report.notReady, ...report.stalled].join('; ');
  const probed = report.peers.filter((p) => p.probe);
  const reachable = probed.filter((p) => p.probe?.reachable).length;
  const probes = probed.length === 0 ? `${report.peers.length} peer(s), not probed yet` : `${reachable}/${probed.length} reachable`;
  const repairs = Object.values(report.datapath.repairs).reduce((a, b) => a + b, 0) + report.trafficRules.repairs;
  return [health, probes, String(repairs)];
}

/**
 * `flannelPods`: in a kubelet lab, each host's kube-flannel pod as Kubernetes reports it (flanneld is not a process
 * of the lab there); the health columns then come from that pod's flanneld on the same port.
 */
export async function hostsTable(state: LabState, healthzPort: number, flannelPods?: ReadonlyMap<string, string>): Promise<string> {
  const rows = await Promise.all(state.hosts.map(async (host) => {
    const env = readSubnetEnv(host);
    const dev = await flannelDevices(host);
    const record = state.processes[host.name];
    const subnet = cell(env.get('FLANNEL_SUBNET'), env.get('FLANNEL_IPV6_SUBNET'));
    const pod = flannelPods?.get(host.name);
    const daemon = flannelPods ? (pod ?? 'no kube-flannel pod') : `${host.upstream ? 'upstream v0.28.9, ' : ''}${daemonHealth(record)}`;
    const running = flannelPods ? (pod?.includes(' Running') ?? false) : record !== undefined && isRunning(record);
    // Upstream's daemon has no status view to ask.
    const view = host.upstream ? ['-', '-', '-'] : await daemonView(host, running, healthzPort);
    return [host.name, addressesText(host), subnet, env.get('FLANNEL_MTU') ?? '-', dev.name, dev.mac, daemon, ...view];
  }));
  return markdownTable(['host', 'public IP', 'subnet', 'MTU', 'device', 'VTEP MAC', 'flanneld', 'health', 'peer probes', 'repairs'], rows);
}

const NO_IPV4 = '0.0.0.0';

export function leasesTable(leases: readonly LeaseRow[]): string {
  const rows = leases.map((lease) => {
    let attrs: {
      PublicIP?: string; PublicIPv6?: string | null; BackendType?: string;
      BackendData?: { VtepMAC?: string } | null; BackendV6Data?: { VtepMAC?: string } | null;
    } = {};
    try {
      attrs = JSON.parse(lease.value) as typeof attrs;
    } catch {
      // shown as '-'
    }
    // <v4>-<len>, <v4>-<len>&<v6>-<len>, or upstream's 0.0.0.0-0&<v6>-<len> when the lease has no IPv4.
    const subnets = lease.key.slice(lease.key.lastIndexOf('/') + 1).split('&').map((s) => s.replace(/-(\d+)$/, '/$1'));
    const ttl = lease.ttl === undefined ? '-' : formatSeconds(lease.ttl);
    const publicIp = attrs.PublicIP === NO_IPV4 ? undefined : attrs.PublicIP;
    return [cell(...subnets.filter((n) => n !== `${NO_IPV4}/0`)), cell(publicIp, attrs.PublicIPv6), attrs.BackendType ?? '-',
      cell(attrs.BackendData?.VtepMAC, attrs.BackendV6Data?.VtepMAC), ttl];
  });
  return markdownTable(['lease (etcd)', 'public IP', 'backend', 'VtepMAC', 'expires in'], rows);
}

/** One address column, or one per family in a dual-stack lab. */
export function podsTable(pods: readonly PodRecord[], families: readonly Family[] = [4]): string {
  const columns = families.length === 1 ? ['address'] : families.map((f) => `IPv${f} address`);
  return markdownTable(['pod', 'host', ...columns, 'namespace'], pods.map((p) => [p.name, p.host, ...families.map((f) => addressOf(p, f) ?? '-'), p.kubePod ?? p.netns]));
}

const POD_MATRIX_LIMIT = 12;

/** `labelled`: the corner cell names the family, for labs that print a matrix per family. */
export function matrixTable(pods: readonly PodRecord[], result: MatrixResult, sources: readonly PodRecord[] = pods, labelled = false): string {
  const verdict = (from: PodRecord, to: PodRecord): boolean | undefined => result.reachable.get(`${from.name}>${to.name}`);
  const label = labelled ? `IPv${result.family}: ` : '';
  if (pods.length <= POD_MATRIX_LIMIT) {
    const rows = sources.map((from) => [from.name, ...pods.map((to) => {
      const ok = verdict(from, to);
      return ok === undefined ? '—' : ok ? 'ok' : 'FAIL';
    })]);
    return markdownTable([`${label}from \\ to`, ...pods.map((p) => `${p.name} ${addressOf(p, result.family) ?? '-'}`)], rows);
  }
  const hosts = [...new Set(pods.map((p) => p.host))];
  const rows = [...new Set(sources.map((p) => p.host))].map((from) => [from, ...hosts.map((to) => {
    const pairs = sources.filter((a) => a.host === from).flatMap((a) => pods.filter((b) => b.host === to).map((b) => verdict(a, b)));
    const tried = pairs.filter((v) => v !== undefined);
    const ok = tried.filter(Boolean).length;
    return tried.length === 0 ? '—' : ok === tried.length ? `ok ${ok}/${tried.length}` : `FAIL ${ok}/${tried.length}`;
  })]);
  return markdownTable([`${label}pods on \\ pods on`, ...hosts], rows);
}
