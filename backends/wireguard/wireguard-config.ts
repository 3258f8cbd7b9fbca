/**
 * The wireguard Backend block, keys as upstream reads them (case-insensitive, unknown keys ignored, null = not given),
 * and what it implies: the devices, their listen ports and MTU, and which family `auto` mode sends a peer's traffic
 * over. Values upstream would pass on unchecked (a port past 16 bits, an unknown Mode it fails on only later) are
 * refused here with the key and value named.
 */
import type { BackendConfig } from '../../flanneld/config/network-config-types.js';
import type { Family, IpAddress } from '../../flanneld/ip/address.js';
import { containsIp, parseCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import { ConfigError } from '../../flanneld/runtime/errors.js';
import { backendFields, intField, type IntKey } from '../backend-keys.js';
import { decodeWgKey, encodeWgKey } from './wg-key.js';

export type WireguardMode = 'separate' | 'auto' | 'ipv4' | 'ipv6';

export interface WireguardConfig {
  readonly listenPort: number;
  /** Used by the IPv6 device in `separate` mode only. */
  readonly listenPortV6: number;
  /** Underlay MTU override; 0 takes the external interface's. The device MTU is derived by `deviceMtu`. */
  readonly mtu: number;
  /** Preshared key for every peer (base64 of 32 bytes), absent when not configured. */
  readonly psk?: string;
  /** Seconds between keepalives to each peer; 0 sends none. */
  readonly persistentKeepaliveInterval: number;
  readonly mode: WireguardMode;
}

export interface WireguardDevice {
  readonly name: string;
  readonly listenPort: number;
}

export const DEFAULT_LISTEN_PORT = 51820;
export const DEFAULT_LISTEN_PORT_V6 = 51821;
export const WG_DEVICE = 'flannel-wg';
export const WG_DEVICE_V6 = 'flannel-wg-v6';
/** Outer IPv6 header (40, the larger of the two) + UDP (8) + WireGuard's type, index, nonce (16) and tag (16). */
export const WG_OVERHEAD = 80;

const MODES: readonly WireguardMode[] = ['separate', 'auto', 'ipv4', 'ipv6'];

// Port 0 would let the kernel pick one that peers cannot know.
const LISTEN_PORT_KEY: IntKey = { name: 'ListenPort', min: 1, max: 65535 };
const LISTEN_PORT_V6_KEY: IntKey = { name: 'ListenPortV6', min: 1, max: 65535 };
// Anything below 68 + 80 leaves a device too small to carry the smallest IPv4 packet.
const MTU_KEY: IntKey = { name: 'MTU', min: 68 + WG_OVERHEAD, max: 65535, sentinel: 0 };
// WireGuard keeps the interval as a 16-bit count of seconds.
const KEEPALIVE_KEY: IntKey = { name: 'PersistentKeepaliveInterval', min: 0, max: 65535 };

export function parseWireguardConfig(backend: BackendConfig): WireguardConfig {
  const fields = backendFields(backend);
  const psk = pskField(fields.get('psk'));
  return Object.freeze({
    listenPort: intField(fields, LISTEN_PORT_KEY, DEFAULT_LISTEN_PORT),
    listenPortV6: intField(fields, LISTEN_PORT_V6_KEY, DEFAULT_LISTEN_PORT_V6),
    mtu: intField(fields, MTU_KEY, 0),
    ...(psk === undefined ? {} : { psk }),
    persistentKeepaliveInterval: intField(fields, KEEPALIVE_KEY, 0),
    mode: modeField(fields.get('mode')),
  });
}

// Upstream compares Mode with its constants as written, so only the lower-case spellings are modes.
function modeField(value: unknown): WireguardMode {
  if (value === undefined || value === null) return 'separate';
  const mode = MODES.find((m) => m === value);
  if (mode === undefined) throw new ConfigError('Backend.Mode', value, `must be one of ${MODES.join(', ')}`);
  return mode;
}

// Upstream treats an empty PSK as none. The value is a secret, so an error shows only its size.
function pskField(value: unknown): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  const key = typeof value === 'string' ? decodeWgKey(value) : undefined;
  if (key) return encodeWgKey(key);
  const shown = typeof value === 'string' ? `${value.length} characters, not shown` : `a ${typeof value}, not shown`;
  throw new ConfigError('Backend.PSK', shown, 'must be the base64 of a 32-byte key, as `wg genpsk` prints it');
}

/** The MTU of every wireguard device: the configured or external interface's MTU less the tunnel's overhead. */
export function deviceMtu(config: WireguardConfig, externalMtu: number): number {
  return (config.mtu || externalMtu) - WG_OVERHEAD;
}

/**
 * The device carrying `family`'s overlay traffic. `separate` gives each family its own device and port, as upstream
 * does; the other modes put both families on `flannel-wg` listening on ListenPort (ListenPortV6 is unused there).
 */
export function deviceFor(config: WireguardConfig, family: Family): WireguardDevice {
  if (config.mode === 'separate' && family === 6) return { name: WG_DEVICE_V6, listenPort: config.listenPortV6 };
  return { name: WG_DEVICE, listenPort: config.listenPort };
}

/** The devices a node running `families` needs, each once. */
export function wireguardDevices(config: WireguardConfig, families: readonly Family[]): readonly WireguardDevice[] {
  const devices = new Map<string, WireguardDevice>();
  for (const family of families) {
    const device = deviceFor(config, family);
    devices.set(device.name, device);
  }
  return [...devices.values()];
}

export interface EndpointAddresses {
  readonly publicIP?: IpAddress;
  readonly publicIPv6?: IpAddress;
}

/**
 * The family of the endpoint a peer is reached at in a single-device mode. `ipv4` and `ipv6` say so; `auto` follows
 * upstream's selectMode, peer by peer: IPv4 when the peer has no IPv6 address, or a public (not RFC 1918) IPv4
 * address and this node has an IPv4 address; else IPv6 when both the peer's and this node's IPv6 addresses are
 * public (not RFC 4193 fc00::/7); else IPv4. In short: IPv4 wherever a public IPv4 path exists, IPv6 only when
 * both ends have public IPv6 and no public IPv4 path.
 */
export function endpointFamily(mode: WireguardMode, peer: EndpointAddresses, self: EndpointAddresses): Family {
  if (mode === 'ipv4' || mode === 'ipv6') return mode === 'ipv4' ? 4 : 6;
  if (!peer.publicIPv6) return 4;
  if (peer.publicIP && !isPrivate(peer.publicIP) && self.publicIP) return 4;
  if (!isPrivate(peer.publicIPv6) && self.publicIPv6 && !isPrivate(self.publicIPv6)) return 6;
  return 4;
}

// RFC 1918 and RFC 4193, the ranges upstream's IsPrivate checks.
const PRIVATE_NETS = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'].map((c) => parseCidr(c) as IpNet);

function isPrivate(addr: IpAddress): boolean {
  return PRIVATE_NETS.some((net) => containsIp(net, addr));
}
