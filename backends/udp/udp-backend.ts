/**
 * udp: userspace encapsulation for where VXLAN cannot go (no vxlan module, UDP 8472 blocked), wire-compatible with
 * upstream's udp backend (docs/compatibility.md#udp-backend). The kernel routes the whole flannel Network into the TUN
 * device flannel0; the proxy (udp-dataplane.ts) sends each packet to the peer whose subnet holds its destination, as
 * the payload of a UDP datagram to that peer's PublicIP and our Port, and writes what peers send into the TUN device.
 * The peer table follows the leases through the shared reconciler, which also keeps the device, its address and its
 * route in place. IPv4 only, as upstream.
 */
import { formatIp, type IpAddress } from '../../flanneld/ip/address.js';
import { ipNet, networkAddress, sameNet, type IpNet } from '../../flanneld/ip/cidr.js';
import type { Lease } from '../../flanneld/lease/lease.js';
import { ConfigError, FlannelError } from '../../flanneld/runtime/errors.js';
import type { Backend, BackendDeps, BackendFactory, Network } from '../backend.js';
import { baseLeaseAttrs } from '../backend.js';
import type { DatapathEntry } from '../datapath/datapath.js';
import { describeEntry } from '../datapath/entry-key.js';
import { leaseLabel } from '../peer-entries.js';
import type { PeerPlan } from '../peer-reconciler.js';
import { reconcilePeers } from '../peer-network.js';
import { parseUdpConfig, UDP_DEVICE, UDP_OVERHEAD } from './udp-config.js';
import { nativeUdpDataplane, type UdpDataplane, type UdpProxy } from './udp-dataplane.js';

/** The factory for the built-in table; `dataplane` is injectable for tests. */
export function udpBackendFactory(dataplane: UdpDataplane = nativeUdpDataplane()): BackendFactory {
  return (deps) => createUdpBackend(deps, dataplane);
}

interface Running {
  readonly proxy: UdpProxy;
  readonly index: number;
}

export function createUdpBackend(deps: BackendDeps, dataplane: UdpDataplane): Backend {
  return {
    async registerNetwork(config, signal): Promise<Network> {
      const cfg = parseUdpConfig(config.backend);
      const { extIface, datapath, log } = deps;
      if (!config.enableIPv4 || !config.network) throw new ConfigError('EnableIPv4', config.enableIPv4, 'the udp backend carries IPv4 only');
      if (config.enableIPv6) throw new ConfigError('EnableIPv6', config.enableIPv6, 'the udp backend carries IPv4 only; use vxlan or host-gw for IPv6');
      const localAddr = extIface.ifaceAddr;
      if (localAddr?.family !== 4) throw new FlannelError('ERR_NO_ADDRESS', `interface ${extIface.name} has no IPv4 address for the udp backend's socket`);
      const network: IpNet = config.network;
      const mtu = extIface.mtu - UDP_OVERHEAD;

      // Upstream's udp lease carries PublicIP only: no BackendType, no BackendData.
      const lease = await deps.acquireLease(baseLeaseAttrs(extIface, ''), signal);
      if (!lease.subnet) throw new FlannelError('ERR_CONFIG_INVALID', 'udp backend: the lease has no IPv4 subnet');
      const tunAddr = networkAddress(lease.subnet);
      const networkRoute = (index: number): DatapathEntry => ({ kind: 'route', dst: network, linkIndex: index });

      // The peer table as the leases want it, replayed into a proxy started after the device was re-created.
      const routes = new Map<string, { subnet: IpNet; peer: IpAddress }>();
      let running: Running | undefined;
      const stop = (): void => {
        running?.proxy.stop();
        running = undefined;
      };

      // A proxy on a newly opened flannel0. Until the proxy takes the descriptor it is ours to close on failure.
      const openDevice = async (): Promise<Running> => {
        const tun = dataplane.openTun(UDP_DEVICE);
        let index: number;
        try {
          const opened = await datapath.link(tun.name);
          if (!opened) throw new FlannelError('ERR_DEVICE', `${tun.name} vanished right after it was opened`);
          index = opened.index;
        } catch (err) {
          dataplane.closeTun(tun);
          throw err;
        }
        return { proxy: dataplane.start({ tun, localAddr, port: cfg.port, mtu }), index };
      };

      const ensureDevice = async (): Promise<void> => {
        const link = await datapath.link(UDP_DEVICE);
        if (!running || !link || link.index !== running.index) {
          stop();
          const opened = await openDevice();
          running = opened;
          for (const r of routes.values()) opened.proxy.setRoute(r.subnet, r.peer, cfg.port);
        }
        const { index } = running;
        await datapath.configureLink(index, mtu);
        await datapath.ensureAddress(index, { linkIndex: index, address: tunAddr, cidr: ipNet(4, tunAddr.value, 32) }, network);
        const report = await datapath.apply([{ op: 'replace', entry: networkRoute(index) }]);
        const failed = report.failures[0];
        if (failed) throw new FlannelError('ERR_DEVICE', `cannot add ${describeEntry(failed.change.entry)}: ${failed.errno}`);
      };

      const plan: PeerPlan = {
        scope: () => ({ routeNetworks: [network], excludeRoutes: [lease.subnet as IpNet], neighLinks: [] }),
        ownsLink: (name) => name === UDP_DEVICE,
        ownsEntry: (entry) => entry.kind === 'route' && sameNet(entry.dst, network) && (running === undefined || entry.linkIndex === undefined || entry.linkIndex === running.index),
        ensureDevices: () => ensureDevice(),
        entriesFor: (peer) => ({ entries: [], skipped: peerTarget(peer) ? [] : [`${leaseLabel(peer)} has no IPv4 subnet and public IP for the udp backend; skipping it`] }),
        syncPeers(changed) {
          for (const [key, peer] of changed) {
            const target = peer ? peerTarget(peer) : undefined;
            const before = routes.get(key);
            if (target) {
              routes.set(key, target);
              running?.proxy.setRoute(target.subnet, target.peer, cfg.port);
            } else {
              routes.delete(key);
              if (before) running?.proxy.deleteRoute(before.subnet);
            }
          }
        },
      };

      // Here and not only when the reconciler starts, so the device is up before subnet.env says the node is ready,
      // and a taken port fails the start with the address named. A network that fails here never runs, so nothing
      // else would close its device.
      try {
        await ensureDevice();
      } catch (err) {
        stop();
        throw err;
      }
      log.info({ device: UDP_DEVICE, mtu, address: formatIp(tunAddr), listen: `${formatIp(localAddr)}:${cfg.port}` }, 'udp backend ready');
      deps.trackDrops?.(() => running?.proxy.stats().dropped);
      return {
        lease,
        mtu,
        async run(runSignal) {
          try {
            await reconcilePeers(deps, plan, lease, runSignal);
          } finally {
            // Closing the TUN device removes it, its address and its route, as upstream's shutdown does.
            stop();
          }
        },
      };
    },
  };
}

function peerTarget(peer: Lease): { subnet: IpNet; peer: IpAddress } | undefined {
  const publicIP = peer.attrs.publicIP;
  return peer.subnet && publicIP && publicIP.family === 4 ? { subnet: peer.subnet, peer: publicIP } : undefined;
}
