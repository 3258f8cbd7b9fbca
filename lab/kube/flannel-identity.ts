/**
 * flanneld's identity on the real control plane: the manifest's own Namespace, ServiceAccount, ClusterRole and
 * ClusterRoleBinding (taken from manifests/kube-flannel.yml as shipped), and a kubeconfig holding a token of that
 * service account (TokenRequest, as a projected pod token is made). flanneld then has exactly the manifest's
 * permissions: the real authorizer proves they are enough, and refuses anything beyond them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../lab-state.js';
import type { Kubectl } from './kubectl.js';
import { writeKubeconfig } from './kube-pki.js';

export const FLANNEL_NAMESPACE = 'kube-flannel';
export const FLANNEL_SERVICE_ACCOUNT = 'flannel';
export const FLANNEL_USER = `system:serviceaccount:${FLANNEL_NAMESPACE}:${FLANNEL_SERVICE_ACCOUNT}`;
const MANIFEST = join(REPO_ROOT, 'manifests/kube-flannel.yml');
const RBAC_KINDS = ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding'];

/** The manifest's documents of these kinds, as YAML text (documents are split on `---` lines, kinds read by line). */
export function manifestDocuments(kinds: readonly string[], manifest = readFileSync(MANIFEST, 'utf8')): string {
  const docs = manifest.split(/^---\s*$/m).filter((doc) => kinds.includes(/^kind:\s*(\S+)/m.exec(doc)?.[1] ?? ''));
  return docs.map((d) => `---\n${d.trim()}\n`).join('');
}

/**
 * Applies the manifest's RBAC objects and writes `path`: a kubeconfig for `server` with a token of the manifest's
 * service account, valid for a year (the apiserver caps it at its own maximum).
 */
export async function writeFlannelKubeconfig(kubectl: Kubectl, path: string, server: string, caFile: string): Promise<void> {
  await kubectl.run(['apply', '-f', '-'], manifestDocuments(RBAC_KINDS));
  const token = (await kubectl.run(['create', 'token', FLANNEL_SERVICE_ACCOUNT, '-n', FLANNEL_NAMESPACE, '--duration=8760h'])).trim();
  if (!token) throw new Error(`kubectl create token ${FLANNEL_SERVICE_ACCOUNT} returned no token`);
  writeKubeconfig(path, server, caFile, FLANNEL_SERVICE_ACCOUNT, token);
}
