/**
 * vxlan: one kernel VXLAN device per enabled family (flannel.<VNI>, flannel-v6.<VNI>) and, per peer, a permanent
 * neighbour, FDB entry and onlink route (or a plain route with DirectRouting on a shared segment). The VTEP MAC
 * comes from this node's previous lease when there is one, so a restart or a re-created device needs no change
 * on any peer (upstream keeps it in kube mode only).
 */
import type { Family, IpAddress } from '../../flanneld/ip/address.js';
import { containsIp, ipNet, networkAddress, type IpNet } from '../../flanneld/ip/cidr.js';
import { FlannelError } from '../../flanneld/runtime/errors.js';
import type { Backend, BackendDeps, Network } from '../backend.js';
import { baseLeaseAttrs } from '../backend.js';
import type { VxlanLinkSpec } from '../datapath/datapath.js';
import type { PeerPlan } from '../peer-reconciler.js';
import { reconcilePeers, scopeOf } from '../peer-network.js';
import { parseVxlanConfig, vxlanDeviceName, vxlanMtu } from './vxlan-config.js';
import { planVxlanPeer, type VxlanFamilyContext, type VxlanPeerContext } from './vxlan-peers.js';
import { decodeVxlanBackendData, encodeVxlanBackendData, randomVtepMac } from './vtep-mac.js';

interface Device {
  readonly family: Family;
  readonly spec: VxlanLinkSpec;
  index: number;
}

export function createVxlanBackend(deps: BackendDeps): Backend {
  return {
    async registerNetwork(config, signal): Promise<Network> {
      const cfg = parseVxlanConfig(config.backend);
      const { extIface, datapath, log } = deps;
      const families: Family[] = [...(config.enableIPv4 ? [4 as const] : []), ...(config.enableIPv6 ? [6 as const] : [])];
      const previous = await deps.findPreviousLease(extIface.publicIP, signal).catch(() => undefined);

      const devices: Device[] = [];
      for (const family of families) {
        const local = family === 4 ? extIface.ifaceAddr : extIface.ifaceAddrV6;
        if (!local) throw new FlannelError('ERR_NO_ADDRESS', `interface ${extIface.name} has no IPv${family} address for the vxlan device`);
        const name = vxlanDeviceName(cfg.vni, family);
        const stored = decodeVxlanBackendData(family === 4 ? previous?.attrs.backendData : previous?.attrs.backendV6Data)?.mac;
        const existing = await datapath.link(name);
        const mac = stored ?? (existing?.kind === 'vxlan' ? existing.mac : undefined) ?? randomVtepMac(deps.random);
        const spec: VxlanLinkSpec = {
          name, vni: cfg.vni, port: cfg.port, local, underlayIndex: extIface.index,
          mtu: vxlanMtu(extIface.mtu, cfg.mtu, local.family), learning: cfg.learning, gbp: cfg.gbp, mac,
        };
        devices.push({ family, spec, index: (await ensureDevice(deps, spec)).index });
      }

      const v4Device = devices.find((d) => d.family === 4);
      const v6Device = devices.find((d) => d.family === 6);
      const attrs = {
        ...baseLeaseAttrs(extIface, 'vxlan'),
        ...(v4Device ? { backendData: encodeVxlanBackendData(cfg.vni, v4Device.spec.mac) } : {}),
        ...(v6Device ? { backendV6Data: encodeVxlanBackendData(cfg.vni, v6Device.spec.mac) } : {}),
      };
      const lease = await deps.acquireLease(attrs, signal);
      const networks = new Map<Family, IpNet | undefined>([[4, config.enableIPv4 ? config.network : undefined], [6, config.enableIPv6 ? config.ipv6Network : undefined]]);
      const address = async (d: Device): Promise<void> => {
        const subnet = d.family === 4 ? lease.subnet : lease.ipv6Subnet;
        const within = networks.get(d.family);
        if (!subnet || !within) return;
        const addr = networkAddress(subnet);
        await datapath.ensureAddress(d.index, { linkIndex: d.index, address: addr, cidr: ipNet(addr.family, addr.value, addr.family === 4 ? 32 : 128) }, within);
      };
      for (const d of devices) await address(d);

      let connected: readonly IpNet[] = cfg.directRouting ? await deps.host.connectedNetworks() : [];
      const isDirect = (ip: IpAddress): boolean => cfg.directRouting && connected.some((n) => containsIp(n, ip));
      // Built once per device set-up, not per peer: it changes only when a device is re-created.
      const peerContext = (): VxlanPeerContext => {
        const ctx: { v4?: VxlanFamilyContext; v6?: VxlanFamilyContext } = {};
        for (const d of devices) ctx[d.family === 4 ? 'v4' : 'v6'] = { linkIndex: d.index, isDirect };
        return ctx;
      };
      let ctx = peerContext();
      const names = new Set(devices.map((d) => d.spec.name));
      const plan: PeerPlan = {
        scope: () => scopeOf(lease, networks, devices),
        ownsLink: (name) => names.has(name),
        async ensureDevices() {
          for (const d of devices) {
            d.index = (await ensureDevice(deps, d.spec)).index;
            await address(d);
          }
          if (cfg.directRouting) connected = await deps.host.connectedNetworks();
          ctx = peerContext();
        },
        entriesFor: (peer) => planVxlanPeer(peer, ctx),
      };
      log.info({ devices: devices.map((d) => `${d.spec.name} (mtu ${d.spec.mtu}, mac ${d.spec.mac})`) }, 'vxlan devices ready');
      return {
        lease,
        mtu: Math.min(...devices.map((d) => d.spec.mtu)),
        run: (runSignal) => reconcilePeers(deps, plan, lease, runSignal),
      };
    },
  };
}

async function ensureDevice(deps: BackendDeps, spec: VxlanLinkSpec) {
  const link = await deps.datapath.ensureVxlan(spec);
  // As upstream checks: a MAC that silently differs strands every peer's FDB entry
  // (docs/compatibility.md#vxlan-backend).
  if (link.mac !== spec.mac) {
    // verbatim upstream: flannel pkg/backend/vxlan/device.go
    throw new FlannelError('ERR_DEVICE', `${spec.name}'s mac address wanted: ${spec.mac}, but got: ${link.mac}`);
  }
  return link;
}
