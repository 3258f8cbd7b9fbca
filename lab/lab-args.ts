/**
 * The lab's command line: `<sub-command> [target] [options] [-- command...]`. Every rejection names the option or
 * argument and the value, so a typo never silently becomes a default.
 */

export const LAB_COMMANDS = ['up', 'status', 'down', 'exec', 'add-pod', 'kill', 'restart', 'kubectl'] as const;
export type LabCommand = (typeof LAB_COMMANDS)[number];

/** The backends the lab offers; alloc is left out because it programs no datapath for pods to use. */
export const LAB_BACKENDS = ['vxlan', 'host-gw', 'udp', 'wireguard'] as const;

/**
 * Why a kubelet lab has no wireguard: this kernel has no WireGuard, so the devices would run in wireguard-go, which
 * needs /dev/net/tun, and the DaemonSet as shipped (which the kubelet lab applies unchanged) does not give its
 * container one (docs/operations.md#wireguard-kernel-or-userspace).
 */
export const KUBELET_WIREGUARD_REFUSAL = 'this kernel has no WireGuard, so the devices would run in wireguard-go, which needs /dev/net/tun, '
  + 'and the DaemonSet --kubelet applies as shipped gives its container none; use wireguard in etcd mode or with --kube';

/** Why a kubelet lab has no --bgp: its flanneld is the DaemonSet's, whose arguments come from the manifest. */
export const KUBELET_BGP_REFUSAL = 'the kubelet lab applies manifests/kube-flannel.yml as shipped, so its flanneld gets no --bgp-as, '
  + '--bgp-peers or --ip-masq-exclude; use --bgp in etcd mode or with --kube';

/** Why --upstream has no --bgp: upstream's flanneld has no BGP speaker and stops at the flags. */
export const UPSTREAM_BGP_REFUSAL = "upstream flannel's flanneld v0.28.9 has no BGP speaker and refuses --bgp-as; use --bgp with flannel-ts on every host";

/** Address families of the underlay and the overlay: IPv4 (as before), dual-stack (--ipv6), IPv6 only (--ipv6-only). */
export type LabStack = 'v4' | 'dual' | 'v6';

export interface LabOptions {
  readonly command: LabCommand;
  readonly id: string;
  readonly hosts: number;
  readonly pods: number;
  readonly network?: string;
  readonly backend?: string;
  readonly stack: LabStack;
  /** The IPv6Network for --ipv6 / --ipv6-only (default 2001:db8:a::/48). */
  readonly ipv6Network?: string;
  /** A net-conf.json file used as the whole network config. */
  readonly config?: string;
  /** Kubernetes mode: a real control plane in the hub, node IPAM gives the subnets, flanneld --kube-subnet-mgr. */
  readonly kube: boolean;
  /**
   * Kubelet mode (implies kube): containerd, a kubelet and kube-proxy per host; flannel-ts runs as the DaemonSet of
   * manifests/kube-flannel.yml and the lab's pods are Kubernetes pods.
   */
  readonly kubelet: boolean;
  /**
   * A BIRD router on the underlay and an office host behind it; every host's flanneld announces its subnet(s) to the
   * router over iBGP and leaves the office's traffic unmasqueraded.
   */
  readonly bgp: boolean;
  /** Hosts that run upstream flannel's flanneld (v0.28.9, built by tools/build.sh flannel) instead of ours. */
  readonly upstream: readonly string[];
  /** exec / add-pod / kill / restart: the host, pod or process named. */
  readonly target?: string;
  /** exec, kubectl: the command (arguments) after `--`. */
  readonly execArgv: readonly string[];
}

