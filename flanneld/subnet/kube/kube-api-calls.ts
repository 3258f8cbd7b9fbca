/**
 * Every Kubernetes API call flanneld makes, as RBAC sees them. The kube client only issues calls listed here, and
 * the manifest's ClusterRole grants exactly these (a test checks both), so least privilege cannot drift from code.
 */

export interface KubeApiCall {
  /** Core API group (""), as RBAC writes it. */
  readonly apiGroup: '';
  readonly resource: 'nodes' | 'nodes/status' | 'pods';
  readonly verb: 'get' | 'list' | 'watch' | 'patch';
  /** Why the daemon needs it. */
  readonly why: string;
}

export const KUBE_API_CALLS: readonly KubeApiCall[] = Object.freeze([
  { apiGroup: '', resource: 'nodes', verb: 'get', why: "this node's podCIDR(s) and annotations" },
  { apiGroup: '', resource: 'nodes', verb: 'list', why: 'every peer at start and after a 410 Gone' },
  { apiGroup: '', resource: 'nodes', verb: 'watch', why: 'peers joining, changing and leaving' },
  { apiGroup: '', resource: 'nodes/status', verb: 'patch', why: 'publish annotations and set NetworkUnavailable=False (as upstream, on the status subresource)' },
  { apiGroup: '', resource: 'pods', verb: 'get', why: 'find the node name from POD_NAME/POD_NAMESPACE when NODE_NAME is unset' },
] as const);
