/**
 * manifests/kube-flannel.yml and the Dockerfile, checked against the code they deploy rather than against a copy of
 * themselves: the Kubernetes API schema, flanneld's own option and net-conf parsers, the CNI plugin's config parser,
 * the RBAC contract in kube-api-calls.ts, and the paths the image really has. The init containers' scripts are run
 * for real against a temporary directory standing in for the node.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { dumpYaml, loadAllYaml } from '@kubernetes/client-node';
import { load, loadAll } from 'js-yaml';
import { DaemonSet, type IDaemonSet } from 'kubernetes-models/apps/v1';
import {
  ClusterRole,
  ClusterRoleBinding,
  type IClusterRole,
  type IClusterRoleBinding,
} from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import {
  ConfigMap,
  Namespace,
  ServiceAccount,
  type IConfigMap,
  type IContainer,
  type INamespace,
  type IServiceAccount,
  type IVolume,
} from 'kubernetes-models/v1';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_SUBNET_FILE, parseNetConf } from '../../../cni-plugin/netconf.js';
import { checkDelegate, renderDelegate } from '../../../cni-plugin/render-delegate.js';
import { parseSubnetFile } from '../../../cni-plugin/subnet-file.js';
import { parseNetworkConfig } from '../../../flanneld/config/network-config.js';
import { loadOptions } from '../../../flanneld/config/options.js';
import { formatCidr } from '../../../flanneld/ip/cidr.js';
import { KUBE_API_CALLS } from '../../../flanneld/subnet/kube/kube-api-calls.js';
import {
  FLANNEL_BASE, FLANNEL_CONFIG, FLANNEL_COPIES, FLANNEL_IMAGE_REPOSITORY, FLANNEL_SYMLINKS, NODE_PATH,
} from '../../../image/flannel-image.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

const MANIFEST_TEXT = read('manifests/kube-flannel.yml');
/** As the API server receives them: plain objects, unknown fields kept (js-yaml is @kubernetes/client-node's parser). */
const RAW: unknown[] = loadAll(MANIFEST_TEXT);
const PACKAGE = JSON.parse(read('package.json')) as { version: string };

type Validator = (obj: unknown) => void;
// kubernetes-models checks types, enums and required fields, but ignores unknown fields; those are caught below by
// a round trip through @kubernetes/client-node's typed models, which drop them.
const VALIDATORS: Readonly<Record<string, Validator>> = {
  'v1/Namespace': (o) => new Namespace(o as INamespace).validate(),
  'v1/ServiceAccount': (o) => new ServiceAccount(o as IServiceAccount).validate(),
  'v1/ConfigMap': (o) => new ConfigMap(o as IConfigMap).validate(),
  'rbac.authorization.k8s.io/v1/ClusterRole': (o) => new ClusterRole(o as IClusterRole).validate(),
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': (o) => new ClusterRoleBinding(o as IClusterRoleBinding).validate(),
  'apps/v1/DaemonSet': (o) => new DaemonSet(o as IDaemonSet).validate(),
};

function typeKey(obj: unknown): string {
  const o = obj as { apiVersion?: unknown; kind?: unknown } | null;
  return `${String(o?.apiVersion)}/${String(o?.kind)}`;
}

function validate(obj: unknown): void {
  const validator = VALIDATORS[typeKey(obj)];
  if (!validator) throw new Error(`no schema for ${typeKey(obj)}`);
  validator(obj);
}

/** Fields the typed client models do not know (typos, wrong nesting), as `kubectl apply --validate=strict` would. */
function unknownFieldsDropped(text: string): number[] {
  const raw = loadAll(text);
  const typed = loadAllYaml(text);
  return raw.flatMap((doc, i) => (isDeepStrictEqual(load(dumpYaml(typed[i])), doc) ? [] : [i]));
}

