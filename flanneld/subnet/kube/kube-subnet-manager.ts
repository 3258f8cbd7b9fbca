/**
 * Leases from the Kubernetes API (`--kube-subnet-mgr`): this node's subnets are the podCIDR(s) node IPAM gave its
 * Node object, its lease attrs are published as annotations on that Node, and peers are every other annotated Node.
 * Nothing expires: renewal only re-publishes annotations that someone removed or changed.
 */
import type { Logger } from 'pino';
import { parseNetworkConfig } from '../../config/network-config.js';
import type { NetworkConfig } from '../../config/network-config-types.js';
import { parseIPv4, parseIPv6, type IpAddress } from '../../ip/address.js';
import type { Lease, LeaseEvent } from '../../lease/lease.js';
import { LeaseTable } from '../../lease/lease-table.js';
import { formatSubnetKey } from '../../lease/subnet-key.js';
import { AsyncQueue } from '../../runtime/async-queue.js';
import { Backoff } from '../../runtime/backoff.js';
import type { Clock } from '../../runtime/clock.js';
import { FlannelError, errorMessage } from '../../runtime/errors.js';
import type { Random } from '../../runtime/random.js';
import type { LeaseRequest, StoredPublicIPs, SubnetManager } from '../subnet-manager.js';
import { LOGGED_KEY_CHARS, LOGGED_REASON_CHARS, clip } from '../store-limits.js';
import type { AnnotationNames } from './annotations.js';
import type { KubeNode, NodeApi } from './node-api.js';
import { changedAnnotations, ownSubnets, peerLease, publishedAnnotations, storedBackendData } from './node-lease.js';
import { resolveNodeName } from './node-name.js';
import { watchNodes } from './node-watch.js';

export interface KubeSubnetManagerDeps {
  readonly api: NodeApi;
  readonly nodeName: string;
  readonly annotations: AnnotationNames;
  /** --net-config-path, read once as upstream does. */
  readonly netConfPath: string;
  readonly readFile: (path: string) => Promise<string>;
  /** --set-node-network-unavailable */
  readonly setNodeNetworkUnavailable: boolean;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly onWatchState?: (up: boolean) => void;
}

/** How often a node still waiting for its podCIDR is looked at again: one GET of one object. */
const POD_CIDR_POLL_MS = 1000;
/** Retries of calls to an API server that cannot be reached yet or refused a write: 1 s doubling to 30 s. */
const API_RETRY = { initialMs: 1000, maxMs: 30_000, jitter: 0.1 };

/**
 * The Node this daemon runs for (resolveNodeName), asked again on API_RETRY while the API server cannot be
 * reached: the daemon often starts before the network it sets up is complete. A bad environment or pod spec fails
 * at once.
 */
export async function waitForNodeName(
  env: Readonly<Record<string, string | undefined>>,
  api: Pick<NodeApi, 'getPodNodeName'>,
  deps: { readonly clock: Clock; readonly random: Random; readonly log: Logger },
  signal: AbortSignal,
): Promise<string> {
  const backoff = new Backoff(API_RETRY, deps.random);
  for (;;) {
    try {
      return await resolveNodeName(env, api);
    } catch (err) {
      if (!(err instanceof FlannelError) || err.code !== 'ERR_STORE_UNAVAILABLE') throw err;
      const retryInMs = backoff.next();
      deps.log.warn({ err: errorMessage(err), retryInMs }, 'cannot find the node name yet; retrying');
      await deps.clock.sleep(retryInMs, signal);
    }
  }
}

export class KubeSubnetManager implements SubnetManager {
  readonly name = 'kube' as const;
  private config: NetworkConfig | undefined;
  /** The lease whose annotations this node published; own-node changes are compared against it. */
  private published: Lease | undefined;
  private readonly ownWatchers = new Set<AsyncQueue<void>>();

  constructor(private readonly deps: KubeSubnetManagerDeps) {}

  async getNetworkConfig(): Promise<NetworkConfig> {
    if (this.config) return this.config;
    let text: string;
    try {
      text = await this.deps.readFile(this.deps.netConfPath);
    } catch (err) {
      throw new FlannelError('ERR_CONFIG_NOT_FOUND', `failed to read net conf ${this.deps.netConfPath}: ${errorMessage(err)}`, { cause: err });
    }
    const { config, warnings } = parseNetworkConfig(text);
    for (const warning of warnings) this.deps.log.warn({ file: this.deps.netConfPath }, warning);
    this.config = config;
    return config;
  }

