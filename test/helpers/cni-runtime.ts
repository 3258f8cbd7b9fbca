/**
 * Drives a CNI plugin exactly as a container runtime does, inside namespaces of the caller's NetnsRun: a temp CNI
 * bin dir (`flannel` linked to the form under test, Debian's bridge/host-local/portmap/loopback beside it), a temp
 * subnet.env and dataDirs (host-local's too, so nothing lands in /var/lib/cni), the stock 10-flannel.conflist entry
 * re-serialised as libcni does (name and cniVersion injected, keys sorted), and each verb run as its own process
 * under `ip netns exec <host>` with only the env a runtime sets. The root namespace is never touched.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { upstreamCniPlugin } from '../../lab/kube/kube-tools.js';
import { IP, invokePlugin, runtimeJson, SEA_FORM, type CniOutcome, type JsonObject, type PluginForm } from './cni-invoke.js';
import { sh, type Netns, type NetnsRun } from './netns.js';
import { isAlive, spawnTracked, waitFor, type TrackedProcess } from './processes.js';

export { formUnavailable, invokePlugin, REPO, runtimeJson, SCRIPT_FORM, SEA_FORM } from './cni-invoke.js';
export type { CniOutcome, JsonObject, PluginForm } from './cni-invoke.js';

export const REFERENCE_PLUGIN_DIR = '/usr/lib/cni';
export const REFERENCE_PLUGINS = ['bridge', 'host-local', 'portmap', 'loopback'] as const;
/** `flannel-io/flannel: Documentation/kube-flannel.yml` cni-conf.json, verbatim. */
export const STOCK_CONFLIST = {
  name: 'cbr0',
  cniVersion: '0.3.1',
  plugins: [
    { type: 'flannel', delegate: { hairpinMode: true, isDefaultGateway: true } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
} as const;
export const FLANNEL_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/** The plugin a node runs as `flannel`: one of our two forms, or upstream's Go plugin for side-by-side runs. */
export interface NodeForm extends Omit<PluginForm, 'name'> {
  readonly name: PluginForm['name'] | 'upstream';
}

/**
 * Upstream's plugin (containernetworking/plugins v0.9.1, built once by tools/build.sh cni-flannel) as a third form,
 * with the SEA form's PATH: neither needs node, and both find their delegates through CNI_PATH.
 */
export function upstreamForm(): NodeForm {
  return { name: 'upstream', executable: upstreamCniPlugin(), pathEnv: SEA_FORM.pathEnv };
}

const TEMP_ROOT = '/tmp/flannel-ts-test';

/** Removes node dirs (cni-<pid>-…) left by test runs whose process is gone. */
function removeStaleNodeDirs(): void {
  let names: string[];
  try {
    names = readdirSync(TEMP_ROOT);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^cni-(\d+)-/.exec(name)?.[1]);
    if (pid && pid !== process.pid && !isAlive(pid)) rmSync(join(TEMP_ROOT, name), { recursive: true, force: true });
  }
}

/** subnet.env keys as flanneld writes them (docs/compatibility.md#subnetenv); a key left undefined is not written. */
export interface SubnetEnvFields {
  readonly FLANNEL_NETWORK?: string;
  readonly FLANNEL_SUBNET?: string;
  readonly FLANNEL_IPV6_NETWORK?: string;
  readonly FLANNEL_IPV6_SUBNET?: string;
  readonly FLANNEL_MTU?: string;
  readonly FLANNEL_IPMASQ?: string;
}

export const DEFAULT_SUBNET_ENV: SubnetEnvFields = {
  FLANNEL_NETWORK: '10.244.0.0/16',
  FLANNEL_SUBNET: '10.244.7.1/24',
  FLANNEL_MTU: '1450',
  FLANNEL_IPMASQ: 'true',
};

/** Upstream's format: one KEY=value a line, in flanneld's order, `\n` endings. */
export function renderSubnetEnv(fields: SubnetEnvFields): string {
  const order = ['FLANNEL_NETWORK', 'FLANNEL_SUBNET', 'FLANNEL_IPV6_NETWORK', 'FLANNEL_IPV6_SUBNET', 'FLANNEL_MTU', 'FLANNEL_IPMASQ'] as const;
  return order.filter((k) => fields[k] !== undefined).map((k) => `${k}=${fields[k]}\n`).join('');
}

/** A pod sandbox: a namespace of the run, addressed by path (`/var/run/netns/<name>` or `/proc/<pid>/ns/net`). */
export interface CniPod {
  readonly ns: Netns;
  readonly containerId: string;
  /** What CNI_NETNS carries. */
  readonly netnsPath: string;
  readonly ifname: string;
  /** For the /proc form: the `sleep` holding the namespace. */
  readonly holder?: TrackedProcess;
}

/** One host-local reservation (a file named after the address under <ipamDir>/<network name>/). */
export interface Reservation {
  readonly ip: string;
  readonly containerId: string;
  readonly ifname: string;
}

export interface InvokeOptions {
  readonly containerId?: string;
  readonly netns?: string;
  readonly ifname?: string;
  readonly args?: string;
  /** CNI_PATH (default: the node's bin dir). */
  readonly cniPath?: string;
  /** Env overrides applied last; an undefined value removes the variable. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** cniVersion injected into the config (default: the node's). */
  readonly cniVersion?: string;
  /** prevResult injected into the config (DEL, CHECK). */
  readonly prevResult?: unknown;
  /** Keys merged over the generated config; an undefined value removes the key. */
  readonly conf?: Readonly<Record<string, unknown>>;
  /** Raw stdin, replacing the generated config entirely. */
  readonly stdin?: string;
}

export interface CniNodeOptions {
  /** Short name of the host namespace (default `node`). */
  readonly name?: string;
  readonly form: NodeForm;
  /** cniVersion a runtime injects when InvokeOptions do not say (default: the stock conflist's, 0.3.1). */
  readonly cniVersion?: string;
  readonly subnetEnv?: SubnetEnvFields;
}

/**
 * A node as the runtime sees it: a host namespace (where bridge makes cni0), a CNI bin dir, a subnet.env and the
 * plugins' state dirs under one temp dir. Pods are further namespaces of the same run.
 */
export class CniNode {
  private readonly pods: CniPod[] = [];

  private constructor(
    readonly run: NetnsRun,
    readonly host: Netns,
    readonly form: NodeForm,
    /** Temp dir holding everything below. */
    readonly dir: string,
    readonly binDir: string,
    readonly subnetFile: string,
    /** flannel's dataDir (saved delegate configs). */
    readonly dataDir: string,
    /** host-local's dataDir (its reservations live in <ipamDir>/<network name>/). */
    readonly ipamDir: string,
    readonly cniVersion: string,
    readonly networkName: string,
  ) {}

  static async create(run: NetnsRun, opts: CniNodeOptions): Promise<CniNode> {
    removeStaleNodeDirs();
    const host = await run.create(opts.name ?? 'node');
    mkdirSync(TEMP_ROOT, { recursive: true });
    const dir = mkdtempSync(join(TEMP_ROOT, `cni-${process.pid}-`));
    const binDir = join(dir, 'bin');
    mkdirSync(binDir);
    symlinkSync(opts.form.executable, join(binDir, 'flannel'));
    for (const p of REFERENCE_PLUGINS) symlinkSync(join(REFERENCE_PLUGIN_DIR, p), join(binDir, p));
    const node = new CniNode(run, host, opts.form, dir, binDir, join(dir, 'run/flannel/subnet.env'), join(dir, 'lib/cni/flannel'),
      join(dir, 'lib/cni/networks'), opts.cniVersion ?? STOCK_CONFLIST.cniVersion, STOCK_CONFLIST.name);
    node.writeSubnetEnv(opts.subnetEnv ?? DEFAULT_SUBNET_ENV);
    return node;
  }

  /** Writes subnet.env in upstream's format (fields) or verbatim (a string), atomically like flanneld. */
  writeSubnetEnv(content: SubnetEnvFields | string): void {
    mkdirSync(dirname(this.subnetFile), { recursive: true, mode: 0o755 });
    const tmp = `${this.subnetFile}.tmp`;
    writeFileSync(tmp, typeof content === 'string' ? content : renderSubnetEnv(content), { mode: 0o644 });
    rmSync(this.subnetFile, { force: true });
    writeFileSync(this.subnetFile, readFileSync(tmp));
    rmSync(tmp);
  }

  removeSubnetEnv(): void {
    rmSync(this.subnetFile, { force: true });
  }

  /**
   * The flannel entry of the stock conflist as libcni hands it to the plugin: `name` and `cniVersion` injected,
   * `prevResult` when given, subnetFile/dataDir/ipam.dataDir pointing into the temp dir, keys sorted.
   */
  netconf(opts: Pick<InvokeOptions, 'cniVersion' | 'prevResult' | 'conf'> = {}): JsonObject {
    const entry = STOCK_CONFLIST.plugins[0];
    const conf: JsonObject = {
      ...structuredClone(entry),
      subnetFile: this.subnetFile,
      dataDir: this.dataDir,
      ipam: { dataDir: this.ipamDir },
      name: this.networkName,
      cniVersion: opts.cniVersion ?? this.cniVersion,
      ...(opts.prevResult !== undefined ? { prevResult: opts.prevResult } : {}),
    };
    for (const [k, v] of Object.entries(opts.conf ?? {})) {
      if (v === undefined) delete conf[k];
      else conf[k] = v;
    }
    return conf;
  }

  /** The env a runtime sets for `verb` (only the variables the spec lists for it), before overrides. */
  env(verb: string, opts: InvokeOptions = {}, pod?: CniPod): Record<string, string> {
    const env: Record<string, string> = { PATH: this.form.pathEnv, CNI_COMMAND: verb, CNI_PATH: opts.cniPath ?? this.binDir };
    if (verb === 'ADD' || verb === 'DEL' || verb === 'CHECK') {
      env['CNI_CONTAINERID'] = opts.containerId ?? pod?.containerId ?? '';
      env['CNI_IFNAME'] = opts.ifname ?? pod?.ifname ?? 'eth0';
      const netns = opts.netns ?? pod?.netnsPath;
      if (netns !== undefined && netns !== '') env['CNI_NETNS'] = netns;
      env['CNI_ARGS'] = opts.args ?? `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${env['CNI_CONTAINERID']}`;
    }
    for (const [k, v] of Object.entries(opts.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    return env;
  }

  /** Runs one verb of the plugin under test. */
  invoke(verb: string, opts: InvokeOptions = {}, pod?: CniPod): Promise<CniOutcome> {
    const stdin = opts.stdin ?? runtimeJson(this.netconf(opts));
    return invokePlugin(this.host, join(this.binDir, 'flannel'), this.env(verb, opts, pod), stdin);
  }

  add(pod: CniPod, opts: InvokeOptions = {}): Promise<CniOutcome> {
    return this.invoke('ADD', opts, pod);
  }

  /** DEL as containerd sends it: with the ADD result as prevResult when given. */
  del(pod: CniPod, opts: InvokeOptions = {}): Promise<CniOutcome> {
    return this.invoke('DEL', opts, pod);
  }

  check(pod: CniPod, prevResult: unknown, opts: InvokeOptions = {}): Promise<CniOutcome> {
    return this.invoke('CHECK', { cniVersion: '1.0.0', ...opts, prevResult }, pod);
  }

  /** STATUS as libcni sends it: config (1.1.0) on stdin, CNI_PATH only. */
  status(opts: InvokeOptions = {}): Promise<CniOutcome> {
    return this.invoke('STATUS', { cniVersion: '1.1.0', ...opts });
  }

  /** GC with the valid attachments under both keys, as libcni sends it. */
  gc(valid: readonly { containerID: string; ifname: string }[], opts: InvokeOptions = {}): Promise<CniOutcome> {
    const list = valid.map((a) => ({ containerID: a.containerID, ifname: a.ifname }));
    return this.invoke('GC', { cniVersion: '1.1.0', ...opts, conf: { 'cni.dev/valid-attachments': list, 'cni.dev/attachments': list, ...opts.conf } });
  }

  /** VERSION as libcni sends it: `{"cniVersion": …}` on stdin. */
  version(cniVersion = this.cniVersion): Promise<CniOutcome> {
    return this.invoke('VERSION', { stdin: JSON.stringify({ cniVersion }) });
  }

  /**
   * A pod namespace and its container ID (unique per run). With `procPath`, a `sleep` started inside the namespace
   * holds it and CNI_NETNS is `/proc/<pid>/ns/net` (the cri-dockerd form); `removePod` stops it by PID.
   */
  async pod(shortName: string, opts: { procPath?: boolean; ifname?: string } = {}): Promise<CniPod> {
    const ns = await this.run.create(shortName);
    const containerId = `c${process.pid}-${shortName.replace(/[^a-zA-Z0-9_.-]/g, '')}`;
    let pod: CniPod;
    if (opts.procPath) {
      const holder = spawnTracked(IP, ['netns', 'exec', ns.name, 'sleep', '3600'], {}, ns.name);
      const want = statSync(`/run/netns/${ns.name}`).ino;
      await waitFor(`sleep ${holder.pid} inside ${ns.name}`, () => {
        try {
          return statSync(`/proc/${holder.pid}/ns/net`).ino === want && readlinkSync(`/proc/${holder.pid}/exe`).endsWith('sleep') ? true : undefined;
        } catch {
          return undefined;
        }
      }, 5000, 10);
      pod = { ns, containerId, netnsPath: `/proc/${holder.pid}/ns/net`, ifname: opts.ifname ?? 'eth0', holder };
    } else {
      pod = { ns, containerId, netnsPath: `/var/run/netns/${ns.name}`, ifname: opts.ifname ?? 'eth0' };
    }
    this.pods.push(pod);
    return pod;
  }

  /** The pod's sandbox goes away (holder stopped, namespace deleted), as when a runtime tears it down. */
  async removePod(pod: CniPod): Promise<void> {
    await pod.holder?.stop('SIGKILL', 1000);
    await sh(IP, ['netns', 'del', pod.ns.name]).catch(() => undefined);
  }

  /** host-local's reservations for this network, from its store. */
  reservations(): Reservation[] {
    const dir = join(this.ipamDir, this.networkName);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return [];
    }
    return names
      .filter((n) => n !== 'lock' && !n.startsWith('last_reserved_ip'))
      .map((ip) => {
        const [containerId = '', ifname = ''] = readFileSync(join(dir, ip), 'utf8').split(/\r?\n/);
        return { ip, containerId: containerId.trim(), ifname: ifname.trim() };
      });
  }

  /** Names of the files in flannel's dataDir. */
  savedConfigs(): string[] {
    try {
      return readdirSync(this.dataDir).sort();
    } catch {
      return [];
    }
  }

  /**
   * Everything a plugin run could change on this node: the host namespace's links, addresses and routes, each pod's
   * links and addresses, and every file under the temp dir with a hash of its content. Equal snapshots = no change.
   */
  async snapshot(): Promise<string> {
    const parts: string[] = [];
    const ipText = async (ns: Netns, ...args: string[]): Promise<string> =>
      (await ns.ip('-o', ...args)).split('\n').map((l) => l.replace(/\s+(valid_lft|preferred_lft)\s+\S+/g, '')).join('\n');
    parts.push(await ipText(this.host, 'link', 'show'), await ipText(this.host, 'addr', 'show'), await ipText(this.host, 'route', 'show', 'table', 'all'));
    for (const pod of this.pods) {
      if (!existsSync(`/run/netns/${pod.ns.name}`)) continue;
      parts.push(`pod ${pod.ns.name}`, await ipText(pod.ns, 'link', 'show'), await ipText(pod.ns, 'addr', 'show'), await ipText(pod.ns, 'route', 'show'));
    }
    const walk = (d: string): void => {
      for (const name of readdirSync(d).sort()) {
        const p = join(d, name);
        const st = statSync(p, { throwIfNoEntry: false });
        if (!st) continue;
        if (st.isDirectory()) {
          parts.push(`dir ${relative(this.dir, p)} ${(st.mode & 0o777).toString(8)}`);
          walk(p);
        } else if (p.startsWith(this.binDir)) {
          parts.push(`bin ${relative(this.dir, p)}`);
        } else {
          parts.push(`file ${relative(this.dir, p)} ${(st.mode & 0o777).toString(8)} ${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}`);
        }
      }
    };
    walk(this.dir);
    return parts.join('\n');
  }

  /** Stops pod holders and removes the temp dir; the namespaces go with the run's cleanup. */
  async cleanup(): Promise<void> {
    for (const pod of this.pods.splice(0)) await pod.holder?.stop('SIGKILL', 1000);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
