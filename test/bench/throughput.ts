#!/usr/bin/env node
/**
 * Single-stream TCP throughput pod to pod over flanneld's vxlan overlay between two hosts, against host to host
 * over the same underlay (the floor: the same veths and bridge without encapsulation). iperf3, about 5 s per
 * measurement, alternating the two paths for three rounds in one run.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster } from '../helpers/cluster.js';
import { sh, type Netns } from '../helpers/netns.js';
import { spawnTracked, waitFor } from '../helpers/processes.js';
import { addPod, ping } from '../helpers/topology.js';
import { benchMain, median, ratio, table } from './bench-kit.js';

const ROUNDS = 3;
const SECONDS = 5;
const PORT = 5201;

interface Iperf {
  readonly gbps: number;
  readonly retransmits: number;
}

/** One iperf3 run from `client` to a one-off server at `serverIp` in `server`; everything bounded by timeouts. */
async function iperf(server: Netns, serverIp: string, client: Netns): Promise<Iperf> {
  const srv = spawnTracked('ip', ['netns', 'exec', server.name, 'iperf3', '-s', '-1', '-B', serverIp, '-p', String(PORT), '--forceflush'], {}, server.name);
  try {
    await waitFor('iperf3 server', () => {
      if (srv.child.exitCode !== null) throw new Error(`iperf3 server exited: ${srv.output()}`);
      return srv.output().includes('Server listening') ? true : undefined;
    }, 5000, 20);
    const text = await sh('ip', ['netns', 'exec', client.name, 'timeout', String(SECONDS + 20), 'iperf3', '-c', serverIp, '-p', String(PORT),
      '-t', String(SECONDS), '-J', '--connect-timeout', '3000']);
    const report = JSON.parse(text) as { end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } }; error?: string };
    const bps = report.end?.sum_received?.bits_per_second;
    if (typeof bps !== 'number') throw new Error(`iperf3 gave no result: ${report.error ?? text.slice(0, 500)}`);
    return { gbps: bps / 1e9, retransmits: report.end?.sum_sent?.retransmits ?? 0 };
  } finally {
    await srv.stop('SIGTERM', 2000);
  }
}

benchMain({
  tag: 'tp',
  title: 'TCP throughput over vxlan (iperf3, one stream)',
  deadlineMs: 170_000,
  body: async (ctx) => {
    const cluster = await startCluster(ctx.run, { hosts: 2, config: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, pods: false });
    ctx.defer(() => cluster.stop());
    const [h1, h2] = [cluster.topology.host('h1'), cluster.topology.host('h2')];
    const mtu = Number(/^FLANNEL_MTU=(\d+)$/m.exec(readFileSync(join(cluster.dir, 'h1.env'), 'utf8'))?.[1]);
    if (!Number.isInteger(mtu)) throw new Error('h1 subnet.env has no FLANNEL_MTU');
    // Pods get the overlay MTU, as the CNI plugin would give them.
    const p1 = await addPod(h1, 'p1', cluster.subnetOf('h1'), 1, { mtu });
    const p2 = await addPod(h2, 'p1', cluster.subnetOf('h2'), 1, { mtu });
    await waitFor('pod-to-pod ping', async () => ((await ping(p1.ns, p2.ip, { count: 1 })).ok ? true : undefined), 10_000, 200);

    const hostRuns: Iperf[] = [];
    const podRuns: Iperf[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      hostRuns.push(await iperf(h2.ns, h2.ip, h1.ns));
      podRuns.push(await iperf(p2.ns, p2.ip, p1.ns));
      ctx.note(`round ${round + 1}: host ${hostRuns.at(-1)?.gbps.toFixed(2)} Gbit/s, pod ${podRuns.at(-1)?.gbps.toFixed(2)} Gbit/s`);
    }
    const hostMed = median(hostRuns.map((r) => r.gbps));
    const podMed = median(podRuns.map((r) => r.gbps));
    const gbit = (v: number): string => `${v.toFixed(2)} Gbit/s`;
    const rows = (label: string, runs: readonly Iperf[], med: number): string[] => [
      label, ...runs.map((r) => gbit(r.gbps)), gbit(med), ratio(med, hostMed), runs.map((r) => String(r.retransmits)).join(' / '),
    ];
    const main = table(['path', ...hostRuns.map((_, i) => `round ${i + 1}`), 'median', '× floor', 'retransmits'], [
      rows(`floor: host to host over the underlay (${h1.ip} → ${h2.ip}, MTU 1500)`, hostRuns, hostMed),
      rows(`pod to pod over vxlan (${p1.ip} → ${p2.ip}, MTU ${mtu})`, podRuns, podMed),
    ]);
    const notes = [
      `iperf3 -t ${SECONDS}, one TCP stream, receiver-side rate; each host is a namespace on a veth into the hub's bridge; the two paths alternate.`,
    ];
    return `${main}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
