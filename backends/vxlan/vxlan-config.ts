/**
 * The vxlan Backend block (docs/compatibility.md#backend-blocks): keys match case-insensitively and unknown keys are
 * ignored, as with Go's encoding/json. Unlike upstream, values a Go `int` would silently truncate when handed to
 * netlink (a VNI past 24 bits, a port past 16) are refused here with the key and value named.
 */
import type { BackendConfig } from '../../flanneld/config/network-config-types.js';
import type { Family } from '../../flanneld/ip/address.js';
import { backendFields, boolField, intField, type IntKey } from '../backend-keys.js';

export interface VxlanConfig {
  readonly vni: number;
  /** UDP destination port; 0 leaves the kernel default (8472). */
  readonly port: number;
  /** Underlay MTU override; 0 takes the external interface's MTU. The device MTU is derived by `vxlanMtu`. */
  readonly mtu: number;
  readonly gbp: boolean;
  readonly learning: boolean;
  readonly directRouting: boolean;
}

export const DEFAULT_VNI = 1;
export const MAX_VNI = 0xffffff;

/** Outer IP + UDP + VXLAN + inner Ethernet headers: 20+8+8+14 over IPv4, 40+8+8+14 over IPv6. */
const OVERHEAD: Readonly<Record<Family, number>> = { 4: 50, 6: 70 };

const VNI_KEY: IntKey = { name: 'VNI', min: 0, max: MAX_VNI };
const PORT_KEY: IntKey = { name: 'Port', min: 0, max: 65535 };
const MTU_KEY: IntKey = { name: 'MTU', min: 68, max: 65535, sentinel: 0 };

export function parseVxlanConfig(backend: BackendConfig): VxlanConfig {
  const fields = backendFields(backend);

  return Object.freeze({
    vni: intField(fields, VNI_KEY, DEFAULT_VNI),
    port: intField(fields, PORT_KEY, 0),
    mtu: intField(fields, MTU_KEY, 0),
    gbp: boolField(fields, 'GBP'),
    learning: boolField(fields, 'Learning'),
    directRouting: boolField(fields, 'DirectRouting'),
  });
}

/** `flannel.<VNI>` for the IPv4 device, `flannel-v6.<VNI>` for the IPv6 one, as upstream names them. */
export function vxlanDeviceName(vni: number, family: Family): string {
  return family === 4 ? `flannel.${vni}` : `flannel-v6.${vni}`;
}

export function vxlanOverhead(family: Family): number {
  return OVERHEAD[family];
}

/**
 * Device MTU for the device whose underlay is `family`. Upstream subtracts 50 for both families and, after a device
 * re-creation, subtracts it a second time; this is the one place the overhead is taken off
 * (docs/compatibility.md#vxlan-backend).
 */
export function vxlanMtu(underlayMtu: number, configMtu: number, family: Family): number {
  return (configMtu || underlayMtu) - OVERHEAD[family];
}
