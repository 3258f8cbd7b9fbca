/**
 * Who may read what on the health port. /metrics and /status list every peer's subnet and public IP (/status also
 * VTEP MACs and lease times): a map of the cluster's underlay that the port, bound to 0.0.0.0 like upstream's,
 * would otherwise hand to anything that reaches the node, pods included. So they answer only clients on this host
 * unless --metrics-allow-from lists more. /healthz and /readyz carry nothing of the kind and answer everyone:
 * the kubelet probes a hostNetwork pod at the node's address, and Kubernetes decides where it probes from.
 *
 * "On this host" is judged from the connection: a loopback peer, or a peer whose address is the very address it
 * connected to. The kernel itself picks that source for a connection from this host to one of its own addresses
 * (`flanneld status --healthz-ip=<node IP>`, a hostNetwork scraper). From elsewhere such a source is spoofed:
 * IPv4 drops it on arrival as a martian, and in either family our SYN-ACK goes to ourselves, so a spoofer never
 * completes the handshake.
 */
import { bitsOf, formatIp, ipAddress, parseIp, sameIp, type IpAddress } from '../ip/address.js';
import { containsIp, formatCidr, parseCidr, type IpNet } from '../ip/cidr.js';

/** Paths that reveal peers; everything else the server answers is open to every client. */
export const RESTRICTED_PATHS: readonly string[] = Object.freeze(['/metrics', '/status']);

/** The option an operator changes to let more clients in, as a refusal names it. */
export const ALLOW_OPTION = '--metrics-allow-from (FLANNELD_METRICS_ALLOW_FROM)';

const LOOPBACK: readonly IpNet[] = Object.freeze([parseCidr('127.0.0.0/8'), parseCidr('::1/128')].filter((n): n is IpNet => n !== undefined));
const MAPPED_PREFIX = 0xffffn;

/**
 * A socket's address as Node reports it ("10.0.0.1", "::ffff:10.0.0.1" on a dual-stack listener, "fe80::1%eth0"),
 * with IPv4-mapped IPv6 turned back into IPv4 so one allow-list entry covers both listeners; undefined when absent.
 */
export function socketAddress(text: string | undefined): IpAddress | undefined {
  if (text === undefined) return undefined;
  const addr = parseIp(text.split('%')[0] as string);
  if (addr?.family === 6 && addr.value >> 32n === MAPPED_PREFIX) return ipAddress(4, addr.value & 0xffffffffn);
  return addr;
}

export type ClientKind = 'this-host' | 'allowed' | 'refused';

/** How a client counts for the restricted paths, from the two ends of its connection. */
export function classifyClient(remote: string | undefined, local: string | undefined, allowFrom: readonly IpNet[]): ClientKind {
  const client = socketAddress(remote);
  if (!client) return 'refused';
  if (LOOPBACK.some((net) => containsIp(net, client)) || sameIp(client, socketAddress(local))) return 'this-host';
  return allowFrom.some((net) => containsIp(net, client)) ? 'allowed' : 'refused';
}

/** The one-line 403 body: what was refused, to whom, and the option that would allow it. */
export function refusalText(path: string, remote: string | undefined): string {
  const client = socketAddress(remote);
  return `${path} is not served to ${client ? formatIp(client) : 'this client'}: only to this host and to clients in ${ALLOW_OPTION}\n`;
}

/** Who reads the restricted paths, for the start-up log line: "this host" or "this host and 10.0.0.0/8, ...". */
export function describeAudience(allowFrom: readonly IpNet[]): string {
  const shown = allowFrom.map((net) => (net.prefixLen === bitsOf(net.family) ? formatIp(ipAddress(net.family, net.ip)) : formatCidr(net)));
  return shown.length === 0 ? 'this host only' : `this host and ${shown.join(', ')}`;
}