  async storedPublicIPs(): Promise<StoredPublicIPs> {
    const node = await this.deps.api.getNode(this.deps.nodeName);
    const names = this.deps.annotations;
    const read = (key: string, parse: (t: string) => IpAddress | undefined): IpAddress | undefined => {
      const text = node?.annotations[key];
      if (!text) return undefined;
      const ip = parse(text);
      if (!ip) this.deps.log.warn({ node: this.deps.nodeName, annotation: key, value: clip(text, LOGGED_KEY_CHARS) }, 'ignoring an annotation that is not an address');
      return ip;
    };
    const publicIP = read(names.nodePublicIP, parseIPv4);
    const publicIPv6 = read(names.nodePublicIPv6, parseIPv6);
    return { ...(publicIP ? { publicIP } : {}), ...(publicIPv6 ? { publicIPv6 } : {}) };
  }

  /**
   * The backend data this node published last time, if any (the vxlan backend reuses its VTEP MACs from it). Only
   * attrs: the subnets always come from the node's podCIDRs, and each family's data counts on its own (see
   * storedBackendData), not only when the whole node still parses as a lease under the current config.
   */
  async findPreviousLease(): Promise<Lease | undefined> {
    const node = await this.deps.api.getNode(this.deps.nodeName);
    if (!node) return undefined;
    const stored = storedBackendData(node, this.deps.annotations);
    if (stored.backendData === undefined && stored.backendV6Data === undefined) return undefined;
    return { attrs: { backendType: node.annotations[this.deps.annotations.backendType] ?? '', ...stored }, reservation: false };
  }

  async acquireLease(request: LeaseRequest, signal: AbortSignal): Promise<Lease> {
    const config = await this.getNetworkConfig();
    const node = await this.waitForPodCidr(signal);
    const subnets = ownSubnets(node, config);
    const lease: Lease = {
      ...(subnets.v4 ? { subnet: subnets.v4 } : {}),
      ...(subnets.v6 ? { ipv6Subnet: subnets.v6 } : {}),
      attrs: request.attrs,
      reservation: false,
    };
    await this.publish(lease, node);
    this.published = lease;
    return lease;
  }

  /** Re-publishes the annotations when they were changed or removed behind our back. */
  async renewLease(lease: Lease): Promise<Lease> {
    const node = await this.deps.api.getNode(this.deps.nodeName);
    if (!node) throw new FlannelError('ERR_STORE_UNAVAILABLE', `node "${this.deps.nodeName}" no longer exists in the API`);
    await this.publish(lease, node);
    return lease;
  }

  /** Yields when the node watch sees this node's published annotations differ from ours. */
  watchOwnLease(_lease: Lease, signal: AbortSignal): AsyncIterable<void> {
    const queue = new AsyncQueue<void>();
    this.ownWatchers.add(queue);
    const stop = (): void => {
      this.ownWatchers.delete(queue);
      queue.end();
    };
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
    return queue;
  }