function only<T>(kind: string): T {
  const found = RAW.filter((o) => (o as { kind?: unknown }).kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind} in the manifest, found ${found.length}`);
  return found[0] as T;
}

const NS = only<INamespace>('Namespace');
const SA = only<IServiceAccount>('ServiceAccount');
const ROLE = only<IClusterRole>('ClusterRole');
const BINDING = only<IClusterRoleBinding>('ClusterRoleBinding');
const CM = only<IConfigMap>('ConfigMap');
const DS = only<IDaemonSet>('DaemonSet');
const POD = DS.spec?.template.spec;
if (!POD) throw new Error('the DaemonSet has no pod template spec');
const INIT = POD.initContainers ?? [];
const ALL_CONTAINERS: IContainer[] = [...INIT, ...POD.containers];
const VOLUMES: IVolume[] = POD.volumes ?? [];

function container(name: string): IContainer {
  const c = ALL_CONTAINERS.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}
const FLANNEL = container('kube-flannel');

function cmData(key: string): string {
  const text = CM.data?.[key];
  if (text === undefined) throw new Error(`ConfigMap ${CM.metadata?.name} has no ${key}`);
  return text;
}

const trimSlash = (p: string): string => posix.normalize(p).replace(/(.)\/+$/, '$1');

/** Where a path inside a container lands on the node, through a hostPath mount; undefined when it does not. */
function hostPathOf(c: IContainer, path: string): string | undefined {
  for (const m of c.volumeMounts ?? []) {
    const mount = trimSlash(m.mountPath);
    if (path !== mount && !path.startsWith(`${mount}/`)) continue;
    const hostPath = VOLUMES.find((v) => v.name === m.name)?.hostPath?.path;
    if (hostPath !== undefined) return posix.join(hostPath, posix.relative(mount, path));
  }
  return undefined;
}

/** The ConfigMap key a path inside a container reads, through a configMap mount. */
function configMapKeyOf(c: IContainer, path: string): string | undefined {
  for (const m of c.volumeMounts ?? []) {
    const mount = trimSlash(m.mountPath);
    if (!path.startsWith(`${mount}/`)) continue;
    if (VOLUMES.find((v) => v.name === m.name)?.configMap?.name === CM.metadata?.name) return posix.relative(mount, path);
  }
  return undefined;
}

/** The container env as flanneld would see it: literal values as given, downward-API values as a sample pod's. */
function containerEnv(c: IContainer): Record<string, string> {
  const sample: Record<string, string> = { 'spec.nodeName': 'node-1', 'metadata.name': 'kube-flannel-ds-x2x9z', 'metadata.namespace': 'kube-flannel' };
  return Object.fromEntries(
    (c.env ?? []).map((e) => {
      const field = e.valueFrom?.fieldRef?.fieldPath;
      return [e.name, e.value ?? (field !== undefined ? (sample[field] ?? `<${field}>`) : '')];
    }),
  );
}

// ---- Dockerfile, parsed simply: continuation lines joined, comments dropped, one entry per instruction ----

interface Instruction {
  readonly op: string;
  readonly args: string;
}
interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly body: Instruction[];
}

function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let pending = '';
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue;
    const cont = /\\\s*$/.test(line);
    pending += `${line.replace(/\\\s*$/, '')} `;
    if (!cont) {
      if (pending.trim() !== '') logical.push(pending.trim().replace(/\s+/g, ' '));
      pending = '';
    }
  }
  const stages: Stage[] = [];
  for (const l of logical) {
    const [, op = '', args = ''] = /^(\S+)\s*(.*)$/.exec(l) ?? [];
    if (op.toUpperCase() === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!m?.[1]) throw new Error(`cannot read FROM ${args}`);
      stages.push({ from: m[1], name: m[2], body: [] });
    } else if (stages.length > 0) {
      stages[stages.length - 1]?.body.push({ op: op.toUpperCase(), args });
    }
  }
  return stages;
}

interface Copy {
  readonly from: string | undefined;
  readonly sources: string[];
  /** Absolute, WORKDIR applied. */
  readonly dest: string;
}

/** COPY instructions with their destinations made absolute by the WORKDIR in force. */
function copiesOf(stage: Stage): Copy[] {
  let workdir = '/';
  const out: Copy[] = [];
  for (const ins of stage.body) {
    if (ins.op === 'WORKDIR') workdir = posix.resolve(workdir, ins.args);
    if (ins.op !== 'COPY') continue;
    const words = ins.args.split(' ');
    const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
    const paths = words.filter((w) => !w.startsWith('--'));
    const dest = paths.pop() ?? '';
    out.push({ from, sources: paths, dest: dest.endsWith('/') ? `${posix.resolve(workdir, dest)}/` : posix.resolve(workdir, dest) });
  }
  return out;
}

function workdirOf(stage: Stage): string {
  return stage.body.filter((i) => i.op === 'WORKDIR').reduce((dir, i) => posix.resolve(dir, i.args), '/');
}

const DOCKERFILE = parseDockerfile(read('Dockerfile'));
const BUILD = DOCKERFILE.find((s) => s.name === 'build');
const RUNTIME = DOCKERFILE[DOCKERFILE.length - 1];
if (!BUILD || !RUNTIME) throw new Error('Dockerfile needs a "build" stage and a runtime stage');
const runsOf = (stage: Stage): string => stage.body.filter((i) => i.op === 'RUN').map((i) => i.args).join(' && ');

/** The one path a COPY --from=build puts a build-stage file at in the runtime image. */
function runtimePathOf(buildPath: string): string {
  const copy = copiesOf(RUNTIME as Stage).find((c) => c.from === 'build' && c.sources.includes(buildPath));
  if (!copy) throw new Error(`the runtime stage does not copy ${buildPath} from the build stage`);
  // Docker copies a directory's contents into the destination, and a file into a destination ending in "/".
  if (buildPath.endsWith('/')) return trimSlash(copy.dest);
  return copy.dest.endsWith('/') ? posix.join(copy.dest, posix.basename(buildPath)) : copy.dest;
}

// ---- the tests ----

const tempDirs: string[] = [];
afterAll(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

describe('kube-flannel.yml: Kubernetes API schema', () => {
  it('holds the six objects upstream has, each valid against the schema of its kind', () => {
    expect(RAW.map(typeKey)).toEqual([
      'v1/Namespace',
      'rbac.authorization.k8s.io/v1/ClusterRole',
      'rbac.authorization.k8s.io/v1/ClusterRoleBinding',
      'v1/ServiceAccount',
      'v1/ConfigMap',
      'apps/v1/DaemonSet',
    ]);
    for (const obj of RAW) expect(() => validate(obj), typeKey(obj)).not.toThrow();
  });

  it('has no field the API does not know (a typo would be dropped or rejected by the server)', () => {
    expect(unknownFieldsDropped(MANIFEST_TEXT)).toEqual([]);
  });

  it('really validates: broken copies are rejected', () => {
    const broken = (edit: (ds: IDaemonSet) => void): IDaemonSet => {
      const copy = structuredClone(DS);
      edit(copy);
      return copy;
    };
    expect(() =>
      validate(broken((ds) => {
        const port = ds.spec?.template.spec?.containers[0]?.ports?.[0];
        if (port) (port as { containerPort: unknown }).containerPort = 'x';
      })),
    ).toThrow(/containerPort must be integer/);
    expect(() => validate(broken((ds) => delete (ds.spec as { selector?: unknown }).selector))).toThrow(/selector/);
    expect(() => validate({ ...ROLE, rules: [{ apiGroups: [''], resources: 'nodes', verbs: ['get'] }] })).toThrow(/resources/);
    expect(unknownFieldsDropped(MANIFEST_TEXT.replace('hostNetwork: true', 'hostNetwrok: true'))).toEqual([5]);
  });

  it('carries upstream names and labels, and runs in a privileged Pod Security namespace', () => {
    expect(NS.metadata?.name).toBe('kube-flannel');
    expect(NS.metadata?.labels).toEqual({ 'k8s-app': 'flannel', 'pod-security.kubernetes.io/enforce': 'privileged' });
    for (const obj of [SA, CM, DS]) expect(obj.metadata?.namespace).toBe('kube-flannel');
    expect(CM.metadata?.name).toBe('kube-flannel-cfg');
    expect(DS.metadata?.name).toBe('kube-flannel-ds');
    for (const obj of [CM, DS]) expect(obj.metadata?.labels).toEqual({ tier: 'node', app: 'flannel', 'k8s-app': 'flannel' });
    expect(DS.spec?.selector.matchLabels).toEqual({ app: 'flannel' });
    // The API server refuses a selector that does not match the template's labels; the schema cannot see that.
    expect(DS.spec?.template.metadata?.labels).toMatchObject(DS.spec?.selector.matchLabels ?? { missing: 'selector' });
    expect(DS.spec?.template.metadata?.labels).toEqual({ tier: 'node', app: 'flannel' });
  });
});

describe('kube-flannel.yml: RBAC', () => {
  it('grants exactly the calls in KUBE_API_CALLS, with no wildcard', () => {
    const granted = new Map<string, Set<string>>();
    for (const rule of ROLE.rules ?? []) {
      expect(rule.nonResourceURLs, 'nonResourceURLs').toBeUndefined();
      for (const group of rule.apiGroups ?? []) {
        for (const resource of rule.resources ?? []) {
          const key = `${group}|${resource}`;
          const verbs = granted.get(key) ?? new Set<string>();
          for (const verb of rule.verbs) verbs.add(verb);
          granted.set(key, verbs);
        }
      }
    }
    const needed = new Map<string, Set<string>>();
    for (const call of KUBE_API_CALLS) {
      const key = `${call.apiGroup}|${call.resource}`;
      needed.set(key, (needed.get(key) ?? new Set<string>()).add(call.verb));
    }
    const sorted = (m: Map<string, Set<string>>) => Object.fromEntries([...m].sort().map(([k, v]) => [k, [...v].sort()]));
    expect(sorted(granted)).toEqual(sorted(needed));
    expect(JSON.stringify(ROLE.rules)).not.toContain('*');
  });

  it('binds the role to the ServiceAccount the DaemonSet runs as, in the namespace it runs in', () => {
    expect(BINDING.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: ROLE.metadata?.name });
    expect(BINDING.subjects).toEqual([{ kind: 'ServiceAccount', name: POD.serviceAccountName, namespace: DS.metadata?.namespace }]);
    expect(SA.metadata).toMatchObject({ name: POD.serviceAccountName, namespace: DS.metadata?.namespace });
    expect(POD.serviceAccountName).toBe('flannel');
  });
});

describe('kube-flannel.yml: ConfigMap', () => {
  it('cni-conf.json is manifests/10-flannel.conflist (byte for byte, so the node gets the documented file)', () => {
    const conflist = read('manifests/10-flannel.conflist');
    expect(JSON.parse(cmData('cni-conf.json'))).toEqual(JSON.parse(conflist));
    expect(cmData('cni-conf.json')).toBe(conflist);
  });

  it("cni-conf.json's flannel entry is accepted by the CNI plugin as the runtime hands it over", () => {
    const list = JSON.parse(cmData('cni-conf.json')) as { name: string; cniVersion: string; plugins: Record<string, unknown>[] };
    const entry = list.plugins.find((p) => p['type'] === 'flannel');
    if (!entry) throw new Error('no flannel plugin in the conflist');
    // libcni gives each plugin of a list its own entry plus the list's name and cniVersion.
    const conf = parseNetConf(JSON.stringify({ ...entry, name: list.name, cniVersion: list.cniVersion }));
    checkDelegate(conf.delegate);
    expect(conf.subnetFile).toBe(DEFAULT_SUBNET_FILE);
    const network = parseNetworkConfig(cmData('net-conf.json')).config.network;
    if (!network) throw new Error('net-conf.json has no Network');
    const env = parseSubnetFile(`FLANNEL_NETWORK=${formatCidr(network)}\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n`, 'subnet.env');
    expect(renderDelegate(conf, env, '')).toMatchObject({
      type: 'bridge', name: 'cbr0', hairpinMode: true, isDefaultGateway: true, isGateway: true, ipMasq: false, mtu: 1450,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.7.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
    });
    expect(list.plugins.map((p) => p['type'])).toEqual(['flannel', 'portmap']);
  });

  it("net-conf.json parses with flanneld's parser: 10.244.0.0/16, vxlan, iptables", () => {
    const { config, warnings } = parseNetworkConfig(cmData('net-conf.json'));
    expect(warnings).toEqual([]);
    expect(config.network && formatCidr(config.network)).toBe('10.244.0.0/16');
    expect(config.backend.type).toBe('vxlan');
    expect(config.enableNFTables).toBe(false);
    expect(JSON.parse(cmData('net-conf.json'))).toEqual({ Network: '10.244.0.0/16', EnableNFTables: false, Backend: { Type: 'vxlan' } });
  });

  it('says right at net-conf.json that it must equal the cluster CIDR', () => {
    const lines = MANIFEST_TEXT.split('\n');
    let start = lines.findIndex((l) => /^\s+net-conf\.json:/.test(l));
    const end = start;
    while (start > 0 && /^\s*#/.test(lines[start - 1] ?? '')) start -= 1;
    const comment = lines.slice(start, end).join('\n');
    expect(comment).toMatch(/ONE place/);
    expect(comment).toContain('--cluster-cidr');
    expect(comment).toContain('--pod-network-cidr');
  });
});

describe('kube-flannel.yml: DaemonSet', () => {
  it('schedules on every Linux node, in the host network, as node-critical, through NoSchedule taints', () => {
    expect(POD.hostNetwork).toBe(true);
    expect(POD.priorityClassName).toBe('system-node-critical');
    expect(POD.tolerations).toEqual([{ operator: 'Exists', effect: 'NoSchedule' }]);
    expect(POD.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms).toEqual([
      { matchExpressions: [{ key: 'kubernetes.io/os', operator: 'In', values: ['linux'] }] },
    ]);
  });

  it('uses one image, tagged with the package version, for every container', () => {
    expect(INIT.map((c) => c.name)).toEqual(['install-cni-plugin', 'install-cni']);
    expect(POD.containers.map((c) => c.name)).toEqual(['kube-flannel']);
    for (const c of ALL_CONTAINERS) expect(c.image, c.name).toBe(`ghcr.io/flannel-ts/flannel-ts:${PACKAGE.version}`);
  });

  it("runs flanneld with arguments flanneld's own option parser accepts", () => {
    const loaded = loadOptions(FLANNEL.args ?? [], containerEnv(FLANNEL));
    if (loaded.kind !== 'run') throw new Error(`flanneld rejects the manifest's arguments: ${JSON.stringify(loaded).slice(0, 300)}`);
    expect(loaded.options).toMatchObject({ ipMasq: true, kubeSubnetMgr: true, healthzPort: 8081 });
    // Only "not yet active" notes are tolerated; an unknown FLANNELD_* variable would be a warning too.
    for (const w of loaded.warnings) expect(w).toMatch(/is not yet active in flannel-ts/);
    // ... and the parser is not a rubber stamp.
    expect(loadOptions(['--ip-masq', '--kube-subnet-mg'], {}).kind).toBe('error');
  });

  it('probes /healthz and /readyz on the named port that --healthz-port opens', () => {
    const loaded = loadOptions(FLANNEL.args ?? [], containerEnv(FLANNEL));
    if (loaded.kind !== 'run') throw new Error('flanneld rejects the arguments');
    const port = FLANNEL.ports?.find((p) => p.name === 'healthz');
    expect(port).toEqual({ name: 'healthz', containerPort: loaded.options.healthzPort, protocol: 'TCP' });
    expect(FLANNEL.livenessProbe).toEqual({ httpGet: { path: '/healthz', port: 'healthz' }, initialDelaySeconds: 10, periodSeconds: 30 });
    expect(FLANNEL.readinessProbe).toEqual({ httpGet: { path: '/readyz', port: 'healthz' }, initialDelaySeconds: 5, periodSeconds: 10 });
  });

  it('requests what upstream does, with no memory limit below what 5000 peers measured', () => {
    expect(FLANNEL.resources?.requests).toEqual({ cpu: '100m', memory: '50Mi' });
    const limit = FLANNEL.resources?.limits?.['memory'];
    if (limit !== undefined) {
      const m = /^(\d+)(Mi|Gi)$/.exec(String(limit));
      expect(m, `memory limit ${String(limit)}`).not.toBeNull();
      expect(Number(m?.[1]) * (m?.[2] === 'Gi' ? 1024 : 1)).toBeGreaterThanOrEqual(200);
    }
  });

  it('adds NET_ADMIN and NET_RAW and nothing else, unprivileged', () => {
    expect(FLANNEL.securityContext).toEqual({ privileged: false, capabilities: { add: ['NET_ADMIN', 'NET_RAW'] } });
  });

  it('passes the node and pod identity from the downward API, and none of the env upstream needs for its queue', () => {
    expect(FLANNEL.env).toEqual([
      { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    ]);
  });

  it('mounts only defined volumes, uses every volume, and maps the paths upstream uses', () => {
    const names = VOLUMES.map((v) => v.name);
    const mounted = ALL_CONTAINERS.flatMap((c) => (c.volumeMounts ?? []).map((m) => m.name));
    for (const name of mounted) expect(names, `volumeMount ${name}`).toContain(name);
    expect([...new Set(mounted)].sort()).toEqual([...names].sort());
    expect(VOLUMES).toEqual([
      { name: 'run', hostPath: { path: '/run/flannel' } },
      { name: 'cni-plugin', hostPath: { path: '/opt/cni/bin' } },
      { name: 'cni', hostPath: { path: '/etc/cni/net.d' } },
      { name: 'flannel-cfg', configMap: { name: CM.metadata?.name } },
      { name: 'xtables-lock', hostPath: { path: '/run/xtables.lock', type: 'FileOrCreate' } },
    ]);
    expect(FLANNEL.volumeMounts).toEqual([
      { name: 'run', mountPath: '/run/flannel' },
      { name: 'flannel-cfg', mountPath: '/etc/kube-flannel/' },
      { name: 'xtables-lock', mountPath: '/run/xtables.lock' },
    ]);
    expect(hostPathOf(FLANNEL, '/run/xtables.lock')).toBe('/run/xtables.lock');
  });

  it("connects flanneld and the plugin: subnet.env lands where the plugin reads it, net-conf.json where flanneld looks", () => {
    const loaded = loadOptions(FLANNEL.args ?? [], containerEnv(FLANNEL));
    if (loaded.kind !== 'run') throw new Error('flanneld rejects the arguments');
    expect(hostPathOf(FLANNEL, loaded.options.subnetFile)).toBe(DEFAULT_SUBNET_FILE);
    expect(configMapKeyOf(FLANNEL, loaded.options.netConfigPath)).toBe('net-conf.json');
  });

  it('init containers install the plugin and the conflist on the node atomically (run against a stand-in node)', () => {
    const root = mkdtempSync(join(tmpdir(), 'fts-manifest-'));
    tempDirs.push(root);
    const node = (p: string) => join(root, 'node', p);
    const image = (p: string) => join(root, 'image', p);
    const configMapDir = join(root, 'configmap');
    // What the image holds at the path install-cni-plugin copies from, and what the kubelet projects from the ConfigMap.
    mkdirSync(dirname(image('/opt/cni-bin/flannel')), { recursive: true });
    writeFileSync(image('/opt/cni-bin/flannel'), '#!/bin/sh\necho new plugin\n', { mode: 0o755 });
    mkdirSync(configMapDir, { recursive: true });
    for (const [key, value] of Object.entries(CM.data ?? {})) writeFileSync(join(configMapDir, key), value, { mode: 0o644 });
    for (const v of VOLUMES) if (v.hostPath && v.hostPath.type !== 'FileOrCreate') mkdirSync(node(v.hostPath.path), { recursive: true });
    // An older plugin is already installed.
    writeFileSync(node('/opt/cni/bin/flannel'), 'old plugin', { mode: 0o755 });

    for (const c of INIT) {
      const [shell, flags, script, ...rest] = c.command ?? [];
      expect([shell, flags, rest], c.name).toEqual(['/bin/sh', '-ec', []]);
      // Each mount path in the script becomes the directory standing in for its volume; the rest is the image.
      const mounts = (c.volumeMounts ?? []).map((m) => {
        const v = VOLUMES.find((x) => x.name === m.name);
        const target = v?.hostPath ? node(v.hostPath.path) : v?.configMap ? configMapDir : undefined;
        if (!target) throw new Error(`${c.name}: cannot stand in for volume ${m.name}`);
        return { from: trimSlash(m.mountPath), to: target };
      });
      const rewritten = [...mounts, { from: '/opt/cni-bin', to: image('/opt/cni-bin') }]
        .sort((a, b) => b.from.length - a.from.length)
        .reduce((s, m) => s.split(m.from).join(m.to), String(script));
      execFileSync('/bin/sh', ['-ec', rewritten], { stdio: 'pipe' });
      // The temporary file is renamed from the target directory: never copied over the live file in place.
      const mv = /mv -f (\S+) (\S+)\s*$/.exec(String(script));
      expect(mv, `${c.name} ends with a rename`).not.toBeNull();
      expect(posix.dirname(mv?.[1] ?? ''), c.name).toBe(posix.dirname(mv?.[2] ?? '-'));
      expect(mv?.[1], `${c.name}: a runtime loads *.conf, *.conflist and *.json`).not.toMatch(/\.(conf|conflist|json)$/);
    }

    expect(readFileSync(node('/opt/cni/bin/flannel'), 'utf8')).toBe('#!/bin/sh\necho new plugin\n');
    expect(statSync(node('/opt/cni/bin/flannel')).mode & 0o111).toBe(0o111);
    expect(readFileSync(node('/etc/cni/net.d/10-flannel.conflist'), 'utf8')).toBe(read('manifests/10-flannel.conflist'));
    expect(readdirSync(node('/opt/cni/bin'))).toEqual(['flannel']);
    expect(readdirSync(node('/etc/cni/net.d'))).toEqual(['10-flannel.conflist']);
  });
});

