/**
 * The real flanneld binary, alloc backend, against a real etcd, both inside a namespace this test owns: it waits
 * for etcd and its config instead of crash-looping, writes upstream's subnet.env and lease JSON, exits cleanly
 * on SIGTERM and keeps its subnet across a restart.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdServer } from '../helpers/etcd-server.js';
import { startFlanneld } from '../helpers/flanneld-process.js';
import { linkPair, NetnsRun, removeStaleNamespaces, type Netns } from '../helpers/netns.js';
import { killStaleTrackedProcesses, waitFor, type TrackedProcess } from '../helpers/processes.js';

const run = new NetnsRun('fd');
let host: Netns;
let etcd: EtcdServer | undefined;
let dir: string;
const started: TrackedProcess[] = [];

const etcdctl = (...args: string[]) => host.exec('etcdctl', [`--endpoints=${etcd!.endpoint}`, ...args]);
const readEnv = () => {
  try {
    return readFileSync(join(dir, 'subnet.env'), 'utf8');
  } catch {
    return undefined;
  }
};
const flanneld = (...extra: string[]) => {
  const p = startFlanneld(host.name, [`--etcd-endpoints=${etcd?.endpoint ?? 'http://127.0.0.1:2379'}`, `--subnet-file=${join(dir, 'subnet.env')}`, ...extra]);
  started.push(p);
  return p;
};

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
  dir = mkdtempSync(join(tmpdir(), 'flannel-ts-fd-'));
  host = await run.create('h1');
  const gw = await run.create('gw');
  await linkPair(host, gw, '192.0.2.1', '192.0.2.254');
});

afterAll(async () => {
  for (const p of started) await p.stop('SIGKILL');
  await etcd?.stop();
  await run.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe('flanneld with the alloc backend on real etcd', () => {
  it('waits for etcd and its config, then writes subnet.env and an upstream lease', async () => {
    // etcd is not there yet: flanneld must wait, not exit.
    etcd = await startEtcd({ netns: host.name });
    await etcd.kill();
    const daemon = flanneld();
    await waitFor('flanneld to report etcd unreachable', () => (/cannot get network config yet/.test(daemon.output()) ? true : undefined), 20_000);
    expect(daemon.child.exitCode).toBeNull();

    await etcd.start();
    await waitFor('flanneld to report the missing config', () => (/Did you create your config using etcdv3 API/.test(daemon.output()) ? true : undefined), 20_000);
    await etcdctl('put', '/coreos.com/network/config', '{"Network":"10.244.0.0/16","Backend":{"Type":"alloc"}}');

    const env = await waitFor('subnet.env', readEnv, 30_000);
    const subnet = /^FLANNEL_SUBNET=10\.244\.(\d+)\.1\/24$/m.exec(env);
    expect(subnet).not.toBeNull();
    expect(env).toBe(`FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${subnet![1]}.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n`);

    const key = `/coreos.com/network/subnets/10.244.${subnet![1]}.0-24`;
    const raw = await etcdctl('get', key, '-w', 'json');
    const got = JSON.parse(raw) as { kvs: { value: string }[] };
    expect(Buffer.from(got.kvs[0]!.value, 'base64').toString()).toBe('{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"alloc"}');
    // Lease IDs are int64s, beyond JSON numbers' safe range: read the digits as text.
    const leaseId = BigInt(/"lease":(\d+)/.exec(raw)![1]!).toString(16);
    const ttl = JSON.parse(await etcdctl('lease', 'timetolive', leaseId, '-w', 'json')) as { 'granted-ttl': number };
    expect(ttl['granted-ttl']).toBe(86400);

    await daemon.stop('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect(daemon.output()).toMatch(/Exiting cleanly/);
  });

  it('keeps its subnet across a restart', async () => {
    const before = readEnv()!;
    rmSync(join(dir, 'subnet.env'));
    const daemon = flanneld('--ip-masq');
    const after = await waitFor('subnet.env after restart', readEnv, 30_000);
    expect(after.replace('FLANNEL_IPMASQ=true', 'FLANNEL_IPMASQ=false')).toBe(before);
    const keys = await etcdctl('get', '--prefix', '/coreos.com/network/subnets/', '--keys-only');
    expect(keys.trim().split('\n').filter((l) => l !== '')).toHaveLength(1);
    await daemon.stop('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });

  it('rejects a bad flag with exit code 2 and names it', async () => {
    const daemon = flanneld('--subnet-lease-renew-margin=0');
    expect(await daemon.exited).toBe(2);
    expect(daemon.output()).toMatch(/subnet-lease-renew-margin/);
  });
});