  async *watchLeases(signal: AbortSignal): AsyncIterable<readonly LeaseEvent[]> {
    const config = await this.getNetworkConfig();
    const table = new LeaseTable();
    const keyOfNode = new Map<string, string>();
    const warned = new Map<string, string>();
    const leaseOf = (node: KubeNode): Lease | undefined => {
      if (node.name === this.deps.nodeName) this.checkOwn(node);
      const found = peerLease(node, this.deps.annotations, config);
      if (found.kind === 'malformed') {
        if (warned.get(node.name) !== found.reason) {
          this.deps.log.warn({ node: clip(node.name, LOGGED_KEY_CHARS), reason: clip(found.reason, LOGGED_REASON_CHARS) }, 'skipping a node whose flannel annotations do not parse');
        }
        warned.set(node.name, found.reason);
        return undefined;
      }
      warned.delete(node.name);
      return found.kind === 'lease' ? found.lease : undefined;
    };
    let first = true;
    for await (const batch of watchNodes(this.deps, signal)) {
      if (batch.kind === 'snapshot') {
        keyOfNode.clear();
        const leases: Lease[] = [];
        for (const node of batch.nodes) {
          const lease = leaseOf(node);
          if (!lease) continue;
          leases.push(lease);
          keyOfNode.set(node.name, formatSubnetKey(lease));
        }
        for (const name of warned.keys()) if (!batch.nodes.some((n) => n.name === name)) warned.delete(name);
        const events = table.replaceAll(leases);
        if (first || events.length > 0) yield events;
        first = false;
        continue;
      }
      const { node } = batch;
      const lease = batch.type === 'delete' ? undefined : leaseOf(node);
      if (batch.type === 'delete') warned.delete(node.name);
      const oldKey = keyOfNode.get(node.name);
      const newKey = lease && formatSubnetKey(lease);
      const events: LeaseEvent[] = [];
      if (oldKey !== undefined && oldKey !== newKey) {
        keyOfNode.delete(node.name);
        const removed = table.remove(oldKey);
        if (removed) events.push(removed);
      }
      if (lease && newKey !== undefined) {
        keyOfNode.set(node.name, newKey);
        const added = table.put(lease);
        if (added) events.push(added);
      }
      if (events.length > 0) yield events;
    }
  }

  /** Sets the NetworkUnavailable condition to False once, after the datapath is up (upstream's CompleteLease). */
  async completeLease(_lease: Lease, signal: AbortSignal): Promise<void> {
    if (!this.deps.setNodeNetworkUnavailable) return;
    const backoff = new Backoff(API_RETRY, this.deps.random);
    for (;;) {
      const now = new Date(this.deps.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
      try {
        await this.deps.api.patchNodeStatus(this.deps.nodeName, {
          status: {
            conditions: [{
              // verbatim upstream: flannel pkg/subnet/kube/kube.go, the condition's reason and message
              type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node',
              lastTransitionTime: now, lastHeartbeatTime: now,
            }],
          },
        });
        this.deps.log.info({ node: this.deps.nodeName }, 'set the NetworkUnavailable condition to False');
        return;
      } catch (err) {
        if (signal.aborted) return;
        const retryInMs = backoff.next();
        this.deps.log.warn({ err: errorMessage(err), retryInMs }, 'cannot set the NetworkUnavailable condition; retrying');
        await this.deps.clock.sleep(retryInMs, signal).catch(() => undefined);
        if (signal.aborted) return;
      }
    }
  }

  private async waitForPodCidr(signal: AbortSignal): Promise<KubeNode> {
    let said = '';
    for (;;) {
      const node = await this.deps.api.getNode(this.deps.nodeName);
      if (node && node.podCIDRs.length > 0) return node;
      const reason = node
        ? `node "${this.deps.nodeName}" has no spec.podCIDR yet; waiting for node IPAM (kube-controller-manager --allocate-node-cidrs and --cluster-cidr)`
        : `node "${this.deps.nodeName}" does not exist in the API yet; waiting for it`;
      if (reason !== said) this.deps.log.warn({ node: this.deps.nodeName }, reason);
      said = reason;
      await this.deps.clock.sleep(POD_CIDR_POLL_MS, signal);
    }
  }

  private async publish(lease: Lease, node: KubeNode): Promise<void> {
    const wanted = publishedAnnotations(lease, this.deps.annotations, node.annotations);
    const changed = changedAnnotations(wanted, node.annotations);
    if (Object.keys(changed).length === 0) return;
    await this.deps.api.patchNodeStatus(this.deps.nodeName, { metadata: { annotations: changed } });
    this.deps.log.info({ node: this.deps.nodeName, annotations: changed }, 'published lease annotations');
  }

  private checkOwn(node: KubeNode): void {
    if (!this.published) return;
    const wanted = publishedAnnotations(this.published, this.deps.annotations, node.annotations);
    const differing = Object.keys(changedAnnotations(wanted, node.annotations));
    if (differing.length === 0) return;
    const found = Object.fromEntries(differing.map((k) => [k, node.annotations[k] === undefined ? null : clip(node.annotations[k], LOGGED_KEY_CHARS)]));
    this.deps.log.warn({ node: this.deps.nodeName, found }, "this node's flannel annotations were changed by someone else");
    for (const queue of this.ownWatchers) queue.push();
  }
}
