/**
 * One WireGuard device as the backend drives it, whichever implementation carries it: a kernel `wireguard` link
 * configured over generic netlink (wg-kernel-device.ts), or Debian's wireguard-go configured over its UAPI socket
 * (wg-userspace-device.ts). The backend only ever says "these peers go, these are written whole" and reads the
 * device back for a resync, so both implementations offer exactly that and nothing more.
 */
import { FlannelError } from '../../flanneld/runtime/errors.js';
import type { WgDeviceState, WgPeerConfig } from './uapi.js';

export type WgImplementation = 'kernel' | 'userspace';

/** What every device is configured with besides its peers. */
export interface WgInterfaceConfig {
  /** base64, 32 bytes. */
  readonly privateKey: string;
  readonly listenPort: number;
}

/**
 * A change to a device's peers. `remove` names public keys (base64); `write` peers are set whole, replacing the
 * allowed IPs, preshared key, keepalive and endpoint of a peer the device already has and adding one it lacks.
 * Peers named in neither are left as they are, so traffic to them never pauses.
 */
export interface WgPeerChanges {
  readonly remove: readonly string[];
  readonly write: readonly WgPeerConfig[];
}

export interface WgDevice {
  readonly name: string;
  readonly implementation: WgImplementation;
  /**
   * Creates the device when it is missing (or restarts its process), sets the interface config, and resolves with
   * its link index. Idempotent: a device already in place is kept with its peers.
   */
  ensure(iface: WgInterfaceConfig, signal: AbortSignal): Promise<number>;
  /** The device as it reports itself, for a resync's diff. */
  state(): Promise<WgDeviceState>;
  /** Applies `changes` (and the interface config) in as few requests as the transport allows. */
  update(iface: WgInterfaceConfig, changes: WgPeerChanges): Promise<void>;
  /**
   * Lets the device go as the daemon stops: wireguard-go is stopped (its device goes with it), while a kernel link
   * stays with its peers, as upstream leaves it, so traffic flows on through a daemon restart.
   */
  close(): Promise<void>;
}

/** Makes the device object for `name`; nothing happens in the kernel or process table until `ensure`. */
export type WgDeviceFactory = (name: string) => WgDevice;

/**
 * The kernel path's answer when the kernel cannot carry a device (no wireguard module: creating the link fails with
 * EOPNOTSUPP, or the generic netlink family is unknown): the signal to fall back to userspace in `auto`.
 */
export class WgKernelUnsupportedError extends FlannelError {
  override readonly name = 'WgKernelUnsupportedError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_DEVICE', message, options);
  }
}
