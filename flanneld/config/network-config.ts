/**
 * net-conf.json / etcd `<prefix>/config`, decoded the way upstream's Go encoding/json does it (keys match
 * case-insensitively, the last duplicate wins, unknown keys are ignored, EnableIPv4 starts true), and upstream's
 * CheckNetworkConfig for etcd mode. Every failure is one ConfigError naming the upstream JSON key and the value.
 */
import { formatIp, ipAddress, parseIPv4, parseIPv6, type Family, type IpAddress } from '../ip/address.js';
import { blockSize, containsIp, formatCidr, mask, parseCidr, type IpNet } from '../ip/cidr.js';
import { ConfigError, errorMessage } from '../runtime/errors.js';
import type { AllocationRange, AllocationRanges, BackendConfig, NetworkConfig } from './network-config-types.js';

/** Backends flannel-ts can run; the rest of upstream's list (ipip, ipsec, ...) is rejected by name. */
export const KNOWN_BACKEND_TYPES: readonly string[] = Object.freeze(['vxlan', 'host-gw', 'udp', 'wireguard', 'alloc']);

/** Used when Backend is absent, as upstream's documentation says (upstream code falls back to udp). */
export const DEFAULT_BACKEND_TYPE = 'vxlan';

export interface ParsedNetworkConfig {
  readonly config: NetworkConfig;
  readonly warnings: string[];
}

const FIELDS = Object.freeze([
  'Network', 'IPv6Network', 'EnableIPv4', 'EnableIPv6', 'EnableNFTables', 'SubnetLen', 'SubnetMin', 'SubnetMax',
  'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax', 'Backend',
] as const);
type Field = (typeof FIELDS)[number];
type Fields = ReadonlyMap<Field, unknown>;
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export function parseNetworkConfig(text: string): ParsedNetworkConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    const shown = text.length > 80 ? `${text.slice(0, 80)}...` : text;
    throw new ConfigError('config', shown, `not valid JSON: ${errorMessage(err)}`, { cause: err });
  }
  if (!isObject(doc)) throw new ConfigError('config', doc, 'must be a JSON object');
  const warnings: string[] = [];
  const fields = matchFields(doc, warnings);

  const config: Mutable<NetworkConfig> = {
    enableIPv4: readBool(fields, 'EnableIPv4', true),
    enableIPv6: readBool(fields, 'EnableIPv6', false),
    enableNFTables: readBool(fields, 'EnableNFTables', false),
    backend: readBackend(fields, warnings),
  };
  if (!config.enableIPv4 && !config.enableIPv6) {
    // verbatim upstream: flannel main.go, the "none defined stack" ending
    throw new ConfigError('EnableIPv4', false, 'EnableIPv4 and EnableIPv6 are both false: none defined stack');
  }
  const network = readNet(fields, 'Network', 4);
  if (network) config.network = network;
  const subnetLen = readUint(fields, 'SubnetLen');
  if (subnetLen !== undefined) config.subnetLen = subnetLen;
  const subnetMin = readIp(fields, 'SubnetMin', 4);
  if (subnetMin) config.subnetMin = subnetMin;
  const subnetMax = readIp(fields, 'SubnetMax', 4);
  if (subnetMax) config.subnetMax = subnetMax;
  const ipv6Network = readNet(fields, 'IPv6Network', 6);
  if (ipv6Network) config.ipv6Network = ipv6Network;
  const ipv6SubnetLen = readUint(fields, 'IPv6SubnetLen');
  if (ipv6SubnetLen !== undefined) config.ipv6SubnetLen = ipv6SubnetLen;
  const ipv6SubnetMin = readIp(fields, 'IPv6SubnetMin', 6);
  if (ipv6SubnetMin) config.ipv6SubnetMin = ipv6SubnetMin;
  const ipv6SubnetMax = readIp(fields, 'IPv6SubnetMax', 6);
  if (ipv6SubnetMax) config.ipv6SubnetMax = ipv6SubnetMax;
  return { config: Object.freeze(config), warnings };
}

