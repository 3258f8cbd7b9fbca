/**
 * Which Node this daemon runs for: NODE_NAME, or the spec.nodeName of its own pod found through POD_NAME and
 * POD_NAMESPACE (docs/compatibility.md#kubernetes-mode), with upstream's messages.
 */
import { FlannelError, errorMessage } from '../../runtime/errors.js';
import type { NodeApi } from './node-api.js';

export async function resolveNodeName(env: Readonly<Record<string, string | undefined>>, api: Pick<NodeApi, 'getPodNodeName'>): Promise<string> {
  const nodeName = env['NODE_NAME'];
  if (nodeName) return nodeName;
  const pod = env['POD_NAME'];
  const namespace = env['POD_NAMESPACE'];
  if (!pod || !namespace) {
    // verbatim upstream: flannel pkg/subnet/kube/kube.go, all but "when NODE_NAME is not"
    throw new FlannelError('ERR_CONFIG_INVALID', 'env variables POD_NAME and POD_NAMESPACE must be set when NODE_NAME is not');
  }
  let found: string | undefined;
  try {
    found = await api.getPodNodeName(namespace, pod);
  } catch (err) {
    // verbatim upstream: flannel pkg/subnet/kube/kube.go
    throw new FlannelError('ERR_STORE_UNAVAILABLE', `error retrieving pod spec for '${namespace}/${pod}': ${errorMessage(err)}`, { cause: err });
  }
  // verbatim upstream: flannel pkg/subnet/kube/kube.go, all but the pod name
  if (!found) throw new FlannelError('ERR_CONFIG_INVALID', `node name not present in pod spec '${namespace}/${pod}'`);
  return found;
}