export const LAB_USAGE = `usage: npm run lab -- <sub-command> [options]

sub-commands:
  up                          (default) start etcd, N hosts running flanneld, M pods per host; print the state
  status                      hosts, leases in etcd (Nodes with --kube), pods, daemon health and a fresh ping matrix
  exec <hub|hN|hN-pM|router|office> -- CMD
                              run CMD inside that namespace (router and office with --bgp)
  add-pod <hN>                one more pod on host hN, through the CNI plugins
  kill <hN|etcd|router|kube-apiserver|kube-controller-manager|kube-scheduler|hN/containerd|hN/kubelet|hN/kube-proxy>
                              SIGKILL that host's flanneld (or that control plane or kubelet host process, or the
                              --bgp router's BIRD), as a crash would
  restart <same targets>      stop it if running, start it again and wait until it is serving
  kubectl -- ARGS             (--kube labs) the built kubectl with the lab's admin kubeconfig, in the hub namespace
  down                        remove every namespace, process and file of the lab (safe to repeat)

options:
  --id NAME         lab name, [a-z0-9]{1,12} (default lab); labs with different ids run side by side
  --hosts N         hosts, 1..50 (default 3)
  --pods M          pods per host, 0..20 (default 2)
  --network CIDR    the flannel Network (default 10.244.0.0/16)
  --backend TYPE    ${LAB_BACKENDS.join(' | ')} (default vxlan)
  --ipv6            dual-stack: the underlay adds 2001:db8:2::/64, the overlay IPv6Network, pods get both families
  --ipv6-only       IPv6 only: no IPv4 on the hosts, etcd on [2001:db8:2::fe]:2379, pods IPv6 only
  --ipv6-network CIDR  the IPv6Network for --ipv6/--ipv6-only, inside 2001:db8::/32 (default 2001:db8:a::/48)
  --config FILE     a net-conf.json used as the whole network config (instead of --network/--backend/--ipv6*);
                    the underlay follows it: EnableIPv6 makes it dual-stack, EnableIPv4 false IPv6-only
  --kube            Kubernetes mode: etcd 3.6, kube-apiserver and kube-controller-manager (node IPAM) in the hub;
                    each host registers its Node and runs flanneld --kube-subnet-mgr with the manifest's RBAC.
                    The first --kube builds the Kubernetes binaries from their Go modules (about 10 minutes, once)
  --upstream h2,h3  those hosts run upstream flannel's flanneld v0.28.9 (built from its Go module once, about 4
                    minutes) with the same flags, beside ours on the others; etcd and --kube modes
  --kubelet         a kind-like cluster (implies --kube): each host runs containerd, a real kubelet and kube-proxy,
                    the hub adds kube-scheduler; kubectl apply -f manifests/kube-flannel.yml runs flannel-ts as its
                    DaemonSet (the image built by npm run image, imported), and the pods are Kubernetes pods
  --bgp             a BIRD router (ftl-<id>-router, 192.0.2.250 / 2001:db8:2::fa, iBGP AS 64512) on the underlay and
                    an office host (ftl-<id>-office, 203.0.113.10 / 2001:db8:3::10) behind it; every flanneld announces
                    its subnet to the router (--bgp-as, --bgp-peers, --ip-masq-exclude), the matrix gets an office row

up records the families and the mode (--kube, --kubelet, --bgp) in the lab's state; later sub-commands keep them without these options.`;

export class LabUsageError extends Error {
  override readonly name = 'LabUsageError';
}

const NEEDS_TARGET: ReadonlySet<LabCommand> = new Set(['exec', 'add-pod', 'kill', 'restart']);

