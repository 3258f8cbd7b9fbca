/**
 * The flanneld command line as upstream users know it: Go flag rules (argv.ts), then FLANNELD_* for every option
 * not given on the command line, then one convict validation of the merged values. Pure: argv and env come in, a
 * LoadResult goes out, and main.ts does the printing and exiting. Every error names the flag or variable and value.
 */
import { parseIp, type IpAddress } from '../ip/address.js';
import type { IpNet } from '../ip/cidr.js';
import { ConfigError } from '../runtime/errors.js';
import { parseGoBool, parseGoInt, scanGoFlags, type FlagShape } from './argv.js';
import { renderHelp } from './options-help.js';
import { validateOptions, type Given } from './options-schema.js';
import {
  COMMAND_LINE_ONLY,
  NOT_YET_ACTIVE,
  OPTION_SPECS,
  envNameOf,
  keyOf,
  parseNetList,
  reasonFor,
  splitList,
  type OptionSpec,
  type OptionValue,
} from './option-specs.js';

/** Every flanneld option after defaults, environment and validation; names follow the flags. */
export interface FlanneldOptions {
  readonly etcdEndpoints: readonly string[];
  readonly etcdPrefix: string;
  readonly etcdKeyfile: string;
  readonly etcdCertfile: string;
  readonly etcdCafile: string;
  readonly etcdUsername: string;
  readonly etcdPassword: string;
  readonly iface: readonly string[];
  /** Go RE2 sources, already known to compile with compileIfaceRegex. */
  readonly ifaceRegex: readonly string[];
  readonly ifaceCanReach: IpAddress | undefined;
  readonly subnetFile: string;
  readonly publicIp: IpAddress | undefined;
  readonly publicIpv6: IpAddress | undefined;
  /** Minutes, 1..1439. */
  readonly subnetLeaseRenewMargin: number;
  readonly ipMasq: boolean;
  readonly ipMasqFullyRandomDisable: boolean;
  readonly kubeSubnetMgr: boolean;
  readonly kubeApiUrl: string;
  readonly kubeAnnotationPrefix: string;
  readonly kubeconfigFile: string;
  readonly healthzIp: IpAddress;
  /** 0 disables the health server. */
  readonly healthzPort: number;
  /** Clients besides this host that may read /metrics and /status; empty: this host only. */
  readonly metricsAllowFrom: readonly IpNet[];
  /** Destinations pods reach unmasqueraded (routers know the pod subnets, e.g. from BGP). */
  readonly ipMasqExclude: readonly IpNet[];
  /** Seconds, >= 1. */
  readonly iptablesResync: number;
  readonly iptablesForwardRules: boolean;
  readonly ipBlackholeRoute: boolean;
  readonly netConfigPath: string;
  readonly setNodeNetworkUnavailable: boolean;
  /** klog-style verbosity. */
  readonly v: number;
  readonly vmodule: string;
  readonly logBacktraceAt: string;
  /** Seconds, >= 1. */
  readonly datapathResync: number;
  /** Seconds; 0 disables peer probing. */
  readonly peerProbeInterval: number;
  readonly wireguardImplementation: 'auto' | 'kernel' | 'userspace';
  /** Raw --bgp-peers entries; flanneld/bgp/bgp-peers.ts reads them, leaving bad ones out with a log line. */
  readonly bgpPeers: readonly string[];
  /** 0 when BGP is off. */
  readonly bgpAs: number;
  readonly bgpGracefulRestartTime: number;
}

export type LoadResult =
  | { readonly kind: 'run'; readonly options: FlanneldOptions; readonly warnings: readonly string[] }
  | { readonly kind: 'help'; readonly text: string }
  | { readonly kind: 'version' }
  | { readonly kind: 'error'; readonly message: string; readonly usage: string };

export function loadOptions(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): LoadResult {
  const fail = (message: string): LoadResult => ({ kind: 'error', message, usage: renderHelp() });
  const given = new Map<OptionSpec, Given>();

  // Values are set in command-line order, as Go's FlagSet does, so the first bad argument is the one reported.
  const scan = scanGoFlags(argv, shapeOf);
  for (const raw of scan.flags) {
    const spec = specOf(raw.name);
    if (!spec) return fail(`flag provided but not defined: --${raw.name}`);
    const label = `--${spec.flag}`;
    const value = fromText(spec, raw.value ?? 'true', given.get(spec)?.value, false);
    if (value === undefined) return fail(new ConfigError(label, raw.value, reasonFor(spec)).message);
    given.set(spec, { value, label, text: raw.value });
  }
  if (scan.stop?.kind === 'help') return { kind: 'help', text: renderHelp() };
  if (scan.stop) return fail(scan.stop.message);
  // Upstream checks --version before it reads the environment, so FLANNELD_VERSION cannot trigger it.
  if ([...given].some(([spec, g]) => spec.flag === 'version' && g.value === true)) return { kind: 'version' };

  for (const spec of OPTION_SPECS) {
    if (given.has(spec) || COMMAND_LINE_ONLY.includes(spec.flag)) continue;
    const name = envNameOf(spec.flag);
    const text = env[name];
    if (text === undefined || text === '') continue;
    const value = fromText(spec, text, undefined, true);
    if (value === undefined) return fail(new ConfigError(name, text, reasonFor(spec)).message);
    given.set(spec, { value, label: name, text });
  }

  const checked = validateOptions(given);
  if (typeof checked === 'string') return fail(checked);
  const options = toOptions(checked);
  const conflict = crossOptionProblem(options);
  if (conflict) return fail(conflict);
  return { kind: 'run', options, warnings: Object.freeze(warningsFor(given, env, options)) };
}

