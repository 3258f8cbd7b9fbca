/**
 * The slice of the Kubernetes API the kube subnet manager uses, in its own terms: a port with one adapter over
 * @kubernetes/client-node (kube-node-api.ts), so the lease logic never sees client types or HTTP.
 * Every method maps to one entry of KUBE_API_CALLS.
 */

export interface KubeNode {
  readonly name: string;
  readonly resourceVersion: string;
  readonly annotations: Readonly<Record<string, string>>;
  /** spec.podCIDRs, or [spec.podCIDR] on clusters that only set that; empty until node IPAM assigns one. */
  readonly podCIDRs: readonly string[];
}

export type NodeWatchEvent =
  | { readonly type: 'added' | 'modified' | 'deleted'; readonly node: KubeNode }
  | { readonly type: 'bookmark'; readonly resourceVersion: string };

/** The watch cannot resume from that resourceVersion (410 Gone): the caller must list again. */
export class WatchGoneError extends Error {
  override readonly name = 'WatchGoneError';
}

export interface NodeApi {
  /** undefined when the node does not exist (404). */
  getNode(name: string): Promise<KubeNode | undefined>;
  /** Every Node, read in pages from one snapshot; `signal` cancels the request in flight. */
  listNodes(signal?: AbortSignal): Promise<{ readonly nodes: readonly KubeNode[]; readonly resourceVersion: string }>;
  /**
   * Changes after `resourceVersion`, with bookmarks. Ends when the server closes the stream (its timeout); rejects
   * WatchGoneError on 410 and any other error when the connection fails or drops.
   */
  watchNodes(resourceVersion: string, signal: AbortSignal): AsyncIterable<NodeWatchEvent>;
  /** A strategic merge patch on the nodes/<name>/status subresource (annotations and conditions, as upstream). */
  patchNodeStatus(name: string, patch: object): Promise<KubeNode>;
  /** spec.nodeName of a pod; undefined when the pod has none. */
  getPodNodeName(namespace: string, name: string): Promise<string | undefined>;
}
