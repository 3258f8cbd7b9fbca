/**
 * The one table of flanneld options: upstream names, defaults and help text (flannel main.go), plus the
 * flannel-ts additions (--datapath-resync, --peer-probe-interval, --metrics-allow-from, --wireguard-implementation, --bgp-*). options.ts turns it into a convict schema, the argv scanner's shapes, the FLANNELD_* env
 * names and the --help text, so adding or activating an option is a one-line change here.
 */
import { bitsOf, parseIPv4, parseIPv6, parseIp } from '../ip/address.js';
import { ipNet, parseCidr, type IpNet } from '../ip/cidr.js';

interface SpecBase {
  /** Command-line name, without dashes. */
  readonly flag: string;
  /** One-line description for --help. */
  readonly doc: string;
  /** Reason given when a value is malformed or out of range; defaults per type (see reasonFor). */
  readonly expect?: string;
  /** Marked sensitive in the convict schema, so convict's toString masks it. */
  readonly sensitive?: boolean;
}

export type OptionSpec =
  | (SpecBase & { readonly type: 'string'; readonly default: string; readonly valid?: (s: string) => boolean })
  | (SpecBase & { readonly type: 'int'; readonly default: number; readonly valid?: (n: number) => boolean })
  | (SpecBase & { readonly type: 'bool'; readonly default: boolean })
  | (SpecBase & {
      readonly type: 'list';
      readonly default: readonly string[];
      /** Whether FLANNELD_<NAME> holds a comma-separated list rather than one entry. */
      readonly envSplit: boolean;
      /** Checked per entry. */
      readonly valid?: (s: string) => boolean;
    });

/** The reason a value of this option is rejected, naming what would be accepted. */
export function reasonFor(spec: OptionSpec): string {
  if (spec.expect !== undefined) return spec.expect;
  switch (spec.type) {
    case 'bool':
      return 'must be a boolean (true, false, 1, 0, t or f)';
    case 'int':
      return 'must be an integer';
    default:
      return 'is not valid';
  }
}

export type OptionValue = string | number | boolean | readonly string[];

type Extra = Partial<Pick<SpecBase, 'expect' | 'sensitive'>>;
type Check<T> = ((value: T) => boolean) | undefined;

// Builders keep the table one option per entry and freeze each spec, so the table is a value, not state.
const str = (flag: string, dflt: string, doc: string, valid?: Check<string>, extra: Extra = {}): OptionSpec =>
  Object.freeze({ flag, type: 'string', default: dflt, doc, ...(valid ? { valid } : {}), ...extra });
const int = (flag: string, dflt: number, doc: string, valid: Check<number>, expect: string): OptionSpec =>
  Object.freeze({ flag, type: 'int', default: dflt, doc, expect, ...(valid ? { valid } : {}) });
const bool = (flag: string, dflt: boolean, doc: string): OptionSpec =>
  Object.freeze({ flag, type: 'bool', default: dflt, doc });
const list = (flag: string, envSplit: boolean, doc: string, valid: (s: string) => boolean, expect: string) =>
  Object.freeze({ flag, type: 'list', default: Object.freeze([]), envSplit, doc, valid, expect }) satisfies OptionSpec;

const orEmpty = (parse: (s: string) => unknown) => (s: string) => s === '' || parse(s) !== undefined;
const between = (min: number, max: number) => (n: number) => n >= min && n <= max;
const anIp = 'must be an IP address';

