/**
 * Which implementation carries this node's WireGuard devices (docs/operations.md#wireguard-kernel-or-userspace):
 * the kernel when it has the wireguard module, else wireguard-go, chosen per node at start and logged; the
 * --wireguard-implementation flag forces either. Upstream only knows the kernel link and fails without the module.
 */
import type { Logger } from 'pino';
import { FlannelError, errorMessage } from '../../flanneld/runtime/errors.js';
import { WgKernelUnsupportedError, type WgDevice, type WgDeviceFactory, type WgImplementation, type WgInterfaceConfig } from './wg-device.js';

export type WgImplementationChoice = 'auto' | WgImplementation;
export const WG_IMPLEMENTATION_CHOICES: readonly WgImplementationChoice[] = ['auto', 'kernel', 'userspace'];

export interface WgDeviceFactories {
  readonly kernel: WgDeviceFactory;
  readonly userspace: WgDeviceFactory;
}

export interface WantedDevice {
  readonly name: string;
  readonly iface: WgInterfaceConfig;
}

export interface OpenedDevice {
  readonly device: WgDevice;
  readonly iface: WgInterfaceConfig;
  index: number;
}

/**
 * Creates every wanted device with one implementation. In `auto` the kernel is tried first and a kernel that cannot
 * carry WireGuard moves every device to userspace; any other failure is the caller's, as is a forced kernel
 * that cannot (the message says how to choose otherwise).
 */
export async function openWgDevices(
  wanted: readonly WantedDevice[],
  choice: WgImplementationChoice,
  factories: WgDeviceFactories,
  log: Logger,
  signal: AbortSignal,
): Promise<OpenedDevice[]> {
  if (choice !== 'auto') return openAll(wanted, factories[choice], signal).catch((err: unknown) => Promise.reject(forcedFailure(choice, err)));
  try {
    const opened = await openAll(wanted, factories.kernel, signal);
    log.info({ devices: wanted.map((w) => w.name) }, 'WireGuard devices run in the kernel');
    return opened;
  } catch (err) {
    if (!(err instanceof WgKernelUnsupportedError)) throw err;
    log.info({ devices: wanted.map((w) => w.name), reason: err.message }, 'the kernel cannot carry WireGuard; running the devices in userspace (wireguard-go)');
    return openAll(wanted, factories.userspace, signal);
  }
}

async function openAll(wanted: readonly WantedDevice[], factory: WgDeviceFactory, signal: AbortSignal): Promise<OpenedDevice[]> {
  const opened: OpenedDevice[] = [];
  try {
    for (const { name, iface } of wanted) {
      const entry: OpenedDevice = { device: factory(name), iface, index: 0 };
      opened.push(entry);
      entry.index = await entry.device.ensure(iface, signal);
    }
    return opened;
  } catch (err) {
    // Every device made so far is let go (the failed one too), so a fallback or a retry starts from nothing.
    await Promise.allSettled(opened.map((o) => o.device.close()));
    throw err;
  }
}

function forcedFailure(choice: WgImplementation, err: unknown): unknown {
  if (!(err instanceof WgKernelUnsupportedError)) return err;
  return new FlannelError('ERR_DEVICE', `${errorMessage(err)} (--wireguard-implementation=${choice}; auto or userspace would run wireguard-go)`, { cause: err });
}
