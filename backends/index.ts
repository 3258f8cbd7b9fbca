/** The built-in backends by upstream name; a value, not a module-level registry that imports fill in. */
import type { BackendDeps, BackendFactory } from './backend.js';
import { createAllocBackend } from './alloc/alloc-backend.js';
import { createHostGwBackend } from './host-gw/host-gw-backend.js';
import { udpBackendFactory } from './udp/udp-backend.js';
import { createVxlanBackend } from './vxlan/vxlan-backend.js';
import { wireguardBackendFactory } from './wireguard/wireguard-backend.js';
import type { WgDeviceFactories, WgImplementationChoice } from './wireguard/wg-device-choice.js';
import { kernelWgDevices } from './wireguard/wg-kernel-device.js';
import { userspaceDevice } from './wireguard/wg-userspace-device.js';

export interface BuiltInBackendOptions {
  /** --wireguard-implementation. */
  readonly wireguardImplementation?: WgImplementationChoice;
}

export function builtInBackends(options: BuiltInBackendOptions = {}): ReadonlyMap<string, BackendFactory> {
  return new Map<string, BackendFactory>([
    ['alloc', createAllocBackend],
    ['vxlan', createVxlanBackend],
    ['host-gw', createHostGwBackend],
    ['udp', udpBackendFactory()],
    ['wireguard', wireguardBackendFactory({ implementation: options.wireguardImplementation ?? 'auto', devices: wireguardDevices })],
  ]);
}

function wireguardDevices(deps: BackendDeps): WgDeviceFactories {
  return {
    kernel: kernelWgDevices(),
    userspace: (name) => userspaceDevice(name, { datapath: deps.datapath, clock: deps.clock, log: deps.log, health: deps.deviceProcess }),
  };
}
