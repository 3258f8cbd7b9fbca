#!/usr/bin/env node
/**
 * `npm run lab -- <up|status|down> [--id NAME] [--hosts N] [--pods M] [--network CIDR] [--backend TYPE]`: a real etcd-backed
 * overlay on one machine. Every host is a network namespace named `ftl-<id>-…` on a bridge underlay in 192.0.2.0/24
 * (a documentation range); nothing in the root namespace changes. Daemons run detached and are recorded by PID in
 * the lab's state dir, so `down` stops exactly what `up` started, also after a crash.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Netns, sh } from '../helpers/netns.js';

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const FLANNELD = join(ROOT, 'dist/flanneld/main.js');
const HUB_IP = '192.0.2.254';

interface LabOptions {
  readonly command: string;
  readonly id: string;
  readonly hosts: number;
  readonly network: string;
  readonly backend: string;
  readonly pods: number;
}

interface LabState {
  readonly pids: Record<string, { pid: number; identity: string }>;
}

function parseArgs(argv: readonly string[]): LabOptions {
  const opts = { command: 'up', id: 'lab', hosts: 3, pods: 2, network: '10.244.0.0/16', backend: 'vxlan' };
  const rest = [...argv];
  if (rest[0] && !rest[0].startsWith('-')) opts.command = rest.shift() as string;
  while (rest.length > 0) {
    const flag = rest.shift() as string;
    const value = rest.shift();
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--id' && /^[a-z0-9]{1,12}$/.test(value)) opts.id = value;
    else if (flag === '--hosts' && /^\d+$/.test(value) && Number(value) >= 1 && Number(value) <= 50) opts.hosts = Number(value);
    else if (flag === '--pods' && /^\d+$/.test(value) && Number(value) <= 20) opts.pods = Number(value);
    else if (flag === '--network') opts.network = value;
    else if (flag === '--backend') opts.backend = value;
    else throw new Error(`bad option ${flag} ${value} (--id [a-z0-9]{1,12}, --hosts 1..50, --pods 0..20, --network CIDR, --backend vxlan|host-gw|alloc)`);
  }
  if (!['up', 'status', 'down'].includes(opts.command)) throw new Error(`unknown sub-command ${opts.command} (up, status, down)`);
  return opts;
}

const stateDir = (id: string): string => join(ROOT, '.lab', id);
const nsName = (id: string, short: string): string => `ftl-${id}-${short}`;

function step(text: string): () => void {
  const started = Date.now();
  process.stdout.write(`• ${text} … `);
  return () => process.stdout.write(`done (${Date.now() - started} ms)\n`);
}

function startDetached(netns: string, argv: readonly string[], logFile: string): number {
  const out = openSync(logFile, 'a');
  const child = spawn('ip', ['netns', 'exec', netns, ...argv], { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  if (child.pid === undefined) throw new Error(`cannot start ${argv[0]} in ${netns}`);
  return child.pid;
}

async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await Promise.resolve(check()).catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function up(opts: LabOptions): Promise<void> {
  await down(opts, true);
  const dir = stateDir(opts.id);
  mkdirSync(dir, { recursive: true });
  const state: LabState = { pids: {} };
  const save = (): void => writeFileSync(join(dir, 'state.json'), JSON.stringify(state, null, 2));

  let done = step('underlay bridge and etcd');
  const hub = new Netns(nsName(opts.id, 'hub'));
  await sh('ip', ['netns', 'add', hub.name]);
  await hub.ip('link', 'set', 'lo', 'up');
  await hub.ip('link', 'add', 'br0', 'type', 'bridge');
  await hub.ip('addr', 'add', `${HUB_IP}/24`, 'dev', 'br0');
  await hub.ip('link', 'set', 'br0', 'up');
  const endpoint = `http://${HUB_IP}:2379`;
  state.pids['etcd'] = {
    identity: '/usr/bin/etcd',
    pid: startDetached(hub.name, ['/usr/bin/etcd', '--name', 'lab', '--data-dir', join(dir, 'etcd'),
      '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
      '--listen-peer-urls', `http://${HUB_IP}:2380`, '--initial-advertise-peer-urls', `http://${HUB_IP}:2380`,
      '--initial-cluster', `lab=http://${HUB_IP}:2380`], join(dir, 'etcd.log')),
  };
  save();
  const config = JSON.stringify({ Network: opts.network, Backend: { Type: opts.backend } });
  await waitFor('etcd', () => hub.exec('etcdctl', [`--endpoints=${endpoint}`, 'put', '/coreos.com/network/config', config]), 20_000);
  done();

  for (let i = 1; i <= opts.hosts; i++) {
    done = step(`host h${i} (192.0.2.${i}) and its flanneld`);
    const host = new Netns(nsName(opts.id, `h${i}`));
    await sh('ip', ['netns', 'add', host.name]);
    await host.ip('link', 'set', 'lo', 'up');
    await host.ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `h${i}`, 'netns', hub.name);
    await host.ip('addr', 'add', `192.0.2.${i}/24`, 'dev', 'eth0');
    await host.ip('link', 'set', 'eth0', 'up');
    await host.ip('route', 'add', 'default', 'via', HUB_IP);
    await hub.ip('link', 'set', `h${i}`, 'master', 'br0', 'up');
    const hostDir = join(dir, `h${i}`);
    mkdirSync(hostDir, { recursive: true });
    state.pids[`h${i}`] = {
      identity: FLANNELD,
      pid: startDetached(host.name, [FLANNELD, `--etcd-endpoints=${endpoint}`, '--ip-masq',
        `--subnet-file=${join(hostDir, 'subnet.env')}`], join(hostDir, 'flanneld.log')),
    };
    save();
    done();
  }
  done = step('waiting for every flanneld to write subnet.env');
  for (let i = 1; i <= opts.hosts; i++) {
    await waitFor(`h${i} subnet.env`, () => (existsSync(join(dir, `h${i}`, 'subnet.env')) ? true : undefined), 60_000);
  }
  done();
  if (opts.pods > 0 && opts.backend !== 'alloc') {
    done = step(`${opts.pods} pod(s) per host through 10-flannel.conflist (flannel -> bridge + host-local, portmap)`);
    for (let i = 1; i <= opts.hosts; i++) await addPods(opts, i);
    done();
  }
  await status(opts);
}

/**
 * Pods through the real CNI path, as a container runtime makes them: manifests/10-flannel.conflist, our `flannel`
 * plugin, then Debian's bridge + host-local (and portmap), each run inside the host's namespace with the CNI_*
 * environment and the conflist entry on stdin. Only the file locations are pointed into the lab's state dir.
 */