/** Upstream CheckNetworkConfig (etcd mode only): derives SubnetLen/Min/Max per enabled family and checks them. */
export function allocationRanges(config: NetworkConfig): AllocationRanges {
  if (!config.enableIPv4 && !config.enableIPv6) {
    // verbatim upstream: flannel main.go, the "none defined stack" ending
    throw new ConfigError('EnableIPv4', false, 'EnableIPv4 and EnableIPv6 are both false: none defined stack');
  }
  const ranges: Mutable<AllocationRanges> = {};
  if (config.enableIPv4) {
    ranges.v4 = familyRange(4, config.network, config.subnetLen, config.subnetMin, config.subnetMax);
  }
  if (config.enableIPv6) {
    ranges.v6 = familyRange(6, config.ipv6Network, config.ipv6SubnetLen, config.ipv6SubnetMin, config.ipv6SubnetMax);
  }
  return Object.freeze(ranges);
}

function familyRange(
  family: Family,
  network: IpNet | undefined,
  givenLen: number | undefined,
  givenMin: IpAddress | undefined,
  givenMax: IpAddress | undefined,
): AllocationRange {
  const bits = family === 4 ? 32 : 128;
  const p = family === 4 ? '' : 'IPv6';
  const [netKey, lenKey, minKey, maxKey] = [`${p}Network`, `${p}SubnetLen`, `${p}SubnetMin`, `${p}SubnetMax`];
  // Go's zero IP4Net (0.0.0.0/0) counts as "not set"; IPv6 gets the same treatment.
  if (!network || (network.ip === 0n && network.prefixLen === 0)) {
    // verbatim upstream: flannel pkg/subnet/config.go CheckNetworkConfig
    const reason = `please define a correct ${netKey} parameter in the flannel config`;
    throw new ConfigError(netKey, network && formatCidr(network), reason);
  }
  let subnetLen: number;
  if (givenLen !== undefined && givenLen > 0) {
    // Each host needs room for a tunnel and a bridge address, and the first subnet is never handed out.
    // verbatim upstream: flannel pkg/subnet/config.go CheckNetworkConfig (also for IPv6SubnetLen)
    if (givenLen > bits - 2) throw new ConfigError(lenKey, givenLen, `SubnetLen must be less than /${bits - 1}`);
    if (givenLen < network.prefixLen + 2) {
      // verbatim upstream: flannel pkg/subnet/config.go CheckNetworkConfig
      throw new ConfigError(lenKey, givenLen, 'network must be able to accommodate at least four subnets');
    }
    subnetLen = givenLen;
  } else {
    const defaultLen = family === 4 ? 24 : 64;
    if (network.prefixLen > bits - 4) {
      const what = family === 4 ? 'network' : 'IPv6Network';
      // verbatim upstream: flannel pkg/subnet/config.go CheckNetworkConfig
      const reason = `${what} is too small. Minimum useful network prefix is /${bits - 4}`;
      throw new ConfigError(netKey, formatCidr(network), reason);
    }
    subnetLen = network.prefixLen <= defaultLen - 2 ? defaultLen : network.prefixLen + 2;
  }
  const size = blockSize(family, subnetLen);
  const endOfNetwork = network.ip + blockSize(family, network.prefixLen);
  const inNetwork = (key: string, addr: IpAddress | undefined, fallback: bigint): IpAddress => {
    if (!addr) return ipAddress(family, fallback);
    if (containsIp(network, addr)) return addr;
    // verbatim upstream: flannel pkg/subnet/config.go CheckNetworkConfig
    throw new ConfigError(key, formatIp(addr), `${key} is not in the range of the ${netKey}`);
  };
  // The first subnet is skipped: its network address would collide with the overlay's own.
  const subnetMin = inNetwork(minKey, givenMin, network.ip + size);
  const subnetMax = inNetwork(maxKey, givenMax, endOfNetwork - size);
  for (const [key, addr] of [[minKey, subnetMin], [maxKey, subnetMax]] as const) {
    if ((addr.value & mask(family, subnetLen)) !== addr.value) {
      // verbatim upstream: flannel pkg/subnet/config.go CheckNetworkConfig
      throw new ConfigError(key, formatIp(addr), `${key} is not on a SubnetLen boundary: ${formatIp(addr)}`);
    }
  }
  // Not checked upstream, where an inverted range silently leaves nothing to allocate.
  if (subnetMin.value > subnetMax.value) {
    throw new ConfigError(minKey, formatIp(subnetMin), `${minKey} is greater than ${maxKey} ${formatIp(subnetMax)}`);
  }
  return Object.freeze({ network, subnetLen, subnetMin, subnetMax });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Go's case folding for struct field names; U+017F (long s) and U+212A (Kelvin) fold to ASCII there too. */
function fold(key: string): string {
  return key.replace(/\u017f/g, 's').toLowerCase();
}

function matchFields(doc: Record<string, unknown>, warnings: string[]): Fields {
  const byFolded = new Map<string, Field>(FIELDS.map((f) => [fold(f), f]));
  const fields = new Map<Field, unknown>();
  for (const [key, value] of Object.entries(doc)) {
    const field = byFolded.get(fold(key));
    if (field) fields.set(field, value);
    else warnings.push(`network config: unknown key ${JSON.stringify(key)} ignored`);
  }
  return fields;
}

/** JSON null leaves a Go bool or uint at its default, so it does here. */
function readBool(fields: Fields, key: Field, fallback: boolean): boolean {
  const v = fields.get(key);
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw new ConfigError(key, v, 'must be true or false');
  return v;
}

/** Go uint; 0 is upstream's "not set", so it is returned as undefined. */
function readUint(fields: Fields, key: Field): number | undefined {
  const v = fields.get(key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new ConfigError(key, v, 'must be a non-negative integer');
  }
  return v === 0 ? undefined : v;
}

/** Upstream's IP4Net/IP6Net decoders reject anything but a CIDR string, null included; host bits are masked off. */
function readNet(fields: Fields, key: Field, family: Family): IpNet | undefined {
  const v = fields.get(key);
  if (v === undefined) return undefined;
  const net = typeof v === 'string' ? parseCidr(v) : undefined;
  if (!net || net.family !== family) throw new ConfigError(key, v, `invalid IPv${family} CIDR format`);
  return net;
}

/**
 * The all-zero address is upstream's "not set" for both families. Upstream keeps the IPv6 ones behind a pointer,
 * so there null means "not set" as well, while the IPv4 decoder rejects null.
 */
function readIp(fields: Fields, key: Field, family: Family): IpAddress | undefined {
  const v = fields.get(key);
  if (v === undefined || (v === null && family === 6)) return undefined;
  const addr = typeof v === 'string' ? (family === 4 ? parseIPv4(v) : parseIPv6(v)) : undefined;
  if (!addr) throw new ConfigError(key, v, `must be an IPv${family} address`);
  return addr.value === 0n ? undefined : addr;
}

function readBackend(fields: Fields, warnings: string[]): BackendConfig {
  if (!fields.has('Backend')) {
    warnings.push(
      `network config: Backend not set; using the default backend type "${DEFAULT_BACKEND_TYPE}" ` +
        '(upstream flanneld code would fall back to "udp")',
    );
    return Object.freeze({ type: DEFAULT_BACKEND_TYPE, raw: Object.freeze({}) });
  }
  const block = fields.get('Backend');
  // Go decodes a null Backend into an empty struct, so it fails below as "no Type" rather than here.
  const raw = block === null ? {} : block;
  if (!isObject(raw)) {
    // verbatim upstream: flannel pkg/subnet/config.go, the "error decoding Backend property of config:" prefix
    throw new ConfigError('Backend', block, 'error decoding Backend property of config: must be a JSON object');
  }
  let type: unknown;
  for (const [key, value] of Object.entries(raw)) if (fold(key) === 'type') type = value;
  const known = KNOWN_BACKEND_TYPES.join(', ');
  if (type === undefined || type === null || type === '') {
    throw new ConfigError('Backend.Type', type, `Backend has no Type; known types: ${known}`);
  }
  if (typeof type !== 'string') throw new ConfigError('Backend.Type', type, 'must be a string');
  const lower = type.toLowerCase();
  if (!KNOWN_BACKEND_TYPES.includes(lower)) {
    // verbatim upstream: flannel pkg/backend/manager.go, the "unknown backend type:" prefix
    throw new ConfigError('Backend.Type', type, `unknown backend type: ${lower} (known types: ${known})`);
  }
  return Object.freeze({ type: lower, raw: deepFreeze(raw) });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
