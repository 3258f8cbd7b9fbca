/**
 * The lab's embedded etcd: Debian's `etcd` in the hub namespace, data under the lab's state dir, and `etcdctl` (run
 * in the hub namespace too) to write the network config and read the leases back the way an operator would.
 */
import { join } from 'node:path';
import type { Netns } from '../helpers/netns.js';

export const LAB_HUB_IP = '192.0.2.254';
export const LAB_ETCD_ENDPOINT = `http://${LAB_HUB_IP}:2379`;
export const LAB_ETCD_PREFIX = '/coreos.com/network';

export function etcdArgv(stateDir: string): string[] {
  const peer = `http://${LAB_HUB_IP}:2380`;
  return ['/usr/bin/etcd', '--name', 'lab', '--data-dir', join(stateDir, 'etcd'),
    '--listen-client-urls', LAB_ETCD_ENDPOINT, '--advertise-client-urls', LAB_ETCD_ENDPOINT,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `lab=${peer}`];
}

const etcdctl = (hub: Netns, ...args: string[]): Promise<string> =>
  hub.exec('etcdctl', [`--endpoints=${LAB_ETCD_ENDPOINT}`, '--command-timeout=3s', ...args]);

export async function putNetworkConfig(hub: Netns, text: string): Promise<void> {
  await etcdctl(hub, 'put', `${LAB_ETCD_PREFIX}/config`, text);
}

export async function etcdHealthy(hub: Netns): Promise<boolean> {
  return etcdctl(hub, 'endpoint', 'health').then(() => true, () => false);
}

export interface LeaseRow {
  readonly key: string;
  readonly value: string;
  /** Seconds until etcd expires the lease, when the key has one. */
  readonly ttl?: number;
}

export async function readLeases(hub: Netns): Promise<LeaseRow[]> {
  const out = await etcdctl(hub, 'get', '--prefix', `${LAB_ETCD_PREFIX}/subnets/`, '-w', 'json');
  // Lease IDs are int64 and lose precision in JSON.parse, so they are taken from the text by key order instead.
  const doc = JSON.parse(out) as { kvs?: { key: string; value: string }[] };
  const leaseIds = [...out.matchAll(/\{"key":"[^"]*"[^{}]*\}/g)].map((m) => /"lease":(\d+)/.exec(m[0])?.[1]);
  const rows: LeaseRow[] = [];
  for (const [i, kv] of (doc.kvs ?? []).entries()) {
    const row = { key: Buffer.from(kv.key, 'base64').toString(), value: Buffer.from(kv.value, 'base64').toString() };
    const id = leaseIds[i];
    const ttl = id === undefined ? undefined : await leaseTtl(hub, BigInt(id).toString(16));
    rows.push(ttl === undefined ? row : { ...row, ttl });
  }
  return rows;
}

async function leaseTtl(hub: Netns, hexId: string): Promise<number | undefined> {
  const out = await etcdctl(hub, 'lease', 'timetolive', hexId).catch(() => '');
  const m = /remaining\((-?\d+)s\)/.exec(out);
  return m ? Number(m[1]) : undefined;
}