async function addPods(opts: LabOptions, hostIndex: number): Promise<void> {
  const dir = stateDir(opts.id);
  const hostDir = join(dir, `h${hostIndex}`);
  const bin = join(dir, 'cni-bin');
  if (!existsSync(bin)) {
    mkdirSync(bin, { recursive: true });
    symlinkSync(join(ROOT, 'dist/cni/flannel'), join(bin, 'flannel'));
    for (const p of ['bridge', 'host-local', 'portmap', 'loopback']) symlinkSync(`/usr/lib/cni/${p}`, join(bin, p));
  }
  const conflist = JSON.parse(readFileSync(join(ROOT, 'manifests/10-flannel.conflist'), 'utf8')) as {
    name: string;
    cniVersion: string;
    plugins: Record<string, unknown>[];
  };
  const host = nsName(opts.id, `h${hostIndex}`);
  await new Netns(host).exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  for (let p = 1; p <= opts.pods; p++) {
    const pod = nsName(opts.id, `h${hostIndex}-p${p}`);
    await sh('ip', ['netns', 'add', pod]);
    await new Netns(pod).ip('link', 'set', 'lo', 'up');
    let prevResult: unknown;
    for (const plugin of conflist.plugins) {
      const conf: Record<string, unknown> = { cniVersion: conflist.cniVersion, name: conflist.name, ...plugin };
      if (plugin['type'] === 'flannel') {
        Object.assign(conf, { subnetFile: join(hostDir, 'subnet.env'), dataDir: join(hostDir, 'cni-data'), ipam: { dataDir: join(hostDir, 'ipam') } });
      }
      if (plugin['capabilities']) conf['runtimeConfig'] = { portMappings: [] };
      if (prevResult) conf['prevResult'] = prevResult;
      const out = await sh('ip', ['netns', 'exec', host, 'env', 'CNI_COMMAND=ADD', `CNI_CONTAINERID=${pod}`,
        `CNI_NETNS=/var/run/netns/${pod}`, 'CNI_IFNAME=eth0', `CNI_PATH=${bin}`, join(bin, String(plugin['type']))], JSON.stringify(conf));
      prevResult = JSON.parse(out);
    }
  }
}

