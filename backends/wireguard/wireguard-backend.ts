/**
 * wireguard: encrypted pod traffic, wire-compatible with upstream's backend (docs/compatibility.md#wireguard-backend).
 * Each device (flannel-wg, and flannel-wg-v6 in `separate` mode) holds this node's lease address as /32 (/128) and
 * one route for the whole flannel network per family; the peers' allowed IPs (their subnets) steer each packet to
 * its node. The device runs in the kernel or in wireguard-go (wg-device-choice.ts). Peers follow the leases through
 * the shared reconciler, which also repairs the devices, addresses and routes, and whose full resyncs read the
 * devices' peer lists back, so a stale or altered peer is corrected like any other drift.
 */
import type { Logger } from 'pino';
import type { Family } from '../../flanneld/ip/address.js';
import { ipNet, networkAddress, sameNet, type IpNet } from '../../flanneld/ip/cidr.js';
import type { Lease } from '../../flanneld/lease/lease.js';
import { FlannelError } from '../../flanneld/runtime/errors.js';
import type { Backend, BackendDeps, BackendFactory, Network } from '../backend.js';
import { baseLeaseAttrs } from '../backend.js';
import type { DatapathEntry } from '../datapath/datapath.js';
import { describeEntry } from '../datapath/entry-key.js';
import type { PeerPlan } from '../peer-reconciler.js';
import { reconcilePeers } from '../peer-network.js';
import { WgPeerSync } from './wg-peer-sync.js';
import { openWgDevices, type OpenedDevice, type WgDeviceFactories, type WgImplementationChoice } from './wg-device-choice.js';
import { keyFilePath, loadOrCreateKey, type WireguardKeyPair } from './wg-key.js';
import { wireguardLeaseData } from './wg-lease-data.js';
import { planWireguardPeer, type PlannedWgPeer, type WgPeerContext } from './wg-peers.js';
import { deviceFor, deviceMtu, parseWireguardConfig, wireguardDevices, type WireguardConfig } from './wireguard-config.js';

export interface WireguardBackendOptions {
  readonly implementation: WgImplementationChoice;
  /** The device implementations, given this daemon's deps. */
  readonly devices: (deps: BackendDeps) => WgDeviceFactories;
  /** This node's key pair; the key file by default (WIREGUARD_KEY_FILE, else /run/flannel/wgkey). */
  readonly keyPair?: (() => Promise<WireguardKeyPair>) | undefined;
}

export function wireguardBackendFactory(options: WireguardBackendOptions): BackendFactory {
  return (deps) => createWireguardBackend(deps, options);
}

export function createWireguardBackend(deps: BackendDeps, options: WireguardBackendOptions): Backend {
  return {
    async registerNetwork(config, signal): Promise<Network> {
      const cfg = parseWireguardConfig(config.backend);
      const { extIface, log } = deps;
      const families: Family[] = [...(config.enableIPv4 ? [4 as const] : []), ...(config.enableIPv6 ? [6 as const] : [])];
      checkEndpoints(cfg, families, deps);
      const keys = await (options.keyPair ?? (() => loadOrCreateKey(keyFilePath())))();
      const wanted = wireguardDevices(cfg, families).map((d) => ({ name: d.name, iface: { privateKey: keys.privateKey, listenPort: d.listenPort } }));
      const opened = await openWgDevices(wanted, options.implementation, options.devices(deps), log, signal);
      try {
        const lease = await deps.acquireLease({ ...baseLeaseAttrs(extIface, 'wireguard'), ...wireguardLeaseData(cfg, families, keys.publicKey) }, signal);
        const networks = new Map<Family, IpNet | undefined>([[4, config.enableIPv4 ? config.network : undefined], [6, config.enableIPv6 ? config.ipv6Network : undefined]]);
        const layout = new DeviceLayout(cfg, opened, lease, networks, deps);
        await layout.ensure(signal);
        const plan = peerPlan(layout, { config: cfg, families, self: baseLeaseAttrs(extIface, 'wireguard'), ownPublicKey: keys.publicKey }, log);
        log.info({ devices: opened.map((o) => `${o.device.name} (${o.device.implementation}, port ${o.iface.listenPort}, mtu ${layout.mtu})`), publicKey: keys.publicKey }, 'wireguard devices ready');
        return {
          lease,
          mtu: layout.mtu,
          async run(runSignal) {
            try {
              await reconcilePeers(deps, plan, lease, runSignal);
            } finally {
              await layout.close();
            }
          },
        };
      } catch (err) {
        await Promise.allSettled(opened.map((o) => o.device.close()));
        throw err;
      }
    },
  };
}

