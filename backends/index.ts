/** The built-in backends by upstream name; a value, not a module-level registry that imports fill in. */
import type { BackendFactory } from './backend.js';
import { createAllocBackend } from './alloc/alloc-backend.js';
import { createHostGwBackend } from './host-gw/host-gw-backend.js';
import { udpBackendFactory } from './udp/udp-backend.js';
import { createVxlanBackend } from './vxlan/vxlan-backend.js';

export const builtInBackends: ReadonlyMap<string, BackendFactory> = new Map<string, BackendFactory>([
  ['alloc', createAllocBackend],
  ['vxlan', createVxlanBackend],
  ['host-gw', createHostGwBackend],
  ['udp', udpBackendFactory()],
]);
