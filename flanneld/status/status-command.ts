/**
 * `flanneld status [--healthz-ip=IP] [--healthz-port=N] [--json]`: asks a running daemon's health port for /status
 * and prints it as tables (or the JSON, for scripts). Exit 0 when the daemon is ready and no loop stalled, 1 when
 * not or when it cannot be reached, 2 for bad arguments.
 */
import type { StatusReport } from '../health/daemon-status.js';
import { markdownTable } from './markdown-table.js';

export interface StatusArgs {
  readonly host: string;
  readonly port: number;
  readonly json: boolean;
}

export const STATUS_USAGE = 'usage: flanneld status [--healthz-ip=IP] [--healthz-port=PORT] [--json]\n' +
  '  asks the running flanneld on its health port (default 127.0.0.1 and FLANNELD_HEALTHZ_PORT or 8081)\n';

export function parseStatusArgs(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): StatusArgs | string {
  let host = '127.0.0.1';
  let portText = env['FLANNELD_HEALTHZ_PORT'] || '8081';
  let json = false;
  for (const arg of argv) {
    const [flag, value] = arg.replace(/^--?/, '').split(/=(.*)/s);
    if (flag === 'json' && value === undefined) json = true;
    else if (flag === 'healthz-ip' && value) host = value === '0.0.0.0' ? '127.0.0.1' : value;
    else if (flag === 'healthz-port' && value) portText = value;
    else return `flanneld status: unknown argument ${arg}`;
  }
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) return `flanneld status: --healthz-port must be 1..65535, got "${portText}"`;
  return { host, port, json };
}


const publicIPs = (x: { publicIP?: string; publicIPv6?: string } | undefined): string => [x?.publicIP, x?.publicIPv6].filter(Boolean).join(', ') || '-';

export function renderStatus(report: StatusReport): string {
  const lease = report.lease;
  const lines: string[] = [];
  const health = report.ready && report.stalled.length === 0 ? 'ready' : [
    ...(report.ready ? [] : [`NOT READY: ${report.notReady.join('; ')}`]),
    ...report.stalled.map((s) => `STALLED: ${s}`),
  ].join('; ');
  const dp = report.datapath;
  const counts = (rec: Readonly<Record<string, number>>): string => ['route', 'neigh', 'fdb'].map((k) => `${k} ${rec[k] ?? 0}`).join(', ');
  lines.push(markdownTable(['', ''], [
    ['state', health],
    ['lease', lease ? [lease.subnet, lease.ipv6Subnet].filter(Boolean).join(', ') || '-' : '-'],
    ['lease expires', lease?.expiresAt ?? 'never (Kubernetes podCIDR)'],
    ['public IP', publicIPs(lease)],
    ['backend', report.backend ? `${report.backend.type}, MTU ${report.backend.mtu}` : '-'],
    ['datapath entries', counts(dp.entries)],
    ['datapath repairs', counts(dp.repairs)],
    ['last resync', dp.lastResyncAt ? `${dp.lastResyncAt}, drift ${dp.lastDrift ?? 0}` : '-'],
    ...(dp.problem ? [['datapath problem', dp.problem]] : []),
    ['traffic rules', `${report.trafficRules.manager ?? '-'}, repairs ${report.trafficRules.repairs}, last check ${report.trafficRules.lastCheckAt ?? '-'}`],
  ]));
  const probe = (p: StatusReport['peers'][number]['probe']): [string, string] =>
    !p ? ['not probed yet', '-'] : p.reachable ? ['reachable', p.rttMs === undefined ? '-' : `${p.rttMs.toFixed(2)} ms`] : ['UNREACHABLE', '-'];
  lines.push('', `${report.peers.length} peer(s)`);
  if (report.peers.length > 0) {
    lines.push(markdownTable(['peer subnet', 'public IP', 'VTEP MAC', 'probe', 'RTT'], report.peers.map((p) => [
      [p.subnet, p.ipv6Subnet].filter(Boolean).join(', '), publicIPs(p), p.vtepMAC ?? '-', ...probe(p.probe),
    ])));
  }
  // A status from an older daemon has no such list.
  const refused = report.refusedPeers ?? [];
  if (refused.length > 0) {
    lines.push('', `${refused.length} peer lease(s) refused (not programmed; this node stays ready)`);
    lines.push(markdownTable(['lease', 'reason', 'why'], refused.map((r) => [r.peer, r.reason, r.detail])));
  }
  const bgp = report.bgpSessions;
  if (bgp) {
    const up = bgp.filter((s) => s.state === 'established').length;
    lines.push('', `${bgp.length} BGP session(s), ${up} established (routers being away never makes this node unready)`);
    if (bgp.length > 0) {
      lines.push(markdownTable(['router', 'AS', 'state', 'up since', 'prefixes announced', 'last error'], bgp.map((s) => [
        s.peer, String(s.remoteAs), s.state, s.establishedAt ? `${s.establishedAt} (${s.uptimeSec ?? 0} s)` : '-', s.prefixes.join(', ') || '-', s.lastError ?? '-',
      ])));
    }
  }
  return `${lines.join('\n')}\n`;
}

export async function runStatusCommand(argv: readonly string[], env: Readonly<Record<string, string | undefined>>, out: (s: string) => void): Promise<number> {
  const args = parseStatusArgs(argv, env);
  if (typeof args === 'string') {
    out(`${args}\n${STATUS_USAGE}`);
    return 2;
  }
  const url = `http://${args.host.includes(':') ? `[${args.host}]` : args.host}:${args.port}/status`;
  let report: StatusReport;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    report = (await res.json()) as StatusReport;
  } catch (err) {
    out(`flanneld status: cannot reach flanneld at ${url}: ${err instanceof Error ? err.message : String(err)} (is it running with --healthz-port=${args.port}?)\n`);
    return 1;
  }
  out(args.json ? `${JSON.stringify(report, null, 2)}\n` : renderStatus(report));
  return report.ready && report.stalled.length === 0 ? 0 : 1;
}
