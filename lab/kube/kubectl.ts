/**
 * The built kubectl, run inside the hub namespace (the apiserver is reachable only from our namespaces, never from
 * the root one) with the admin kubeconfig: how the lab and the tests read and change the cluster, as an operator would.
 */
import type { V1Node } from '@kubernetes/client-node';
import type { Netns } from '../netns.js';

export class Kubectl {
  constructor(readonly binary: string, readonly hub: Netns, readonly kubeconfig: string) {}

  /** `timeoutMs`: for commands that wait themselves (rollout status, wait), longer than their own --timeout. */
  run(args: readonly string[], input?: string, timeoutMs?: number): Promise<string> {
    return this.hub.exec(this.binary, [`--kubeconfig=${this.kubeconfig}`, ...args], input, timeoutMs);
  }

  async json<T>(args: readonly string[]): Promise<T> {
    return JSON.parse(await this.run([...args, '-o', 'json'])) as T;
  }

  /** The Node, or undefined when there is none by that name. */
  async node(name: string): Promise<V1Node | undefined> {
    try {
      return await this.json<V1Node>(['get', 'node', name]);
    } catch (err) {
      if (/NotFound|not found/.test((err as Error).message)) return undefined;
      throw err;
    }
  }

  async nodes(): Promise<V1Node[]> {
    return (await this.json<{ items: V1Node[] }>(['get', 'nodes'])).items;
  }

  /**
   * Registers a Node as a kubelet would (POST with its hostname label and addresses); node IPAM then gives it its
   * podCIDR(s). A Node's status may be set on create, so its addresses arrive with it.
   */
  async registerNode(name: string, addresses: readonly string[]): Promise<void> {
    const node = {
      apiVersion: 'v1',
      kind: 'Node',
      // The annotation every kubelet sets when it registers (enableControllerAttachDetach, on by default). A Node
      // without any annotation never comes from a kubelet, and upstream flanneld v0.28.9 panics on one (it writes
      // into the nil map: "assignment to entry in nil map", pkg/subnet/kube/kube.go).
      metadata: {
        name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux' },
        annotations: { 'volumes.kubernetes.io/controller-managed-attach-detach': 'true' },
      },
      status: { addresses: [...addresses.map((address) => ({ type: 'InternalIP', address })), { type: 'Hostname', address: name }] },
    };
    await this.run(['create', '-f', '-'], JSON.stringify(node));
  }

  async deleteNode(name: string): Promise<void> {
    await this.run(['delete', 'node', name, '--wait=false']);
  }
}
