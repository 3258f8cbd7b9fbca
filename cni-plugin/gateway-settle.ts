/**
 * ADD returns once the pod's IPv6 gateways can be used. The bridge delegate waits for DAD on the pod's side only;
 * the gateway address it puts on the host bridge (cni0) stays "tentative" until the bridge's own DAD is done, and a
 * tentative address answers no neighbour solicitation. With Debian's bridge 1.1.1 that is about 1.7 s after the first
 * pod of a node gives cni0 a carrier: that pod could reach nothing over IPv6 (its default route goes via the gateway)
 * for that long. Later pods find the gateway settled and do not wait; IPv4-only results never read anything.
 * The plugin runs in the host namespace, so /proc/net/if_inet6 lists exactly the host's addresses.
 */
import { readFileSync } from 'node:fs';
import { formatIp, ipAddress, parseIPv6 } from '../flanneld/ip/address.js';
import { isObject, type JsonObject } from './netconf.js';
import { CniCode, CniError } from './protocol.js';

/** include/uapi/linux/if_addr.h; /proc/net/if_inet6 prints the low 8 bits of the flags. */
const IFA_F_TENTATIVE = 0x40;
const IFA_F_DADFAILED = 0x08;
/** As long as the bridge plugin gives the pod's side (ip.SettleAddresses(ifName, 10)). */
const SETTLE_TIMEOUT_MS = 10_000;
const POLL_MS = 50;

export interface HostAddress {
  readonly device: string;
  readonly flags: number;
}

/** /proc/net/if_inet6 ("<32 hex> <ifindex> <plen> <scope> <flags> <dev>" a line), keyed by the 32 hex digits. */
export function parseIfInet6(text: string): Map<string, HostAddress> {
  const out = new Map<string, HostAddress>();
  for (const line of text.split('\n')) {
    const [addr, , , , flags, device] = line.trim().split(/\s+/);
    if (addr && /^[0-9a-f]{32}$/.test(addr) && flags && device) out.set(addr, { device, flags: parseInt(flags, 16) });
  }
  return out;
}

/** The IPv6 gateways of a delegate's ADD result, as parseIfInet6 keys them. */
export function ipv6Gateways(result: JsonObject): string[] {
  const ips = Array.isArray(result['ips']) ? (result['ips'] as unknown[]).filter(isObject) : [];
  const keys = ips
    .map((ip) => (typeof ip['gateway'] === 'string' ? parseIPv6(ip['gateway']) : undefined))
    .filter((a) => a !== undefined)
    .map((a) => a.value.toString(16).padStart(32, '0'));
  return [...new Set(keys)];
}

export interface SettleOptions {
  readonly timeoutMs?: number;
  readonly pollMs?: number;
  /** The text of /proc/net/if_inet6 (tests give their own). */
  readonly read?: () => Promise<string>;
}

/**
 * Waits while any IPv6 gateway of `result` is a tentative address of this host. A gateway this host does not hold
 * (another delegate, isGateway false) is not waited for; after the timeout ADD goes on, since the address may still
 * settle and the result is right either way. A gateway whose DAD failed will never carry traffic: that is an error.
 */
export async function settleGateways(result: JsonObject, opts: SettleOptions = {}): Promise<void> {
  const gateways = ipv6Gateways(result);
  if (gateways.length === 0) return;
  const read = opts.read ?? (async () => readFileSync('/proc/net/if_inet6', 'utf8'));
  const deadline = Date.now() + (opts.timeoutMs ?? SETTLE_TIMEOUT_MS);
  for (;;) {
    let host: Map<string, HostAddress>;
    try {
      host = parseIfInet6(await read());
    } catch {
      return; // no IPv6 on this host: nothing can be tentative
    }
    let pending = false;
    for (const gw of gateways) {
      const addr = host.get(gw);
      if (!addr) continue;
      if (addr.flags & IFA_F_DADFAILED) {
        throw new CniError(
          CniCode.Internal,
          `the pod's IPv6 gateway ${formatIp(ipAddress(6, BigInt(`0x${gw}`)))} on ${addr.device} failed duplicate address detection (another host on ${addr.device} holds it), so the pod has no IPv6 gateway`,
        );
      }
      if (addr.flags & IFA_F_TENTATIVE) pending = true;
    }
    if (!pending || Date.now() >= deadline) return;
    await new Promise((r) => setTimeout(r, opts.pollMs ?? POLL_MS));
  }
}

