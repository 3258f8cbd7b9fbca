/**
 * A WireGuard device carried by wireguard-go (wireguard-go.ts supervises the process): the path for kernels without
 * the wireguard module. The process owns the TUN device, so the device's peers live in the process; this object
 * keeps the whole wanted configuration so a restarted process gets it back, while each update sends only the change.
 */
import type { Logger } from 'pino';
import type { Clock } from '../../flanneld/runtime/clock.js';
import { FlannelError } from '../../flanneld/runtime/errors.js';
import type { Datapath } from '../datapath/datapath.js';
import type { WgDeviceConfig, WgDeviceState, WgPeerConfig } from './uapi.js';
import type { WgDevice, WgInterfaceConfig, WgPeerChanges } from './wg-device.js';
import { startWireguardGo, type WireguardGoHandle, type WireguardGoOptions } from './wireguard-go.js';

export interface UserspaceDeviceDeps {
  readonly datapath: Pick<Datapath, 'link' | 'deleteLink'>;
  readonly clock: Clock;
  readonly log: Logger;
  /** The device's process went away (`problem` says how) or is back (undefined), for /healthz. */
  readonly health?: ((device: string, problem: string | undefined) => void) | undefined;
  /** Injected in tests; startWireguardGo otherwise. */
  readonly start?: ((options: WireguardGoOptions) => Promise<WireguardGoHandle>) | undefined;
}

export function userspaceDevice(name: string, deps: UserspaceDeviceDeps): WgDevice {
  return new UserspaceDevice(name, deps);
}

class UserspaceDevice implements WgDevice {
  readonly implementation = 'userspace';
  private handle: WireguardGoHandle | undefined;
  /** Set when supervision ended on its own (wireguard-go vanished from the host): the next ensure starts anew. */
  private supervisionOver = false;
  private iface: WgInterfaceConfig | undefined;
  private readonly peers = new Map<string, WgPeerConfig>();

  constructor(
    readonly name: string,
    private readonly deps: UserspaceDeviceDeps,
  ) {}

  async ensure(iface: WgInterfaceConfig, _signal: AbortSignal): Promise<number> {
    if (!this.handle || this.supervisionOver) await this.start();
    if (!sameInterface(this.iface, iface)) {
      this.iface = iface;
      await this.running().configure(this.desired(), { remove: [], write: [] });
    }
    const link = await this.deps.datapath.link(this.name);
    // Between a crash and the restart the TUN device is gone; the caller retries on its backoff.
    if (!link) throw new FlannelError('ERR_DEVICE', `${this.name} is not there: wireguard-go is restarting`);
    return link.index;
  }

  state(): Promise<WgDeviceState> {
    return this.running().state();
  }

  async update(iface: WgInterfaceConfig, changes: WgPeerChanges): Promise<void> {
    this.iface = iface;
    for (const key of changes.remove) this.peers.delete(key);
    for (const peer of changes.write) this.peers.set(peer.publicKey, peer);
    await this.running().configure(this.desired(), changes);
  }

  async close(): Promise<void> {
    await this.handle?.stop();
    this.handle = undefined;
  }

  private async start(): Promise<void> {
    await this.removeLeftover();
    const { clock, log, health } = this.deps;
    const handle = await (this.deps.start ?? startWireguardGo)({
      device: this.name,
      clock,
      log,
      onDown: (reason) => health?.(this.name, reason),
      onUp: () => health?.(this.name, undefined),
    });
    this.handle = handle;
    this.supervisionOver = false;
    void handle.exited.then(() => {
      if (this.handle === handle) this.supervisionOver = true;
    });
    health?.(this.name, undefined);
  }

  /**
   * A device of this name that is not our process's (an earlier flanneld's wireguard-go, or any other link) would
   * make wireguard-go fail; as upstream does with its kernel link, it is deleted and made anew. A wireguard-go
   * exits when its TUN device is deleted.
   */
  private async removeLeftover(): Promise<void> {
    const existing = await this.deps.datapath.link(this.name);
    if (!existing) return;
    this.deps.log.warn({ device: this.name, kind: existing.kind ?? 'unknown' }, `${this.name} already exists; recreating it`);
    await this.deps.datapath.deleteLink(existing.index);
  }

  private running(): WireguardGoHandle {
    if (!this.handle) throw new FlannelError('ERR_DEVICE', `${this.name} has not been started`);
    return this.handle;
  }

  private desired(): WgDeviceConfig {
    const iface = this.iface as WgInterfaceConfig;
    return { privateKey: iface.privateKey, listenPort: iface.listenPort, peers: [...this.peers.values()] };
  }
}

function sameInterface(a: WgInterfaceConfig | undefined, b: WgInterfaceConfig): boolean {
  return a !== undefined && a.privateKey === b.privateKey && a.listenPort === b.listenPort;
}
