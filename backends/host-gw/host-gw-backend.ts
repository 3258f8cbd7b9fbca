/**
 * host-gw: a plain route per peer subnet via the peer's public address on the external interface. Needs every
 * node on one layer-2 segment: a peer that is not directly reachable is reported by name (once) and skipped,
 * and the other peers keep working.
 */
import { sameIp, type Family } from '../../flanneld/ip/address.js';
import type { IpNet } from '../../flanneld/ip/cidr.js';
import { FlannelError } from '../../flanneld/runtime/errors.js';
import type { Backend, BackendDeps, Network } from '../backend.js';
import { baseLeaseAttrs } from '../backend.js';
import type { DatapathEntry } from '../datapath/datapath.js';
import type { PeerPlan } from '../peer-reconciler.js';
import { reconcilePeers, scopeOf } from '../peer-network.js';
import { checkHostGwReachable, planHostGwPeer } from './host-gw-peers.js';

export function createHostGwBackend(deps: BackendDeps): Backend {
  return {
    async registerNetwork(config, signal): Promise<Network> {
      const { extIface } = deps;
      // Upstream refuses NAT setups: peers would route to an address that is not ours.
      if ((extIface.publicIP && !sameIp(extIface.publicIP, extIface.ifaceAddr)) ||
          (extIface.publicIPv6 && !sameIp(extIface.publicIPv6, extIface.ifaceAddrV6))) {
        throw new FlannelError(
          'ERR_CONFIG_INVALID',
          // verbatim upstream: flannel pkg/backend/hostgw/hostgw.go
          "your PublicIP differs from interface IP, meaning that probably you're on a NAT, which is not supported by host-gw backend",
        );
      }
      const lease = await deps.acquireLease(baseLeaseAttrs(extIface, 'host-gw'), signal);
      const networks = new Map<Family, IpNet | undefined>([[4, config.enableIPv4 ? config.network : undefined], [6, config.enableIPv6 ? config.ipv6Network : undefined]]);
      let connected: readonly IpNet[] = await deps.host.connectedNetworks();
      const plan: PeerPlan = {
        scope: () => scopeOf(lease, networks, []),
        ownsLink: () => false,
        async ensureDevices() {
          connected = await deps.host.connectedNetworks();
        },
        entriesFor(peer) {
          const planned = planHostGwPeer(peer, {
            ...(config.enableIPv4 ? { v4: { linkIndex: extIface.index } } : {}),
            ...(config.enableIPv6 ? { v6: { linkIndex: extIface.index } } : {}),
          });
          const entries: DatapathEntry[] = [];
          const skipped = [...planned.skipped];
          for (const e of planned.entries) {
            const why = e.kind === 'route' && e.via ? checkHostGwReachable(e.via, connected) : undefined;
            if (why) skipped.push(why);
            else entries.push(e);
          }
          return { entries, skipped };
        },
      };
      return {
        lease,
        mtu: extIface.mtu,
        run: (runSignal) => reconcilePeers(deps, plan, lease, runSignal),
      };
    },
  };
}
