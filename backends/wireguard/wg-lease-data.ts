/**
 * What a wireguard lease publishes per family ({"PublicKey":"<base64>","Port":51820}, upstream's wireguardLeaseAttrs)
 * and how a peer's is read: keys in any case, unknown keys ignored, as Go's encoding/json decodes it.
 */
import type { Family } from '../../flanneld/ip/address.js';
import { deviceFor, type WireguardConfig } from './wireguard-config.js';
import { decodeWgKey, encodeWgKey } from './wg-key.js';

export const WIREGUARD_BACKEND_TYPE = 'wireguard';

/** Exactly what upstream marshals; field order matters for byte-equal lease values. */
export interface WireguardBackendDataJson {
  readonly PublicKey: string;
  readonly Port: number;
}

export interface WireguardLeaseData {
  readonly backendType: typeof WIREGUARD_BACKEND_TYPE;
  readonly backendData?: WireguardBackendDataJson;
  readonly backendV6Data?: WireguardBackendDataJson;
}

export type WireguardPeerData = { readonly publicKey: string; readonly port: number } | { readonly refused: string };

/**
 * One family's BackendData: the port is the one that family's device listens on. Upstream publishes ListenPortV6
 * in BackendV6Data even in the single-device modes, where nothing listens on it; peers would send there and never
 * reach this node, so this is a deliberate difference (docs/compatibility.md#deliberate-differences-from-upstream).
 */
export function wireguardBackendData(config: WireguardConfig, family: Family, publicKey: string): WireguardBackendDataJson {
  return { PublicKey: publicKey, Port: deviceFor(config, family).listenPort };
}

/** The lease attributes of a node running `families`, as upstream sets them: data for each enabled family. */
export function wireguardLeaseData(
  config: WireguardConfig,
  families: readonly Family[],
  publicKey: string,
): WireguardLeaseData {
  return {
    backendType: WIREGUARD_BACKEND_TYPE,
    ...(families.includes(4) ? { backendData: wireguardBackendData(config, 4, publicKey) } : {}),
    ...(families.includes(6) ? { backendV6Data: wireguardBackendData(config, 6, publicKey) } : {}),
  };
}

/**
 * Reads a peer's BackendData or BackendV6Data (`field` names which, for the reason). A missing or zero Port means the
 * peer predates published ports and listens where we do, so `ownPort` (our device's port for the family) is used.
 */
export function parseWireguardPeerData(
  data: unknown,
  field: 'BackendData' | 'BackendV6Data',
  ownPort: number,
): WireguardPeerData {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    return { refused: `${field} is not an object: ${JSON.stringify(data) ?? 'absent'}` };
  }
  // Go matches keys case-insensitively and the later of two spellings wins, as Map.set does.
  const fields = new Map(Object.entries(data).map(([key, value]) => [key.toLowerCase(), value] as const));
  const publicKey = fields.get('publickey');
  const port = fields.get('port');
  const key = typeof publicKey === 'string' ? decodeWgKey(publicKey) : undefined;
  if (!key) {
    return { refused: `${field}.PublicKey is not the base64 of a 32-byte key: ${JSON.stringify(publicKey) ?? 'absent'}` };
  }
  // Go reads Port into a uint16; null leaves it at zero and anything else outside 0..65535 fails the whole decode.
  const given = port ?? 0;
  if (typeof given !== 'number' || !Number.isInteger(given) || given < 0 || given > 65535) {
    return { refused: `${field}.Port is not a port number (0..65535): ${JSON.stringify(port)}` };
  }
  return { publicKey: encodeWgKey(key), port: given || ownPort };
}
