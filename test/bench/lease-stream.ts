/**
 * `etcdctl watch --prefix` inside a host namespace as a line stream stamped on arrival: the floor for "a client on
 * the host learns of a lease change", measured on the same puts flanneld reacts to.
 */
import { createInterface } from 'node:readline';
import type { Netns } from '../helpers/netns.js';
import { spawnTracked, type TrackedProcess } from '../helpers/processes.js';
import { now } from './bench-kit.js';
import type { EtcdWriter } from './loaded-host.js';
import { ETCD_PREFIX } from './peer-leases.js';

export interface LeaseStream {
  readonly process: TrackedProcess;
  /** Arrival time of the first line from now on equal to `key`; rejects after `timeoutMs`. */
  waitKey(key: string, timeoutMs: number): Promise<number>;
  stop(): Promise<void>;
}

/** Watches everything under the network prefix; a probe key outside subnets/ (which flanneld ignores) shows readiness. */
export async function startLeaseStream(ns: Netns, endpoint: string, writer: EtcdWriter): Promise<LeaseStream> {
  const proc = spawnTracked('ip', ['netns', 'exec', ns.name, 'etcdctl', `--endpoints=${endpoint}`, 'watch', '--prefix', `${ETCD_PREFIX}/`], {}, ns.name);
  const waiters = new Map<string, (at: number) => void>();
  createInterface({ input: proc.child.stdout! }).on('line', (text) => {
    const at = now();
    const waiter = waiters.get(text);
    if (waiter) {
      waiters.delete(text);
      waiter(at);
    }
  });
  const waitKey = (key: string, timeoutMs: number): Promise<number> =>
    new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(key);
        reject(new Error(`etcdctl watch did not show ${key} within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.set(key, (at) => {
        clearTimeout(timer);
        resolve(at);
      });
    });
  const stream: LeaseStream = { process: proc, waitKey, stop: async () => void (await proc.stop('SIGTERM', 2000)) };
  const probe = `${ETCD_PREFIX}/bench-probe`;
  const deadline = now() + 10_000;
  for (;;) {
    const seen = waitKey(probe, 300).then(() => true, () => false);
    await writer.putOne(probe, String(Date.now())).acked;
    if (await seen) return stream;
    if (proc.child.exitCode !== null || now() > deadline) {
      await stream.stop();
      throw new Error(`etcdctl watch in ${ns.name} did not start: ${proc.output().slice(-1000)}`);
    }
  }
}
