/**
 * The lab's embedded etcd: Debian's `etcd` in the hub namespace, data under the lab's state dir, and `etcdctl` (run
 * in the hub namespace too) to write the network config and read the leases back the way an operator would.
 */
import { join } from 'node:path';
import { Netns } from './netns.js';
import { HUB_IP, HUB_IP6 } from './underlay-addresses.js';
import type { LabStack } from './lab-args.js';
import { labNetns } from './lab-state.js';

export const LAB_ETCD_PREFIX = '/coreos.com/network';

/** etcd on the hub's underlay address: IPv4 unless the hosts have none. */
const etcdUrl = (stack: LabStack, port: number): string => `http://${stack === 'v6' ? `[${HUB_IP6}]` : HUB_IP}:${port}`;
const labEtcdEndpoint = (stack: LabStack): string => etcdUrl(stack, 2379);

/** Where a lab's etcd runs and serves clients. */
export interface LabEtcd {
  readonly hub: Netns;
  readonly endpoint: string;
}

export const labEtcd = (id: string, stack: LabStack): LabEtcd => ({ hub: new Netns(labNetns(id, 'hub')), endpoint: labEtcdEndpoint(stack) });

export function etcdArgv(stateDir: string, stack: LabStack): string[] {
  const client = labEtcdEndpoint(stack);
  const peer = etcdUrl(stack, 2380);
  return ['/usr/bin/etcd', '--name', 'lab', '--data-dir', join(stateDir, 'etcd'),
    '--listen-client-urls', client, '--advertise-client-urls', client,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `lab=${peer}`];
}

const etcdctl = (etcd: LabEtcd, ...args: string[]): Promise<string> =>
  etcd.hub.exec('etcdctl', [`--endpoints=${etcd.endpoint}`, '--command-timeout=3s', ...args]);

export async function putNetworkConfig(etcd: LabEtcd, text: string): Promise<void> {
  await etcdctl(etcd, 'put', `${LAB_ETCD_PREFIX}/config`, text);
}

export async function etcdHealthy(etcd: LabEtcd): Promise<boolean> {
  return etcdctl(etcd, 'endpoint', 'health').then(() => true, () => false);
}

export interface LeaseRow {
  readonly key: string;
  readonly value: string;
  /** Seconds until etcd expires the lease, when the key has one. */
  readonly ttl?: number;
}

export async function readLeases(etcd: LabEtcd): Promise<LeaseRow[]> {
  const out = await etcdctl(etcd, 'get', '--prefix', `${LAB_ETCD_PREFIX}/subnets/`, '-w', 'json');
  // Lease IDs are int64 and lose precision in JSON.parse, so they are taken from the text by key order instead.
  const doc = JSON.parse(out) as { kvs?: { key: string; value: string }[] };
  const leaseIds = [...out.matchAll(/\{"key":"[^"]*"[^{}]*\}/g)].map((m) => /"lease":(\d+)/.exec(m[0])?.[1]);
  const rows: LeaseRow[] = [];
  for (const [i, kv] of (doc.kvs ?? []).entries()) {
    const row = { key: Buffer.from(kv.key, 'base64').toString(), value: Buffer.from(kv.value, 'base64').toString() };
    const id = leaseIds[i];
    const ttl = id === undefined ? undefined : await leaseTtl(etcd, BigInt(id).toString(16));
    rows.push(ttl === undefined ? row : { ...row, ttl });
  }
  return rows;
}

async function leaseTtl(etcd: LabEtcd, hexId: string): Promise<number | undefined> {
  const out = await etcdctl(etcd, 'lease', 'timetolive', hexId).catch(() => '');
  const m = /remaining\((-?\d+)s\)/.exec(out);
  return m ? Number(m[1]) : undefined;
}