/** Peers dial this node at its public address of the endpoint family: refuse to start without one. */
function checkEndpoints(cfg: WireguardConfig, families: readonly Family[], deps: BackendDeps): void {
  const { extIface } = deps;
  const needed: Family[] = cfg.mode === 'separate' ? [...families] : cfg.mode === 'ipv4' ? [4] : cfg.mode === 'ipv6' ? [6] : [];
  if (cfg.mode === 'auto' && !extIface.publicIP && !extIface.publicIPv6) needed.push(4);
  for (const family of needed) {
    if (!(family === 4 ? extIface.publicIP : extIface.publicIPv6)) {
      throw new FlannelError('ERR_NO_ADDRESS', `interface ${extIface.name} has no public IPv${family} address for the wireguard device ${deviceFor(cfg, family).name} (Mode ${cfg.mode})`);
    }
  }
}

/** The devices with their addresses and network routes: what ensureDevices restores and close lets go. */
class DeviceLayout {
  readonly mtu: number;

  constructor(
    readonly cfg: WireguardConfig,
    readonly opened: readonly OpenedDevice[],
    readonly lease: Lease,
    readonly networks: ReadonlyMap<Family, IpNet | undefined>,
    private readonly deps: BackendDeps,
  ) {
    this.mtu = deviceMtu(cfg, deps.extIface.mtu);
  }

  names(): string[] {
    return this.opened.map((o) => o.device.name);
  }

  /** The routes for the whole network, one per family, each through the family's device. */
  networkRoutes(): DatapathEntry[] {
    const routes: DatapathEntry[] = [];
    for (const [family, network] of this.networks) {
      const device = this.byName(deviceFor(this.cfg, family).name);
      if (network && device) routes.push({ kind: 'route', dst: network, linkIndex: device.index });
    }
    return routes;
  }

  ownsRoute(entry: DatapathEntry): boolean {
    return entry.kind === 'route' && [...this.networks.values()].some((n) => n !== undefined && sameNet(entry.dst, n)) &&
      (entry.linkIndex === undefined || this.opened.some((o) => o.index === entry.linkIndex));
  }

  async ensure(signal: AbortSignal): Promise<void> {
    const { datapath } = this.deps;
    for (const o of this.opened) {
      o.index = await o.device.ensure(o.iface, signal);
      await datapath.configureLink(o.index, this.mtu);
    }
    for (const [family, network] of this.networks) await this.ensureAddress(family, network);
    const report = await datapath.apply(this.networkRoutes().map((entry) => ({ op: 'replace' as const, entry })));
    const failed = report.failures[0];
    if (failed) throw new FlannelError('ERR_DEVICE', `cannot add ${describeEntry(failed.change.entry)}: ${failed.errno}`);
  }

  private async ensureAddress(family: Family, network: IpNet | undefined): Promise<void> {
    const subnet = family === 4 ? this.lease.subnet : this.lease.ipv6Subnet;
    const device = this.byName(deviceFor(this.cfg, family).name);
    if (!subnet || !network || !device) return;
    const address = networkAddress(subnet);
    await this.deps.datapath.ensureAddress(device.index, { linkIndex: device.index, address, cidr: ipNet(family, address.value, family === 4 ? 32 : 128) }, network);
  }

  byName(name: string): OpenedDevice | undefined {
    return this.opened.find((o) => o.device.name === name);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.opened.map((o) => o.device.close()));
  }
}

function peerPlan(layout: DeviceLayout, ctx: WgPeerContext, log: Logger): PeerPlan {
  const { lease, networks } = layout;
  // entriesFor and syncPeers see the same Lease objects in one turn: the plan is made once per lease version.
  const planned = new WeakMap<Lease, readonly PlannedWgPeer[]>();
  const planFor = (peer: Lease) => {
    const plan = planWireguardPeer(peer, ctx);
    planned.set(peer, plan.peers);
    return plan;
  };
  const sync = new WgPeerSync(layout.opened, log);
  return {
    scope: () => ({
      routeNetworks: [...networks.values()].filter((n): n is IpNet => n !== undefined),
      excludeRoutes: [lease.subnet, lease.ipv6Subnet].filter((n): n is IpNet => n !== undefined),
      neighLinks: [],
    }),
    ownsLink: (name) => layout.names().includes(name),
    ownsEntry: (entry) => layout.ownsRoute(entry),
    ensureDevices: async (signal) => {
      await layout.ensure(signal);
      sync.devicesReplaced();
    },
    entriesFor: (peer) => ({ entries: [], skipped: planFor(peer).skipped }),
    syncPeers(changed) {
      for (const [key, peer] of changed) sync.setLease(key, peer ? (planned.get(peer) ?? planFor(peer).peers) : undefined);
    },
    converge: (full) => sync.converge(full),
  };
}