export const OPTION_SPECS: readonly OptionSpec[] = Object.freeze([
  str('etcd-endpoints', 'http://127.0.0.1:4001,http://127.0.0.1:2379', 'a comma-delimited list of etcd endpoints',
    (s) => splitList(s).length > 0, { expect: 'must list at least one etcd URL' }),
  str('etcd-prefix', '/coreos.com/network', 'etcd prefix'),
  str('etcd-keyfile', '', 'SSL key file used to secure etcd communication'),
  str('etcd-certfile', '', 'SSL certification file used to secure etcd communication'),
  str('etcd-cafile', '', 'SSL Certificate Authority file used to secure etcd communication'),
  str('etcd-username', '', 'username for BasicAuth to etcd'),
  str('etcd-password', '', 'password for BasicAuth to etcd', undefined, { sensitive: true }),
  list('iface', true, 'interface to use (IP or name) for inter-host communication; the first match wins',
    (s) => s !== '', 'must be an interface name or IP address'),
  list('iface-regex', false, 'regex matched against interface IPs, then names; tried after --iface',
    (s) => compileIfaceRegex(s) !== undefined, 'must be a valid regular expression'),
  str('iface-can-reach', '', "use the interface (and source IP) the kernel would use to reach this IP ('ip route get')",
    orEmpty(parseIp), { expect: anIp }),
  str('subnet-file', '/run/flannel/subnet.env', 'filename where env variables (subnet, MTU, ... ) will be written to'),
  str('public-ip', '', 'IP accessible by other nodes for inter-host communication', orEmpty(parseIPv4),
    { expect: 'must be an IPv4 address' }),
  str('public-ipv6', '', 'IPv6 accessible by other nodes for inter-host communication', orEmpty(parseIPv6),
    { expect: 'must be an IPv6 address' }),
  int('subnet-lease-renew-margin', 60, 'subnet lease renewal margin, in minutes, ranging from 1 to 1439',
    // verbatim upstream: flannel main.go, the "out of acceptable range" opening
    between(1, 1439), 'out of acceptable range: must be an integer from 1 to 1439 (minutes)'),
  bool('ip-masq', false, 'setup IP masquerade rule for traffic destined outside of overlay network'),
  bool('ip-masq-fully-random-disable', false, 'do not add --random-fully to the MASQUERADE rules'),
  list('ip-masq-exclude', true,
    'destinations outside the overlay that pods reach with their own address (networks that route pod subnets back, as BGP routers do): ' +
    'CIDRs or IPs, comma-separated or repeated; only with --ip-masq',
    (s) => parseNetList(s) !== undefined, 'must be CIDRs or IP addresses, comma-separated'),
  bool('kube-subnet-mgr', false, 'contact the Kubernetes API for subnet assignment instead of etcd'),
  str('kube-api-url', '', 'Kubernetes API server URL; not needed when flanneld runs in a pod'),
  str('kube-annotation-prefix', 'flannel.alpha.coreos.com',
    'Kubernetes annotation prefix; may contain one "/", otherwise one is appended'),
  str('kubeconfig-file', '', 'kubeconfig file location; not needed when flanneld runs in a pod'),
  bool('version', false, 'print version and exit'),
  str('healthz-ip', '0.0.0.0', 'the IP address for healthz server to listen', (s) => parseIp(s) !== undefined,
    { expect: anIp }),
  int('healthz-port', 0, 'the port for healthz server to listen (0 to disable)', between(0, 65535),
    'must be a port number from 0 to 65535'),
  // /metrics and /status list every peer's address, so only this host reads them unless the operator says more;
  // /healthz and /readyz stay open to all, as the kubelet probes a hostNetwork pod at the node's address.
  list('metrics-allow-from', true,
    'clients besides this host that may read /metrics and /status: CIDRs or IPs, comma-separated or repeated ' +
    '(0.0.0.0/0,::/0 for any); /healthz and /readyz answer every client',
    (s) => parseNetList(s) !== undefined, 'must be CIDRs or IP addresses, comma-separated (0.0.0.0/0,::/0 for any client)'),
  int('iptables-resync', 5, 'resync period for iptables rules, in seconds', (n) => n >= 1,
    'must be a positive integer'),
  bool('iptables-forward-rules', true, 'add default accept rules to FORWARD chain in iptables'),
  bool('ip-blackhole-route', false, "keep a blackhole route for the node's own pod subnet"),
  str('net-config-path', '/etc/kube-flannel/net-conf.json', 'path to the network configuration file (kube mode)'),
  bool('set-node-network-unavailable', true, 'set NodeNetworkUnavailable after ready (kube mode)'),
  int('datapath-resync', 60, 'seconds between checks that devices, routes and neighbours still match the leases',
    (n) => n >= 1, 'must be a positive integer'),
  list('bgp-peers', true,
    'routers to announce this node\'s pod subnets to over BGP: ADDRESS;as=AS[;password=KEY][;ttl=N], comma-separated or repeated',
    (s) => s.trim() !== '', 'must be ADDRESS;as=AS[;password=KEY][;ttl=N]'),
  int('bgp-as', 0, 'this node\'s AS number for BGP (0: no BGP); the same as a router\'s makes that session iBGP',
    between(0, 0xffffffff), 'must be an AS number from 0 to 4294967295'),
  int('bgp-graceful-restart-time', 120, 'seconds a router keeps our routes while flanneld restarts (BGP graceful restart; 0 disables it)',
    between(0, 4095), 'must be an integer from 0 to 4095 (seconds)'),
  str('wireguard-implementation', 'auto',
    'where the wireguard backend runs its devices: auto (the kernel when it has WireGuard, else wireguard-go), kernel or userspace',
    (s) => ['auto', 'kernel', 'userspace'].includes(s), { expect: 'must be auto, kernel or userspace' }),
  int('peer-probe-interval', 30, 'seconds between reachability probes of peers (0 disables)', (n) => n >= 0,
    'must be a non-negative integer'),
  int('v', 0, 'number for the log level verbosity', undefined, 'must be an integer'),
  str('vmodule', '', 'comma-separated list of pattern=N settings for file-filtered logging'),
  str('log_backtrace_at', '', 'when logging hits line file:N, emit a stack trace'),
]);

