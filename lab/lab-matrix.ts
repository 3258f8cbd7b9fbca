/**
 * Every pod pings every other pod, over one address family. One command per source pod (`ip netns exec`, or
 * `kubectl exec` for a kubelet lab's pods) runs all of its pings in parallel, so a matrix costs one process spawn
 * per pod rather than one per pair.
 */
import type { Family } from '../flanneld/ip/address.js';
import { Netns } from './netns.js';
import { addressOf, type PodRecord } from './lab-state.js';

export interface MatrixResult {
  readonly family: Family;
  /** `${from}>${to}` → reachable. */
  readonly reachable: ReadonlyMap<string, boolean>;
  readonly failures: number;
}

const PING_SCRIPT = 'for ip in "$@"; do (ping -c 1 -W 2 -q "$ip" >/dev/null 2>&1 && echo "$ip ok" || echo "$ip fail") & done; wait';

/** Runs a command in a pod and returns its stdout. */
export type PodExec = (pod: PodRecord, argv: readonly string[]) => Promise<string>;

const netnsExec: PodExec = (pod, argv) => new Netns(pod.netns).exec(argv[0] as string, argv.slice(1));

async function pingAll(exec: PodExec, from: PodRecord, ips: readonly string[]): Promise<Map<string, boolean>> {
  const out = await exec(from, ['sh', '-c', PING_SCRIPT, 'sh', ...ips]).catch(() => '');
  const seen = new Map<string, boolean>();
  for (const line of out.split('\n')) {
    const [ip, verdict] = line.split(' ');
    if (ip) seen.set(ip, verdict === 'ok');
  }
  return seen;
}

export async function pingMatrix(family: Family, pods: readonly PodRecord[], sources: readonly PodRecord[] = pods, exec: PodExec = netnsExec): Promise<MatrixResult> {
  const reachable = new Map<string, boolean>();
  const concurrency = 8;
  // A pod without an address of this family has no pairs in its matrix: its cells stay empty.
  const queue = sources.filter((p) => addressOf(p, family) !== undefined);
  const worker = async (): Promise<void> => {
    for (let from = queue.shift(); from; from = queue.shift()) {
      const targets = pods.flatMap((p) => {
        const ip = addressOf(p, family);
        return p.name !== from.name && ip ? [{ name: p.name, ip }] : [];
      });
      const seen = await pingAll(exec, from, targets.map((t) => t.ip));
      for (const to of targets) reachable.set(`${from.name}>${to.name}`, seen.get(to.ip) ?? false);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { family, reachable, failures: [...reachable.values()].filter((ok) => !ok).length };
}
