/**
 * The VTEP MAC and the BackendData that publishes it ({"VNI":1,"VtepMAC":"0e:..."},
 * docs/compatibility.md#vxlan-backend). Peers read our BackendData with upstream's decoder, so the encoder keeps
 * upstream's shape and field types exactly; the decoder is as lenient as Go's (keys in any case, unknown keys ignored)
 * and yields a normalised MAC.
 */
import type { Random } from '../../flanneld/runtime/random.js';
import type { Mac } from '../datapath/datapath.js';
import { MAX_VNI } from './vxlan-config.js';

/** Exactly what upstream marshals (vxlanLeaseAttrs); field order matters for byte-equal lease values. */
export interface VxlanBackendDataJson {
  readonly VNI: number;
  readonly VtepMAC: string;
}

export interface VxlanBackendData {
  readonly vni: number;
  readonly mac: Mac;
}

/** Random, locally administered (bit 1 set) and unicast (bit 0 clear), as flannel's pkg/mac does. */
export function randomVtepMac(random: Random): Mac {
  const octets = Array.from({ length: 6 }, () => random.int(256));
  octets[0] = ((octets[0] ?? 0) & 0xfe) | 0x02;
  return octets.map((o) => o.toString(16).padStart(2, '0')).join(':');
}

// Go's net.ParseMAC also takes dotted and 8/20-octet forms; a VTEP MAC is always 6 octets.
const MAC_RE = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$/i;

/** Lower-case colon form of a 6-octet MAC written with `:` or `-` (one separator throughout), else undefined. */
export function normalizeMac(text: string): Mac | undefined {
  return MAC_RE.test(text) ? text.toLowerCase().replaceAll('-', ':') : undefined;
}

/**
 * Upstream declares the published VNI as uint16 and converts with uint16(VNI); an upstream peer fails to decode a
 * larger number and would skip this node entirely. So a VNI past 65535 is published truncated, as upstream does.
 */
export function encodeVxlanBackendData(vni: number, mac: Mac): VxlanBackendDataJson {
  return { VNI: vni & 0xffff, VtepMAC: mac };
}

/** Reads a peer's BackendData / BackendV6Data; undefined when it is not an object with a usable VtepMAC. */
export function decodeVxlanBackendData(data: unknown): VxlanBackendData | undefined {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
  let vniValue: unknown;
  let macValue: unknown;
  for (const [key, value] of Object.entries(data)) {
    const lower = key.toLowerCase();
    if (lower === 'vni') vniValue = value;
    else if (lower === 'vtepmac') macValue = value;
  }
  // Go leaves an absent or null VNI at zero; nothing on this side reads a peer's VNI, so only its type is checked.
  const vni = vniValue ?? 0;
  if (typeof vni !== 'number' || !Number.isInteger(vni) || vni < 0 || vni > MAX_VNI) return undefined;
  if (typeof macValue !== 'string') return undefined;
  const mac = normalizeMac(macValue);
  return mac === undefined ? undefined : { vni, mac };
}
