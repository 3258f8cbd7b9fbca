/**
 * The kernel implementation of WgDevice: a `wireguard` link made over rtnetlink and configured over the wireguard
 * generic netlink family, both through injected request sockets (tests hand in a fake kernel). The link is left
 * down with the kernel's MTU: the backend sets both with the datapath once ensure() has the index.
 */
import { FlannelError } from '../../flanneld/runtime/errors.js';
import { NETLINK_GENERIC } from '../datapath/netlink/constants.js';
import { resolveFamily } from '../datapath/netlink/genetlink.js';
import { createWireguard, deleteLink, findLink, WIREGUARD_KIND } from '../datapath/netlink/link.js';
import { openNativeNetlinkSocket, type OpenNetlinkSocket } from '../datapath/netlink/native-socket.js';
import { NetlinkRequestError, RtnlSocket } from '../datapath/netlink/socket.js';
import type { WgDeviceState } from './uapi.js';
import { WgKernelUnsupportedError, type WgDevice, type WgDeviceFactory, type WgInterfaceConfig, type WgPeerChanges } from './wg-device.js';
import { decodeDevice, getDevice, planSet, setDevice, WG_GENL_NAME } from './wg-netlink.js';

export interface WgKernelSockets {
  /** NETLINK_ROUTE: the link itself. */
  readonly route: RtnlSocket;
  /** NETLINK_GENERIC: the wireguard family. */
  readonly genl: RtnlSocket;
}

/** Both sockets, opened now (so a refused socket shows at start); the caller closes them after the devices. */
export function openWgKernelSockets(open: OpenNetlinkSocket = openNativeNetlinkSocket): WgKernelSockets & { close(): void } {
  const route = new RtnlSocket(open);
  try {
    const genl = new RtnlSocket(open, NETLINK_GENERIC);
    return {
      route,
      genl,
      close() {
        route.close();
        genl.close();
      },
    };
  } catch (err) {
    route.close();
    throw err;
  }
}

/**
 * Kernel devices sharing one pair of sockets, opened with the first device and closed with the last one's close():
 * an open netlink socket keeps the daemon's event loop alive, so none may outlive the devices.
 */
export function kernelWgDevices(open: OpenNetlinkSocket = openNativeNetlinkSocket): WgDeviceFactory {
  let shared: (WgKernelSockets & { close(): void }) | undefined;
  let users = 0;
  return (name) => {
    shared ??= openWgKernelSockets(open);
    users++;
    return new WgKernelDevice(name, shared, () => {
      if (--users > 0) return;
      shared?.close();
      shared = undefined;
    });
  };
}

const isErrno = (err: unknown, errno: string): boolean => err instanceof NetlinkRequestError && err.errno === errno;

/**
 * Whether this kernel can carry wireguard devices, asked without making one. Resolving the family is enough: on a
 * GETFAMILY for an unknown name the kernel runs modprobe for the family's alias, which the wireguard module
 * declares, so an installed module that is not loaded yet resolves too. A throwaway link would tell no more, and
 * would briefly add a device to the host's namespace. ensure()'s WgKernelUnsupportedError stays the final word.
 */
