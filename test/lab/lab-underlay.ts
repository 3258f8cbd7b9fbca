/**
 * The lab's underlay: a hub namespace bridging 192.0.2.0/24 (a documentation range) on br0, and one namespace per
 * host with eth0 on that bridge. Everything lives in `ftl-<id>-` namespaces; the root namespace is never touched.
 */
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { Netns, sh } from '../helpers/netns.js';
import { LAB_HUB_IP } from './lab-etcd.js';
import { labDir, labNetns, type HostRecord } from './lab-state.js';

export async function createNetns(name: string): Promise<Netns> {
  await sh('ip', ['netns', 'add', name]);
  const ns = new Netns(name);
  await ns.ip('link', 'set', 'lo', 'up');
  return ns;
}

export async function createHub(id: string): Promise<Netns> {
  const hub = await createNetns(labNetns(id, 'hub'));
  await hub.ip('link', 'add', 'br0', 'type', 'bridge');
  await hub.ip('addr', 'add', `${LAB_HUB_IP}/24`, 'dev', 'br0');
  await hub.ip('link', 'set', 'br0', 'up');
  return hub;
}

export async function createHost(id: string, index: number): Promise<HostRecord> {
  const name = `h${index}`;
  const ip = `192.0.2.${index}`;
  const host = await createNetns(labNetns(id, name));
  await host.ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', name, 'netns', labNetns(id, 'hub'));
  await host.ip('addr', 'add', `${ip}/24`, 'dev', 'eth0');
  await host.ip('link', 'set', 'eth0', 'up');
  await host.ip('route', 'add', 'default', 'via', LAB_HUB_IP);
  await host.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  await new Netns(labNetns(id, 'hub')).ip('link', 'set', name, 'master', 'br0', 'up');
  const dir = join(labDir(id), name);
  mkdirSync(dir, { recursive: true });
  return { name, ip, netns: host.name, dir };
}
