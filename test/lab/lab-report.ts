/**
 * What `up` and `status` print: markdown tables of hosts (with their daemon's health), the leases as etcd holds
 * them, pods, and the ping matrix — pod by pod for small labs, host by host (ok/total) once that gets too wide.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Netns } from '../helpers/netns.js';
import type { LeaseRow } from './lab-etcd.js';
import type { MatrixResult } from './lab-matrix.js';
import { isRunning, processStartTime } from './lab-processes.js';
import { REPO_ROOT, type HostRecord, type LabState, type PodRecord, type ProcessRecord } from './lab-state.js';
import type { StatusReport } from '../../flanneld/health/daemon-status.js';
import { markdownTable } from '../../flanneld/status/markdown-table.js';

const FLANNELD_MAIN = join(REPO_ROOT, 'dist/flanneld/main.js');

export { markdownTable };

export function readSubnetEnv(host: HostRecord): Map<string, string> {
  const env = new Map<string, string>();
  try {
    for (const m of readFileSync(join(host.dir, 'subnet.env'), 'utf8').matchAll(/^(\w+)=(.*)$/gm)) env.set(m[1] as string, m[2] as string);
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

/** The flannel device of a host (flannel.<VNI> or flannel0) and its MAC; host-gw has none. */
async function flannelDevice(host: HostRecord): Promise<{ name: string; mac: string }> {
  const out = await new Netns(host.netns).ip('-o', 'link', 'show').catch(() => '');
  const m = /^\d+: (flannel[.\w-]*?)(?:@\S+)?: .*?link\/(?:ether (\S+)|none)/m.exec(out);
  return m ? { name: m[1] as string, mac: m[2] ?? '-' } : { name: '-', mac: '-' };
}

/**
 * What the host's flanneld says about itself (`flanneld status --json` in the host's namespace): ready or why not,
 * stalled loops, peers answering probes, repairs.
 */
async function daemonView(host: HostRecord, record: ProcessRecord | undefined, port: number): Promise<string[]> {
  if (!record || !isRunning(record)) return ['-', '-', '-'];
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

export async function hostsTable(state: LabState, healthzPort: number): Promise<string> {
  const rows = await Promise.all(state.hosts.map(async (host) => {
    const env = readSubnetEnv(host);
    const dev = await flannelDevice(host);
    const record = state.processes[host.name];
    return [host.name, host.ip, env.get('FLANNEL_SUBNET') ?? '-', env.get('FLANNEL_MTU') ?? '-', dev.name, dev.mac, daemonHealth(record), ...(await daemonView(host, record, healthzPort))];
  }));
  return markdownTable(['host', 'public IP', 'subnet', 'MTU', 'device', 'VTEP MAC', 'flanneld', 'health', 'peer probes', 'repairs'], rows);
}

export function leasesTable(leases: readonly LeaseRow[]): string {
  const rows = leases.map((lease) => {
    let attrs: { PublicIP?: string; BackendType?: string; BackendData?: { VtepMAC?: string } | null } = {};
    try {
      attrs = JSON.parse(lease.value) as typeof attrs;
    } catch {
      // shown as '-'
    }
    const subnet = lease.key.slice(lease.key.lastIndexOf('/') + 1).replace('-', '/');
    const ttl = lease.ttl === undefined ? '-' : formatSeconds(lease.ttl);
    return [subnet, attrs.PublicIP ?? '-', attrs.BackendType ?? '-', attrs.BackendData?.VtepMAC ?? '-', ttl];
  });
  return markdownTable(['lease (etcd)', 'public IP', 'backend', 'VtepMAC', 'expires in'], rows);
}

export function podsTable(pods: readonly PodRecord[]): string {
  return markdownTable(['pod', 'host', 'address', 'namespace'], pods.map((p) => [p.name, p.host, p.ip, p.netns]));
}

const POD_MATRIX_LIMIT = 12;

export function matrixTable(pods: readonly PodRecord[], result: MatrixResult, sources: readonly PodRecord[] = pods): string {
  const verdict = (from: PodRecord, to: PodRecord): boolean | undefined => result.reachable.get(`${from.name}>${to.name}`);
  if (pods.length <= POD_MATRIX_LIMIT) {
    const rows = sources.map((from) => [from.name, ...pods.map((to) => {
      const ok = verdict(from, to);
      return ok === undefined ? '—' : ok ? 'ok' : 'FAIL';
    })]);
    return markdownTable(['from \\ to', ...pods.map((p) => `${p.name} ${p.ip}`)], rows);
  }
  const hosts = [...new Set(pods.map((p) => p.host))];
  const rows = [...new Set(sources.map((p) => p.host))].map((from) => [from, ...hosts.map((to) => {
    const pairs = sources.filter((a) => a.host === from).flatMap((a) => pods.filter((b) => b.host === to).map((b) => verdict(a, b)));
    const tried = pairs.filter((v) => v !== undefined);
    const ok = tried.filter(Boolean).length;
    return tried.length === 0 ? '—' : ok === tried.length ? `ok ${ok}/${tried.length}` : `FAIL ${ok}/${tried.length}`;
  })]);
  return markdownTable(['pods on \\ pods on', ...hosts], rows);
}
