/**
 * Pods through the real CNI path, as a container runtime makes them: each plugin of manifests/10-flannel.conflist
 * (our `flannel`, which delegates to Debian's bridge + host-local, then portmap) runs inside the host's namespace
 * with the CNI_* environment and its entry on stdin, chaining prevResult. Only file locations point into the lab's
 * state dir, so labs never share IPAM or plugin state.
 */
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from './netns.js';
import { createNetns } from './lab-underlay.js';
import { labDir, labNetns, REPO_ROOT, type HostRecord, type PodRecord } from './lab-state.js';

const REFERENCE_PLUGINS = ['bridge', 'host-local', 'portmap', 'loopback'];

interface Conflist {
  readonly name: string;
  readonly cniVersion: string;
  readonly plugins: Record<string, unknown>[];
}

/** CNI_PATH for the lab: our plugin and Debian's, side by side as on a node's /opt/cni/bin. */
function cniBinDir(id: string): string {
  const bin = join(labDir(id), 'cni-bin');
  if (!existsSync(bin)) {
    mkdirSync(bin, { recursive: true });
    symlinkSync(join(REPO_ROOT, 'dist/cni/flannel'), join(bin, 'flannel'));
    for (const p of REFERENCE_PLUGINS) symlinkSync(`/usr/lib/cni/${p}`, join(bin, p));
  }
  return bin;
}

export async function addLabPod(id: string, host: HostRecord, index: number): Promise<PodRecord> {
  const conflist = JSON.parse(readFileSync(join(REPO_ROOT, 'manifests/10-flannel.conflist'), 'utf8')) as Conflist;
  const bin = cniBinDir(id);
  const name = `${host.name}-p${index}`;
  const pod = await createNetns(labNetns(id, name));
  let prevResult: unknown;
  for (const plugin of conflist.plugins) {
    const conf: Record<string, unknown> = { cniVersion: conflist.cniVersion, name: conflist.name, ...plugin };
    if (plugin['type'] === 'flannel') {
      Object.assign(conf, {
        subnetFile: join(host.dir, 'subnet.env'),
        dataDir: join(host.dir, 'cni-data'),
        ipam: { dataDir: join(host.dir, 'ipam') },
      });
    }
    if (plugin['capabilities']) conf['runtimeConfig'] = { portMappings: [] };
    if (prevResult) conf['prevResult'] = prevResult;
    const env = ['CNI_COMMAND=ADD', `CNI_CONTAINERID=${pod.name}`, `CNI_NETNS=/var/run/netns/${pod.name}`, 'CNI_IFNAME=eth0', `CNI_PATH=${bin}`];
    const plugPath = join(bin, String(plugin['type']));
    const out = await sh('ip', ['netns', 'exec', host.netns, 'env', ...env, plugPath], JSON.stringify(conf)).catch((err: Error) => {
      // A CNI error is a JSON object on stdout; that, not the exit status, says what went wrong.
      const stdout = (err.cause as { stdout?: string } | undefined)?.stdout?.trim();
      throw new Error(`CNI ADD of ${name} on ${host.name}: plugin ${String(plugin['type'])} failed: ${stdout || err.message}`);
    });
    prevResult = JSON.parse(out);
  }
  const ips = ((prevResult as { ips?: { address?: string }[] } | undefined)?.ips ?? []).map((i) => i.address?.split('/')[0] ?? '');
  const ip = ips[0];
  if (!ip) throw new Error(`CNI ADD for ${name} returned no address: ${JSON.stringify(prevResult)}`);
  const ip6 = ips.find((a) => a.includes(':'));
  return { name, host: host.name, netns: pod.name, ip, ...(ip6 ? { ip6 } : {}) };
}

/** The next free pod index on a host, so add-pod never reuses a name. */
export function nextPodIndex(pods: readonly PodRecord[], host: string): number {
  const used = pods.filter((p) => p.host === host).map((p) => Number(p.name.slice(host.length + 2)));
  return used.length === 0 ? 1 : Math.max(...used) + 1;
}
