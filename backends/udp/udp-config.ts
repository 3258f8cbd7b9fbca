/**
 * The udp Backend block (docs/compatibility.md#udp-backend): only `Port`, the UDP port this node listens on and sends
 * to (upstream sends to its own configured port on every peer, so all nodes must agree on it). The device MTU is the
 * external interface's less the outer IPv4 and UDP headers.
 */
import type { BackendConfig } from '../../flanneld/config/network-config-types.js';
import { backendFields, intField, type IntKey } from '../backend-keys.js';

export interface UdpConfig {
  readonly port: number;
}

export const DEFAULT_UDP_PORT = 8285;
/** The TUN device, as upstream names it (its `flannel%d` pattern always yields flannel0 on a node). */
export const UDP_DEVICE = 'flannel0';
/** Outer IPv4 header (20) + UDP header (8): the inner packet is the whole payload, with no header of ours. */
export const UDP_OVERHEAD = 28;

const PORT_KEY: IntKey = { name: 'Port', min: 1, max: 65535 };

export function parseUdpConfig(backend: BackendConfig): UdpConfig {
  return Object.freeze({ port: intField(backendFields(backend), PORT_KEY, DEFAULT_UDP_PORT) });
}
