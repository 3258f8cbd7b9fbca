/**
 * flannel-ts as users deploy it: `kubectl apply -f manifests/kube-flannel.yml`. The lab applies the file as shipped
 * (its image reference is the one `npm run image` imports); only when the lab runs another network config (another
 * backend, IPv6) is the ConfigMap's net-conf.json replaced, the one key users edit.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { parseNetworkConfig } from '../../flanneld/config/network-config.js';
import type { Kubectl } from '../kube/kubectl.js';
import { REPO_ROOT } from '../lab-state.js';

export const FLANNEL_MANIFEST = join(REPO_ROOT, 'manifests/kube-flannel.yml');
export const FLANNEL_NAMESPACE = 'kube-flannel';
export const FLANNEL_DAEMONSET = 'kube-flannel-ds';

/** The ConfigMap's `net-conf.json: |` block: the key line and its lines indented deeper. */
const NET_CONF_BLOCK = /^( {2}net-conf\.json: \|\n)((?: {4}.*\n)+)/m;

/** The net-conf.json the manifest ships (what a lab with the defaults runs). */
export function shippedNetConf(manifest = readFileSync(FLANNEL_MANIFEST, 'utf8')): string {
  const block = NET_CONF_BLOCK.exec(manifest);
  if (!block?.[2]) throw new Error(`${FLANNEL_MANIFEST} has no ConfigMap key net-conf.json`);
  return block[2].split('\n').map((l) => l.slice(4)).join('\n');
}

/**
 * The manifest with the ConfigMap's net-conf.json set to `netConf`; byte for byte the shipped file when the two
 * configure the same network (compared as flanneld reads them, defaults applied, so key order or a default spelled
 * out makes no difference).
 */
export function flannelManifest(netConf: string, manifest = readFileSync(FLANNEL_MANIFEST, 'utf8')): string {
  const same = isDeepStrictEqual(parseNetworkConfig(shippedNetConf(manifest)).config, parseNetworkConfig(netConf).config);
  if (same) return manifest;
  const indented = JSON.stringify(JSON.parse(netConf), null, 2).split('\n').map((l) => `    ${l}\n`).join('');
  return manifest.replace(NET_CONF_BLOCK, (_, key: string) => `${key}${indented}`);
}

/** Until every kube-flannel pod of the DaemonSet is updated and Ready (kubectl's own rollout wait). */
export async function waitForFlannelRollout(kubectl: Kubectl, timeoutSeconds = 180): Promise<void> {
  await kubectl.run(['-n', FLANNEL_NAMESPACE, 'rollout', 'status', `daemonset/${FLANNEL_DAEMONSET}`, `--timeout=${timeoutSeconds}s`], undefined,
    (timeoutSeconds + 15) * 1000);
}