export async function kernelWireguardAvailable(genl: RtnlSocket): Promise<boolean> {
  try {
    await resolveFamily(genl, WG_GENL_NAME);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

export class WgKernelDevice implements WgDevice {
  readonly implementation = 'kernel' as const;
  private familyId: number | undefined;
  private release: (() => void) | undefined;

  constructor(
    readonly name: string,
    private readonly sockets: WgKernelSockets,
    /** Called once, by the first close(): the sockets' owner may close them. */
    release?: () => void,
  ) {
    this.release = release;
  }

  /**
   * Keeps a wireguard link of this name with its peers, replaces a link of another kind (as upstream does), makes
   * one when there is none, then sets the interface config. No wireguard in the kernel rejects with
   * WgKernelUnsupportedError and leaves no link behind.
   */
  async ensure(iface: WgInterfaceConfig, signal: AbortSignal): Promise<number> {
    signal.throwIfAborted();
    const index = await this.deviceStep('ensure the link', () => this.ensureLink(signal));
    signal.throwIfAborted();
    await this.update(iface, { remove: [], write: [] });
    return index;
  }

  async state(): Promise<WgDeviceState> {
    const familyId = await this.family();
    const what = `wireguard device ${this.name}: get`;
    const messages = await this.deviceStep('get', () => this.sockets.genl.dump(getDevice(familyId, this.name), what));
    return decodeDevice(messages, what);
  }

  /** One SET message per SET_MESSAGE_BUDGET, in order, each acknowledged before the next goes. */
  async update(iface: WgInterfaceConfig, changes: WgPeerChanges): Promise<void> {
    const familyId = await this.family();
    const plan = planSet({ ifname: this.name, iface, ...changes });
    for (const [i, attrs] of plan.entries()) {
      const what = `set (message ${i + 1} of ${plan.length})`;
      await this.deviceStep(what, () => this.sockets.genl.request(setDevice(familyId, attrs), what));
    }
  }

  /**
   * Leaves the link with its peers, address and route when the daemon stops, as upstream does, so pods keep talking
   * through a daemon restart or upgrade; the next start takes it over as it finds it.
   */
  async close(): Promise<void> {
    const release = this.release;
    this.release = undefined;
    release?.();
  }

  private async ensureLink(signal: AbortSignal): Promise<number> {
    const existing = await findLink(this.sockets.route, this.name);
    if (existing?.kind === WIREGUARD_KIND) {
      await this.family();
      return existing.index;
    }
    if (existing) await this.deleteLink(existing.index);
    signal.throwIfAborted();
    await this.createLink();
    const created = await findLink(this.sockets.route, this.name);
    if (!created) throw new FlannelError('ERR_DEVICE', `wireguard device ${this.name} vanished right after it was created`);
    try {
      await this.family();
    } catch (err) {
      await this.deleteLink(created.index);
      throw err;
    }
    return created.index;
  }

  private async createLink(): Promise<void> {
    try {
      await this.sockets.route.request(createWireguard(this.name), `create wireguard link ${this.name}`);
    } catch (err) {
      if (!isErrno(err, 'EOPNOTSUPP')) throw err;
      throw new WgKernelUnsupportedError(`wireguard device ${this.name}: the kernel cannot create a wireguard link (EOPNOTSUPP: no wireguard module)`, { cause: err });
    }
  }

  private async deleteLink(index: number): Promise<void> {
    try {
      await this.sockets.route.request(deleteLink(index), `delete link ${this.name}`);
    } catch (err) {
      if (!isErrno(err, 'ENODEV')) throw err;
    }
  }

  /** The family's id, asked once: it stays the same while the module is loaded, and a loaded module stays. */
  private async family(): Promise<number> {
    if (this.familyId !== undefined) return this.familyId;
    try {
      this.familyId = await resolveFamily(this.sockets.genl, WG_GENL_NAME);
      return this.familyId;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw this.deviceError('resolve the wireguard family', err);
      throw new WgKernelUnsupportedError(`wireguard device ${this.name}: the kernel has no "${WG_GENL_NAME}" generic netlink family (ENOENT: no wireguard module)`, { cause: err });
    }
  }

  /** Runs one step; a netlink failure becomes ERR_DEVICE naming the device, other errors pass as they are. */
  private async deviceStep<T>(what: string, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (err) {
      throw this.deviceError(what, err);
    }
  }

  private deviceError(what: string, err: unknown): unknown {
    if (!(err instanceof NetlinkRequestError)) return err;
    return new FlannelError('ERR_DEVICE', `wireguard device ${this.name}: ${what}: ${err.errno}`, { cause: err });
  }
}