/** Every pod pings every other pod once; prints the matrix and returns the number of failures. */
async function matrix(opts: LabOptions): Promise<number> {
  const pods = existsSync('/run/netns')
    ? readdirSync('/run/netns').filter((n) => new RegExp(`^ftl-${opts.id}-h\\d+-p\\d+$`).test(n)).sort()
    : [];
  if (pods.length === 0) return 0;
  const ips = new Map<string, string>();
  for (const name of pods) {
    const out = await new Netns(name).ip('-4', '-o', 'addr', 'show', 'dev', 'eth0');
    ips.set(name, /inet (\S+)\//.exec(out)?.[1] ?? '?');
  }
  const short = (n: string): string => n.slice(`ftl-${opts.id}-`.length);
  let failures = 0;
  console.log(`\n| from \\ to | ${pods.map((p) => `${short(p)} ${ips.get(p)}`).join(' | ')} |`);
  console.log(`|---|${pods.map(() => '---').join('|')}|`);
  for (const from of pods) {
    const cells = await Promise.all(pods.map(async (to) => {
      if (from === to) return '—';
      const ok = await new Netns(from).exec('ping', ['-c', '1', '-W', '1', ips.get(to) ?? '']).then(() => true, () => false);
      if (!ok) failures++;
      return ok ? 'ok' : 'FAIL';
    }));
    console.log(`| ${short(from)} | ${cells.join(' | ')} |`);
  }
  return failures;
}

async function status(opts: LabOptions): Promise<void> {
  const dir = stateDir(opts.id);
  if (!existsSync(join(dir, 'state.json'))) {
    console.log(`lab ${opts.id} is not up`);
    return;
  }
  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as LabState;
  console.log(`\n| host | public IP | subnet | MTU | VTEP MAC | flanneld |\n|---|---|---|---|---|---|`);
  for (const [name, entry] of Object.entries(state.pids)) {
    if (name === 'etcd') continue;
    let env = '';
    try {
      env = readFileSync(join(dir, name, 'subnet.env'), 'utf8');
    } catch {
      // not written yet
    }
    const get = (key: string): string => new RegExp(`^${key}=(.*)$`, 'm').exec(env)?.[1] ?? '-';
    const alive = isOurs(entry.pid, entry.identity) ? `running (pid ${entry.pid})` : 'stopped';
    const mac = await new Netns(nsName(opts.id, name)).ip('link', 'show', 'flannel.1').then((o) => /link\/ether (\S+)/.exec(o)?.[1] ?? '-', () => '-');
    console.log(`| ${name} | 192.0.2.${name.slice(1)} | ${get('FLANNEL_SUBNET')} | ${get('FLANNEL_MTU')} | ${mac} | ${alive} |`);
  }
  const leases = await new Netns(nsName(opts.id, 'hub'))
    .exec('etcdctl', [`--endpoints=http://${HUB_IP}:2379`, 'get', '--prefix', '/coreos.com/network/subnets/'])
    .catch(() => 'etcd not reachable\n');
  console.log(`\netcd leases:\n${leases}`);
  const failures = await matrix(opts);
  console.log(`\nlogs: ${dir}/<host>/flanneld.log; look around with: ip netns exec ${nsName(opts.id, 'h1')} ip route`);
  if (failures > 0) {
    console.log(`${failures} pod pair(s) cannot talk`);
    process.exitCode = 1;
  }
}

function isOurs(pid: number, identity: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(identity);
  } catch {
    return false;
  }
}

async function down(opts: LabOptions, quiet = false): Promise<void> {
  const dir = stateDir(opts.id);
  const stateFile = join(dir, 'state.json');
  if (existsSync(stateFile)) {
    const state = JSON.parse(readFileSync(stateFile, 'utf8')) as LabState;
    for (const entry of Object.values(state.pids)) {
      if (isOurs(entry.pid, entry.identity)) process.kill(entry.pid, 'SIGTERM');
    }
    await waitFor('daemons to stop', () => (Object.values(state.pids).some((e) => isOurs(e.pid, e.identity)) ? undefined : true), 10_000).catch(() => {
      for (const e of Object.values(state.pids)) if (isOurs(e.pid, e.identity)) process.kill(e.pid, 'SIGKILL');
    });
  }
  const prefix = nsName(opts.id, '');
  const names = existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(prefix)) : [];
  for (const name of names) await sh('ip', ['netns', 'del', name]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
  if (!quiet) console.log(`lab ${opts.id} is down (${names.length} namespaces removed)`);
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the lab needs root: it creates network namespaces');
  if (opts.command === 'up') await up(opts);
  else if (opts.command === 'status') await status(opts);
  else await down(opts);
}

main().catch((err: unknown) => {
  console.error(`lab: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