/** What no single option's check can see; only BGP has such a rule so far. */
function crossOptionProblem(options: FlanneldOptions): string | undefined {
  if (options.bgpPeers.length > 0 && options.bgpAs === 0) {
    return new ConfigError('--bgp-as', 0, "must name this node's AS (1..4294967295) when --bgp-peers lists routers").message;
  }
  return undefined;
}

function specOf(flag: string): OptionSpec | undefined {
  return OPTION_SPECS.find((s) => s.flag === flag);
}

function shapeOf(flag: string): FlagShape | undefined {
  const spec = specOf(flag);
  return spec && (spec.type === 'bool' ? 'bool' : 'value');
}

/** Go's flag.Value.Set for each type: text to typed value, or undefined when the text does not parse. */
function fromText(spec: OptionSpec, text: string, previous: OptionValue | undefined, fromEnv: boolean) {
  switch (spec.type) {
    case 'string':
      return text;
    case 'bool':
      return parseGoBool(text);
    case 'int':
      return parseGoInt(text);
    case 'list': {
      if (fromEnv) return Object.freeze(spec.envSplit ? splitList(text) : [text]);
      return Object.freeze([...(typeof previous === 'object' ? previous : []), text]);
    }
  }
}

function toOptions(props: Readonly<Record<string, unknown>>): FlanneldOptions {
  const get = (flag: string): unknown => props[keyOf(flag)];
  const str = (flag: string): string => {
    const v = get(flag);
    if (typeof v !== 'string') throw new TypeError(`option --${flag} is not a string after validation`);
    return v;
  };
  const int = (flag: string): number => {
    const v = get(flag);
    if (typeof v !== 'number') throw new TypeError(`option --${flag} is not a number after validation`);
    return v;
  };
  const bool = (flag: string): boolean => get(flag) === true;
  const list = (flag: string): readonly string[] => {
    const v = get(flag);
    return Object.freeze(Array.isArray(v) ? v.filter((e): e is string => typeof e === 'string') : []);
  };
  const ip = (flag: string): IpAddress | undefined => (str(flag) === '' ? undefined : parseIp(str(flag)));
  const healthzIp = ip('healthz-ip');
  if (!healthzIp) throw new TypeError('option --healthz-ip is not an IP address after validation');
  return Object.freeze({
    etcdEndpoints: Object.freeze(splitList(str('etcd-endpoints'))),
    etcdPrefix: str('etcd-prefix'),
    etcdKeyfile: str('etcd-keyfile'),
    etcdCertfile: str('etcd-certfile'),
    etcdCafile: str('etcd-cafile'),
    etcdUsername: str('etcd-username'),
    etcdPassword: str('etcd-password'),
    iface: list('iface'),
    ifaceRegex: list('iface-regex'),
    ifaceCanReach: ip('iface-can-reach'),
    subnetFile: str('subnet-file'),
    publicIp: ip('public-ip'),
    publicIpv6: ip('public-ipv6'),
    subnetLeaseRenewMargin: int('subnet-lease-renew-margin'),
    ipMasq: bool('ip-masq'),
    ipMasqFullyRandomDisable: bool('ip-masq-fully-random-disable'),
    kubeSubnetMgr: bool('kube-subnet-mgr'),
    kubeApiUrl: str('kube-api-url'),
    kubeAnnotationPrefix: str('kube-annotation-prefix'),
    kubeconfigFile: str('kubeconfig-file'),
    healthzIp,
    healthzPort: int('healthz-port'),
    metricsAllowFrom: Object.freeze(list('metrics-allow-from').flatMap((entry) => parseNetList(entry) ?? [])),
    ipMasqExclude: Object.freeze(list('ip-masq-exclude').flatMap((entry) => parseNetList(entry) ?? [])),
    iptablesResync: int('iptables-resync'),
    iptablesForwardRules: bool('iptables-forward-rules'),
    ipBlackholeRoute: bool('ip-blackhole-route'),
    netConfigPath: str('net-config-path'),
    setNodeNetworkUnavailable: bool('set-node-network-unavailable'),
    v: int('v'),
    vmodule: str('vmodule'),
    logBacktraceAt: str('log_backtrace_at'),
    datapathResync: int('datapath-resync'),
    peerProbeInterval: int('peer-probe-interval'),
    wireguardImplementation: str('wireguard-implementation') as FlanneldOptions['wireguardImplementation'],
    bgpPeers: Object.freeze([...list('bgp-peers')]),
    bgpAs: int('bgp-as'),
    bgpGracefulRestartTime: int('bgp-graceful-restart-time'),
  });
}

function warningsFor(
  given: ReadonlyMap<OptionSpec, Given>,
  env: Readonly<Record<string, string | undefined>>,
  options: FlanneldOptions,
): string[] {
  const warnings: string[] = [];
  for (const [spec, g] of given) {
    if (NOT_YET_ACTIVE.includes(spec.flag)) warnings.push(`${g.label} is not yet active in flannel-ts; ignored`);
  }
  const known = OPTION_SPECS.filter((s) => !COMMAND_LINE_ONLY.includes(s.flag)).map((s) => envNameOf(s.flag));
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('FLANNELD_') || !env[name] || known.includes(name)) continue;
    warnings.push(
      COMMAND_LINE_ONLY.some((flag) => envNameOf(flag) === name)
        ? `${name} has no effect; it is read only from the command line`
        : `${name} does not match any flanneld option; ignored`,
    );
  }
  if (options.etcdCafile !== '' && (options.etcdKeyfile === '' || options.etcdCertfile === '')) {
    warnings.push('--etcd-cafile is used only when --etcd-keyfile and --etcd-certfile are both set; ignored');
  }
  if (options.ipMasqExclude.length > 0 && !options.ipMasq) {
    warnings.push('--ip-masq-exclude is used only with --ip-masq (without it nothing is masqueraded); ignored');
  }
  return warnings;
}