describe('Dockerfile', () => {
  it('builds on node:20-bookworm-slim in a build stage and ships a second one', () => {
    expect(DOCKERFILE.map((s) => [s.from, s.name])).toEqual([
      ['node:20-bookworm-slim', 'build'],
      ['node:20-bookworm-slim', undefined],
    ]);
  });

  it('installs, compiles, builds the single-executable plugin and drops dev dependencies, in that order', () => {
    const runs = runsOf(BUILD);
    const steps = ['npm ci', 'npm run build', 'node scripts/build-cni.mjs --sea', 'npm prune --omit=dev'];
    const at = steps.map((s) => runs.indexOf(s));
    expect(at.every((i) => i >= 0), `${JSON.stringify(steps)} in ${runs}`).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
  });

  it('copies into the build stage only repository paths that exist and the build context keeps', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
    const copies = copiesOf(BUILD).filter((c) => c.from === undefined);
    expect(copies.length).toBeGreaterThan(0);
    for (const source of copies.flatMap((c) => c.sources)) {
      expect(existsSync(join(ROOT, source)), source).toBe(true);
      expect(ignored, `${source} is excluded from the build context`).not.toContain(source.replace(/\/$/, '').split('/')[0]);
    }
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist']));
  });

  it('copies into the runtime only what the build stage has or produces', () => {
    const workdir = workdirOf(BUILD);
    const intoBuild = copiesOf(BUILD).filter((c) => c.from === undefined).flatMap((c) => c.sources.map((s) => s.replace(/\/$/, '')));
    const compiled = (JSON.parse(read('tsconfig.json')) as { include: string[] }).include;
    const runtime = copiesOf(RUNTIME).filter((c) => c.from !== undefined);
    expect(runtime.length).toBeGreaterThan(0);
    for (const copy of runtime) {
      expect(copy.from).toBe('build');
      for (const source of copy.sources) {
        expect(source.startsWith(`${workdir}/`), source).toBe(true);
        const path = posix.relative(workdir, source).replace(/\/$/, '');
        if (path === 'node_modules') {
          expect(runsOf(BUILD)).toContain('npm ci');
        } else if (path === 'dist/cni/flannel-sea') {
          // build-cni.mjs writes the SEA there (dist/cni by default) when run with --sea.
          expect(read('scripts/build-cni.mjs')).toMatch(/'dist\/cni'[\s\S]*join\(outdir, 'flannel-sea'\)/);
          expect(runsOf(BUILD)).toContain('node scripts/build-cni.mjs --sea');
        } else if (path === 'dist/native') {
          // build-native.mjs compiles native/*/*.c into dist/native during npm run build.
          expect(read('scripts/build-native.mjs')).toContain("'dist/native'");
          expect(intoBuild, 'the build stage copies native/').toContain('native');
        } else if (path.startsWith('dist/')) {
          // tsc mirrors a compiled source directory under dist/.
          const dir = path.slice('dist/'.length);
          expect(compiled, `tsconfig.json compiles ${dir}`).toContain(`${dir}/**/*.ts`);
          expect(intoBuild, `the build stage copies ${dir}/`).toContain(dir);
        } else {
          expect(intoBuild, `the build stage copies ${path}`).toContain(path);
        }
      }
    }
  });

  it('puts node_modules and package.json where dist/flanneld resolves them (package root)', () => {
    const appRoot = posix.dirname(posix.dirname(runtimePathOf(`${workdirOf(BUILD)}/dist/flanneld/`)));
    // flanneld/version.ts reads ../../package.json from dist/flanneld; Node looks for node_modules upwards.
    expect(runtimePathOf(`${workdirOf(BUILD)}/package.json`)).toBe(posix.join(appRoot, 'package.json'));
    expect(runtimePathOf(`${workdirOf(BUILD)}/node_modules/`)).toBe(posix.join(appRoot, 'node_modules'));
    expect(read('flanneld/version.ts')).toContain("'../../package.json'");
  });

  it('installs iptables, nftables, iproute2 and wireguard-go without recommends and without keeping the lists', () => {
    const runs = runsOf(RUNTIME);
    const install = /apt-get install -y --no-install-recommends ([^&]+)/.exec(runs);
    expect(install?.[1]?.trim().split(' ').sort()).toEqual(['iproute2', 'iptables', 'nftables', 'wireguard-go']);
    expect(runs.indexOf('apt-get update')).toBeLessThan(runs.indexOf('apt-get install'));
    expect(runs).toContain('rm -rf /var/lib/apt/lists/*');
  });

  it('starts flanneld: ENTRYPOINT, the symlink to the built main.js, and the DaemonSet command agree', () => {
    const entrypoints = RUNTIME.body.filter((i) => i.op === 'ENTRYPOINT');
    expect(entrypoints).toHaveLength(1);
    const entrypoint = JSON.parse(entrypoints[0]?.args ?? '') as string[];
    expect(entrypoint).toEqual(['/usr/local/bin/flanneld']);
    expect(FLANNEL.command).toEqual(entrypoint);
    const link = /ln -s (\S+) (\S+)/.exec(runsOf(RUNTIME));
    expect(link?.[2]).toBe(entrypoint[0]);
    const mainJs = posix.join(runtimePathOf(`${workdirOf(BUILD)}/dist/flanneld/`), 'main.js');
    expect(link?.[1]).toBe(mainJs);
    // tsc keeps the source shebang, and finish-build.mjs makes main.js executable, so the symlink runs it as is.
    expect(read('flanneld/main.ts')).toMatch(/^#!\/usr\/bin\/env -S node /);
    expect(read('scripts/finish-build.mjs')).toContain("'dist/flanneld/main.js'");
  });

  // image/flannel-image.ts builds the same image without Docker (umoci, Debian's packages): the lab and the
  // kubelet tests run that one, so it must hold exactly what this recipe ships.
  it('is the recipe image/ builds without Docker: same copies to the same paths, links, entrypoint, packages', () => {
    const buildRoot = workdirOf(BUILD);
    const dockerCopies = copiesOf(RUNTIME).filter((c) => c.from === 'build').flatMap((c) =>
      c.sources.map((source) => ({ from: posix.relative(buildRoot, source) + (source.endsWith('/') ? '/' : ''), to: runtimePathOf(source) })));
    const trim = (p: string): string => p.replace(/\/$/, '');
    expect(FLANNEL_COPIES.map((c) => ({ from: c.from, to: trim(c.to) }))).toEqual(dockerCopies.map((c) => ({ from: c.from, to: trim(c.to) })));
    const links = [...runsOf(RUNTIME).matchAll(/ln -s (\S+) (\S+)/g)].map((m) => ({ from: m[1], to: m[2] }));
    expect(FLANNEL_SYMLINKS).toEqual(links);
    const entrypoint = JSON.parse(RUNTIME.body.find((i) => i.op === 'ENTRYPOINT')?.args ?? '[]') as string[];
    expect(FLANNEL_CONFIG.entrypoint).toEqual(entrypoint);
    expect(FLANNEL_CONFIG.workdir).toBe(workdirOf(RUNTIME));
    const installed = /apt-get install -y --no-install-recommends ([^&]+)/.exec(runsOf(RUNTIME))?.[1]?.trim().split(' ') ?? [];
    expect(FLANNEL_BASE.packages).toEqual(expect.arrayContaining(installed));
    // The node image's suite and node path: the Debian base is the same release, node sits where the image has it.
    expect(RUNTIME.from).toBe(`node:20-${FLANNEL_BASE.suite}-slim`);
    expect(NODE_PATH).toBe('/usr/local/bin/node');
    // The manifest's image, so kube-flannel.yml applies unchanged once the archive is imported.
    expect(FLANNEL.image).toBe(`${FLANNEL_IMAGE_REPOSITORY}:${(JSON.parse(read('package.json')) as { version: string }).version}`);
  });

  it('puts the single-executable plugin where install-cni-plugin copies it from', () => {
    const seaInImage = runtimePathOf(`${workdirOf(BUILD)}/dist/cni/flannel-sea`);
    expect(seaInImage).toBe('/opt/cni-bin/flannel');
    const script = container('install-cni-plugin').command?.[2] ?? '';
    expect(script).toMatch(new RegExp(`^cp -f ${seaInImage} `));
    expect(hostPathOf(container('install-cni-plugin'), /mv -f \S+ (\S+)/.exec(script)?.[1] ?? '')).toBe('/opt/cni/bin/flannel');
  });
});
