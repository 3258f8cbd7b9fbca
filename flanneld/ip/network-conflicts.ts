/**
 * A flannel Network must not take in the host's own network: pod routes inside it would shadow the underlay, and the
 * node would lose its way to etcd and to every peer. Checked once at start, against the interfaces flanneld did not
 * make (cni0 and flannel devices hold addresses inside the Network by design).
 */
import { formatIp } from './address.js';
import { containsIp, containsNet, formatCidr, type IpNet } from './cidr.js';
import type { HostInterface } from './external-interface.js';

/** Devices whose addresses lie inside the Network because flannel put them there. */
const OURS = /^(cni0|flannel[.\w-]*)$/;

/**
 * Why `network` conflicts with this host, or undefined. A connected route exactly equal to the Network is not one
 * (the udp backend's own device route for it); one wider than the Network is (an underlay of 10.0.0.0/8 under a
 * Network of 10.244.0.0/16).
 */
export function networkConflict(network: IpNet, interfaces: readonly HostInterface[], connected: readonly IpNet[]): string | undefined {
  for (const iface of interfaces) {
    if (OURS.test(iface.name)) continue;
    const address = iface.addrs.find((a) => containsIp(network, a));
    if (address) return `it holds ${formatIp(address)}, an address of this host on ${iface.name}`;
  }
  const wider = connected.find((c) => c.prefixLen < network.prefixLen && containsNet(c, network));
  if (wider) return `it lies inside ${formatCidr(wider)}, a network connected to this host`;
  return undefined;
}