export function parseLabArgs(argv: readonly string[]): LabOptions {
  const rest = [...argv];
  const dashDash = rest.indexOf('--');
  const execArgv = dashDash >= 0 ? rest.splice(dashDash).slice(1) : [];
  const positional: string[] = [];
  const values = new Map<string, string>();
  while (rest.length > 0) {
    const arg = rest.shift() as string;
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    if (SWITCHES.has(flag)) {
      if (eq >= 0) throw new LabUsageError(`${flag} takes no value, got "${arg.slice(eq + 1)}"`);
      values.set(flag, '');
      continue;
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : rest.shift();
    if (!FLAGS.has(flag)) throw new LabUsageError(`unknown option ${flag}`);
    if (value === undefined || value === '') throw new LabUsageError(`${flag} needs a value`);
    values.set(flag, value);
  }

  const command = (positional.shift() ?? 'up') as LabCommand;
  if (!LAB_COMMANDS.includes(command)) {
    throw new LabUsageError(`unknown sub-command "${command}" (one of ${LAB_COMMANDS.join(', ')})`);
  }
  const target = NEEDS_TARGET.has(command) ? positional.shift() : undefined;
  if (NEEDS_TARGET.has(command) && target === undefined) throw new LabUsageError(`${command} needs a target (see --help)`);
  if (positional.length > 0) throw new LabUsageError(`unexpected argument "${positional[0]}" for ${command}`);
  if (command === 'exec' && execArgv.length === 0) throw new LabUsageError(`exec needs a command after --, e.g. exec h1 -- ip route`);
  if (command === 'kubectl' && execArgv.length === 0) throw new LabUsageError('kubectl needs its arguments after --, e.g. kubectl -- get nodes -o wide');
  if (command !== 'exec' && command !== 'kubectl' && dashDash >= 0) throw new LabUsageError(`"--" is only for exec and kubectl`);

  const opts: { -readonly [K in keyof LabOptions]: LabOptions[K] } = {
    command,
    id: 'lab',
    hosts: 3,
    pods: 2,
    stack: stackOption(values),
    kube: values.has('--kube') || values.has('--kubelet'),
    kubelet: values.has('--kubelet'),
    bgp: values.has('--bgp'),
    upstream: [],
    execArgv,
  };
  if (target !== undefined) opts.target = target;
  const id = values.get('--id');
  if (id !== undefined) {
    if (!/^[a-z0-9]{1,12}$/.test(id)) throw new LabUsageError(`--id must match [a-z0-9]{1,12}, got "${id}"`);
    opts.id = id;
  }
  opts.hosts = intOption(values, '--hosts', 1, 50, opts.hosts);
  opts.pods = intOption(values, '--pods', 0, 20, opts.pods);
  const network = values.get('--network');
  if (network !== undefined) opts.network = network;
  const backend = values.get('--backend');
  if (backend !== undefined) {
    if (!(LAB_BACKENDS as readonly string[]).includes(backend)) {
      throw new LabUsageError(`--backend must be one of ${LAB_BACKENDS.join(', ')}, got "${backend}"`);
    }
    if (backend === 'wireguard' && opts.kubelet) throw new LabUsageError(`--backend wireguard with --kubelet: ${KUBELET_WIREGUARD_REFUSAL}`);
    opts.backend = backend;
  }
  const ipv6Network = values.get('--ipv6-network');
  if (ipv6Network !== undefined) {
    if (opts.stack === 'v4') throw new LabUsageError(`--ipv6-network ${ipv6Network} needs --ipv6 or --ipv6-only`);
    opts.ipv6Network = ipv6Network;
  }
  if (opts.stack !== 'v4') {
    const flag = opts.stack === 'dual' ? '--ipv6' : '--ipv6-only';
    if (backend === 'udp') throw new LabUsageError(`--backend udp carries IPv4 only (flanneld refuses EnableIPv6 with it); use vxlan, host-gw or wireguard with ${flag}`);
    if (network !== undefined && opts.stack === 'v6') {
      throw new LabUsageError(`--network ${network} is the IPv4 Network, which --ipv6-only has none of; use --ipv6-network for the IPv6 one`);
    }
  }
  const upstream = values.get('--upstream');
  if (upstream !== undefined) {
    const names = upstream.split(',');
    const bad = names.find((n) => !/^h\d+$/.test(n) || Number(n.slice(1)) < 1 || Number(n.slice(1)) > opts.hosts);
    if (bad !== undefined) throw new LabUsageError(`--upstream ${upstream}: "${bad}" is not a host of this lab (h1..h${opts.hosts})`);
    if (opts.kubelet) throw new LabUsageError('--upstream runs upstream flanneld as a host process; with --kubelet the DaemonSet runs one image on every node');
    opts.upstream = [...new Set(names)];
  }
  if (opts.bgp && opts.kubelet) throw new LabUsageError(`--bgp with --kubelet: ${KUBELET_BGP_REFUSAL}`);
  if (opts.bgp && opts.upstream.length > 0) throw new LabUsageError(`--bgp with --upstream: ${UPSTREAM_BGP_REFUSAL}`);
  const config = values.get('--config');
  if (config !== undefined) {
    const given = ['--network', '--backend', '--ipv6', '--ipv6-only', '--ipv6-network'].filter((f) => values.has(f));
    if (given.length > 0) {
      throw new LabUsageError(`--config ${config} is the whole network config, so ${given.join(', ')} cannot go with it; put that in the file `
        + '(EnableIPv6 and IPv6Network make the lab dual-stack, EnableIPv4 false makes it IPv6-only)');
    }
    opts.config = config;
  }
  return opts;
}

const FLAGS: ReadonlySet<string> = new Set(['--id', '--hosts', '--pods', '--network', '--backend', '--config', '--ipv6-network', '--upstream']);
/** Options that take no value. */
const SWITCHES: ReadonlySet<string> = new Set(['--ipv6', '--ipv6-only', '--kube', '--kubelet', '--bgp']);

function stackOption(values: ReadonlyMap<string, string>): LabStack {
  const dual = values.has('--ipv6');
  const v6 = values.has('--ipv6-only');
  if (dual && v6) throw new LabUsageError('--ipv6 and --ipv6-only exclude each other: --ipv6 is dual-stack, --ipv6-only leaves IPv4 out');
  return dual ? 'dual' : v6 ? 'v6' : 'v4';
}

function intOption(values: ReadonlyMap<string, string>, flag: string, min: number, max: number, fallback: number): number {
  const raw = values.get(flag);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) throw new LabUsageError(`${flag} must be an integer from ${min} to ${max}, got "${raw}"`);
  return n;
}
