/**
 * An in-memory WireGuard device for backend unit tests: ensure() makes a link in a FakeDatapath (as a kernel link
 * or wireguard-go's TUN device would appear), update() applies peer changes as both real implementations do, and
 * the test can alter the peers behind the backend's back. A "kernel" fake can be told the module is missing.
 */
import type { FakeDatapath } from './fake-datapath.js';
import type { WgDeviceState, WgPeerConfig } from '../../backends/wireguard/uapi.js';
import {
  WgKernelUnsupportedError, type WgDevice, type WgImplementation, type WgInterfaceConfig, type WgPeerChanges,
} from '../../backends/wireguard/wg-device.js';

export class FakeWgDevice implements WgDevice {
  readonly peers = new Map<string, WgPeerConfig>();
  iface: WgInterfaceConfig | undefined;
  /** Every update, for tests that look at what was sent rather than at the result. */
  readonly updates: WgPeerChanges[] = [];
  closed = false;
  index: number | undefined;

  constructor(
    readonly name: string,
    readonly implementation: WgImplementation,
    private readonly dp: FakeDatapath,
    private readonly unsupported = false,
  ) {}

  async ensure(iface: WgInterfaceConfig): Promise<number> {
    if (this.unsupported) throw new WgKernelUnsupportedError(`cannot create WireGuard link ${this.name}: EOPNOTSUPP`);
    const existing = this.dp.links.find((l) => l.name === this.name);
    if (!existing) {
      // A new device starts empty, like a fresh kernel link or wireguard-go process.
      this.peers.clear();
      this.index = this.dp.addLink({ name: this.name, kind: this.implementation === 'kernel' ? 'wireguard' : 'tun', mtu: 1420 }).index;
    }
    this.iface = iface;
    return this.index as number;
  }

  async state(): Promise<WgDeviceState> {
    return {
      privateKey: this.iface?.privateKey,
      listenPort: this.iface?.listenPort,
      fwmark: 0,
      peers: [...this.peers.values()].map((p) => ({
        publicKey: p.publicKey,
        presharedKey: p.presharedKey,
        endpoint: p.endpoint,
        persistentKeepalive: p.persistentKeepalive ?? 0,
        allowedIps: p.allowedIps,
        lastHandshakeMs: undefined,
        rxBytes: 0,
        txBytes: 0,
      })),
    };
  }

  async update(iface: WgInterfaceConfig, changes: WgPeerChanges): Promise<void> {
    this.iface = iface;
    this.updates.push(changes);
    for (const key of changes.remove) this.peers.delete(key);
    for (const peer of changes.write) this.peers.set(peer.publicKey, peer);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Peers as "key endpoint allowed-ips", sorted, for compact assertions. */
  describePeers(format: (peer: WgPeerConfig) => string): string[] {
    return [...this.peers.values()].map(format).sort();
  }
}