/**
 * Options accepted for compatibility whose behaviour has not been built yet. Setting one gives a warning; the
 * change that implements an option deletes it from this list (and nothing else changes).
 */
export const NOT_YET_ACTIVE: readonly string[] = Object.freeze([
  'vmodule', 'log_backtrace_at',
]);

/** Flags read only from the command line: upstream checks --version before applying the environment. */
export const COMMAND_LINE_ONLY: readonly string[] = Object.freeze(['version']);

/** FLANNELD_ + the flag upper-cased with "-" and "." as "_" (coreos/pkg flagutil.SetFlagsFromEnv). */
export function envNameOf(flag: string): string {
  return `FLANNELD_${flag.toUpperCase().replace(/[-.]/g, '_')}`;
}

/** "ip-masq-fully-random-disable" -> "ipMasqFullyRandomDisable", "log_backtrace_at" -> "logBacktraceAt". */
export function keyOf(flag: string): string {
  return flag.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Comma list with blanks dropped: FLANNELD_IFACE="eth0, eth1" and etcd endpoint lists. */
export function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * Compiles an --iface-regex. Go's RE2 syntax puts flags in a leading group such as `(?i)`, which JS spells as
 * RegExp flags, so that group is translated; undefined when the pattern does not compile.
 */
export function compileIfaceRegex(source: string): RegExp | undefined {
  const m = /^\(\?([ims]+)\)/.exec(source);
  try {
    return m ? new RegExp(source.slice(m[0].length), m[1]) : new RegExp(source);
  } catch {
    return undefined;
  }
}

/**
 * One --metrics-allow-from or --ip-masq-exclude entry: a comma list of CIDRs (host bits masked, as Go's net.ParseCIDR) or bare addresses
 * (one host each); undefined when it is empty or any part is neither. The flag takes commas as well as repeats,
 * because a manifest writer puts a list in one argument as readily as in several.
 */
export function parseNetList(text: string): IpNet[] | undefined {
  const parts = splitList(text);
  const nets = parts.map((part) => {
    if (part.includes('/')) return parseCidr(part);
    const addr = parseIp(part);
    return addr && ipNet(addr.family, addr.value, bitsOf(addr.family));
  });
  return nets.length > 0 && nets.every((n): n is IpNet => n !== undefined) ? nets : undefined;
}
