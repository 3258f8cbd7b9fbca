#!/usr/bin/env node
/**
 * The kubelet lab (`node dist/lab/lab.js up --kubelet`, lab/lab-kubelet.ts) as a cluster users run: how long it
 * takes to come up, and how long a pod takes from `kubectl create` to Running with an address, against the same
 * thing without the pod network.
 *
 * 1. `up --kubelet --hosts 2 --pods 0 --id bkp`, run as an operator runs it (a child process; a lab left with that
 *    id by an earlier run is taken down first, not counted). The whole is our wall clock from spawn to exit; each
 *    step's own duration is parsed from its progress line (`• <step> … done (N ms)`): control plane, images
 *    (cached after the first build), the kubelet hosts (containerd with the images imported, kubelet, kube-proxy,
 *    each Node registered), `kubectl apply -f manifests/kube-flannel.yml` until every kube-flannel pod is Ready.
 * 2. Pod start-up. One long-lived `kubectl get pods -w -o json --output-watch-events` runs in the hub from before the
 *    first pod; every event it prints is stamped on arrival here. Pods are created one at a time with `kubectl
 *    create` (in the hub, as the lab runs kubectl), pinned to a node by its hostname label, alternating h1, h2; t0 is
 *    taken just before that kubectl starts, so t0 → t1 includes kubectl's own start-up, measured on its own below.
 *    t1 is the arrival of the first watch event showing the pod with phase Running and a podIP. Two kinds are
 *    interleaved in the same run (c, n, n, c, … so each kind goes first half the time and each alternates nodes):
 *    pods on the pod network (containerd calls the flannel CNI plugin: bridge + host-local through flannel-ts), and
 *    the floor, hostNetwork pods (no CNI call at all: kubelet, containerd, runc and the pause sandbox alone). Both
 *    run busybox's `sleep` from the lab's pod image. 50 of each are counted after 2 of each warming up.
 *    After its t1 each pod is deleted (`--grace-period=0 --force`) and the next waits until the node has settled:
 *    every container task the pod added is gone from the node's containerd and, for a pod-network pod, host-local
 *    has released its address (CNI DEL done), so no sample overlaps the previous pod's teardown and a node never
 *    holds more than the pod being measured. That settling time is reported too (informational).
 * Every wait is bounded: 60 s per pod to Running, 30 s to settle, and the benchmark's own deadline; the lab is torn
 * down (`lab.js down`, a detached process, so it finishes even if this one is killed) on success, failure and signals.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { POD_IMAGE } from '../../image/lab-images.js';
import { kubectlFor } from '../../lab/kube/control-plane.js';
import type { Kubectl } from '../../lab/kube/kubectl.js';
import { nodeMountsOf } from '../../lab/kubelet/kubelet-host.js';
import { privateDirOf } from '../../lab/kubelet/node-mounts.js';
import { labControlPlane } from '../../lab/lab-kube.js';
import { labDir, labNetnsPrefix, REPO_ROOT, requireLabState, type HostRecord } from '../../lab/lab-state.js';
import { sh } from '../../lab/netns.js';
import { spawnTracked, type TrackedProcess } from '../helpers/processes.js';
import { type BenchContext, benchMain, latencyCells, median, ms, now, percentile, ratio, sleep, table, timed } from './bench-kit.js';

const ID = 'bkp';
const HOSTS = 2;
const PODS = 50;
const WARMUP = 2;
const KUBECTL_RUNS = 10;
const UP_TIMEOUT_MS = 420_000;
const DOWN_TIMEOUT_MS = 150_000;
const POD_TIMEOUT_MS = 60_000;
const SETTLE_TIMEOUT_MS = 30_000;
/** Left for deleting the last pod, the tables and `down` when the deadline stops the sampling early. */
const RESERVE_MS = 100_000;
const MAX_MISSED = 5;
const LAB = join(REPO_ROOT, 'dist/lab/lab.js');
const LABEL = 'flannel-ts.bench/kubelet-pods';
const IMAGE = `${POD_IMAGE.repository}:${POD_IMAGE.tag}`;

type Kind = 'pod' | 'host';
/** Order of the kinds over each four pods: every kind alternates nodes and goes first in half the rounds. */
const PATTERN: readonly Kind[] = ['pod', 'host', 'host', 'pod'];

// ---------------------------------------------------------------------------------------------------------------
// The lab, as an operator drives it.

interface Step {
  readonly text: string;
  readonly outcome: string;
  readonly ms: number;
}

interface UpRun {
  readonly wallMs: number;
  readonly steps: readonly Step[];
  readonly replaced: boolean;
}

const STEP_LINE = /^• (.+) … (done|failed)(?:, (.+?))? \((\d+) ms\)$/;

async function labUp(ctx: BenchContext): Promise<UpRun> {
  const started = now();
  const proc = spawnTracked(process.execPath, [LAB, 'up', '--kubelet', '--id', ID, '--hosts', String(HOSTS), '--pods', '0'],
    { stdio: ['ignore', 'pipe', 'pipe'] }, LAB);
  ctx.defer(() => proc.stop('SIGTERM', 10_000));
  const steps: Step[] = [];
  let replaced = false;
  let buffer = '';
  proc.child.stdout!.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (/^lab \S+ exists; replacing it/.test(line)) replaced = true;
      const m = STEP_LINE.exec(line);
      if (m) {
        steps.push({ text: m[1] as string, outcome: m[3] ? `${m[2]}, ${m[3]}` : (m[2] as string), ms: Number(m[4]) });
        ctx.note(`up: ${line.slice(2)}`);
      }
    }
  });
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    proc.exited,
    new Promise<string>((resolve) => (timer = setTimeout(() => resolve('timeout'), UP_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (code === 'timeout') {
    await proc.stop('SIGTERM', 10_000);
    throw new Error(`lab up did not finish in ${UP_TIMEOUT_MS / 1000} s; the end of its output:\n${proc.output().slice(-2000)}`);
  }
  if (code !== 0) throw new Error(`lab up exited with ${code}; the end of its output:\n${proc.output().slice(-3000)}${hostLogTails()}`);
  return { wallMs: now() - started, steps, replaced };
}

/** The end of each host's logs, for a failed `up`: the teardown removes the lab's folder with them. */
function hostLogTails(): string {
  const dir = labDir(ID);
  const hosts = existsSync(dir) ? readdirSync(dir).filter((d) => /^h\d+$/.test(d)) : [];
  return hosts.flatMap((h) => ['containerd', 'kubelet'].map((role) => {
    const file = join(dir, h, `${role}.log`);
    const lines = existsSync(file) ? readFileSync(file, 'utf8').trimEnd().split('\n').slice(-8).join('\n') : '(no log)';
    return `\n--- ${h}/${role}.log:\n${lines}`;
  })).join('');
}

/** `lab.js down`, detached with its output in a file: it finishes even if this process is killed meanwhile. */
async function labDown(): Promise<{ code: number | string; ms: number; out: string }> {
  const started = now();
  const log = join(tmpdir(), `kubelet-pods-down-${process.pid}.log`);
  const fd = openSync(log, 'w');
  const child = spawn(process.execPath, [LAB, 'down', '--id', ID], { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    new Promise<number | string>((resolve) => child.once('exit', (c, s) => resolve(c ?? s ?? 'unknown'))),
    new Promise<string>((resolve) => (timer = setTimeout(() => resolve('still running'), DOWN_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  const out = existsSync(log) ? readFileSync(log, 'utf8').trim() : '';
  if (code !== 'still running') rmSync(log, { force: true });
  return { code, ms: now() - started, out };
}

/** Parent → children over every process, from /proc/<pid>/stat. */
function childrenByParent(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // Gone meanwhile.
    }
  }
  return children;
}

/**
 * Only when `lab.js down` failed: what it would have done, without the host mount namespace files it needs (another
 * lab's `up` can hide them, see the notes). Every process in the lab's namespaces and below it (containers in pod
 * namespaces are children of their shims) is SIGKILLed by PID, hosts before the hub; the empty cgroups runc leaves
 * for killed containers, the namespaces and the lab's folder are removed. Returns what it did.
 */
async function sweepLab(): Promise<string> {
  const names = existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(labNetnsPrefix(ID))) : [];
  const children = childrenByParent();
  const treeOf = (pid: number, out: Set<number>): void => {
    if (out.has(pid)) return;
    out.add(pid);
    for (const c of children.get(pid) ?? []) treeOf(c, out);
  };
  const doomed = new Set<number>();
  for (const ns of [...names.filter((n) => !n.endsWith('-hub')), ...names.filter((n) => n.endsWith('-hub'))]) {
    const pids = (await sh('ip', ['netns', 'pids', ns]).catch(() => '')).split('\n').map(Number).filter((p) => p > 1 && p !== process.pid);
    for (const pid of pids) treeOf(pid, doomed);
  }
  doomed.delete(process.pid);
  for (const pid of doomed) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
  for (const deadline = now() + 10_000; [...doomed].some((p) => existsSync(`/proc/${p}`)) && now() < deadline; await sleep(100));
  let cgroups = 0;
  const hostDirs = existsSync(labDir(ID)) ? readdirSync(labDir(ID)).map((d) => join(labDir(ID), d, 'node')).filter(existsSync) : [];
  const controllers = existsSync('/sys/fs/cgroup') ? readdirSync('/sys/fs/cgroup') : [];
  for (const root of hostDirs) {
    const taskDir = join(privateDirOf(root, '/run/containerd'), 'io.containerd.runtime.v2.task', 'k8s.io');
    for (const id of existsSync(taskDir) ? readdirSync(taskDir) : []) {
      for (const controller of controllers) {
        try {
          rmdirSync(join('/sys/fs/cgroup', controller, 'k8s.io', id));
          cgroups++;
        } catch {
          // Not there, or not empty.
        }
      }
    }
  }
  for (const ns of names) await sh('ip', ['netns', 'del', ns]).catch(() => undefined);
  rmSync(labDir(ID), { recursive: true, force: true });
  return `${doomed.size} process(es) killed, ${cgroups} cgroup folder(s) and ${names.length} namespace(s) removed, ${labDir(ID)} removed`;
}

interface Teardown {
  /** `lab.js down`'s own run time (a sweep's is in `text`). */
  readonly ms: number;
  /** `lab.js down` did it all. */
  readonly ok: boolean;
  readonly text: string;
}

/** `lab.js down`; if it fails, the sweep by PID, so nothing of the lab keeps running either way. */
async function teardownLab(): Promise<Teardown> {
  const d = await labDown();
  const last = d.out.split('\n').pop() ?? '';
  if (d.code === 0) return { ms: d.ms, ok: true, text: last };
  const started = now();
  const swept = await sweepLab();
  return { ms: d.ms, ok: false, text: `**lab.js down failed** (exit ${d.code}: ${last}); swept by PID instead in ${ms(now() - started)}: ${swept}` };
}

// ---------------------------------------------------------------------------------------------------------------
// The pod watch in the hub.

interface PodSeen {
  added?: number;
  scheduled?: number;
  running?: number;
  ip?: string;
  deleted?: number;
}

interface WatchEvent {
  readonly type?: string;
  readonly object?: {
    readonly metadata?: { readonly name?: string };
    readonly spec?: { readonly nodeName?: string };
    readonly status?: { readonly phase?: string; readonly podIP?: string };
  };
}

interface PodWatch {
  readonly seen: ReadonlyMap<string, PodSeen>;
  /** Events parsed so far. */
  events(): number;
  check(): void;
}

/**
 * Splits kubectl's stream of indented JSON documents at each top-level closing brace (strings and escapes
 * respected); each document gets the arrival stamp of the chunk that completed it.
 */
function jsonSplitter(onDoc: (text: string, at: number) => void): (chunk: string) => void {
  let text = '';
  let depth = 0;
  let inString = false;
  let escaped = false;
  let start = -1;
  return (chunk) => {
    const at = now();
    const from = text.length;
    text += chunk;
    for (let i = from; i < text.length; i++) {
      const ch = text[i];
      if (inString) {
        if (escaped) escaped = false;
        else if (ch === '\\') escaped = true;
        else if (ch === '"') inString = false;
        continue;
      }
      if (ch === '"') inString = true;
      else if (ch === '{') {
        if (depth === 0) start = i;
        depth++;
      } else if (ch === '}' && depth > 0 && --depth === 0) {
        onDoc(text.slice(start, i + 1), at);
        text = text.slice(i + 1);
        i = -1;
        start = -1;
      }
    }
    if (depth === 0) text = '';
  };
}

function startPodWatch(ctx: BenchContext, kubectl: Kubectl): PodWatch {
  const proc: TrackedProcess = spawnTracked('ip', ['netns', 'exec', kubectl.hub.name, kubectl.binary, `--kubeconfig=${kubectl.kubeconfig}`,
    'get', 'pods', '-n', 'default', '-l', LABEL, '--watch', '-o', 'json', '--output-watch-events'], { stdio: ['ignore', 'pipe', 'pipe'] }, kubectl.binary);
  ctx.defer(() => proc.stop('SIGTERM', 3000));
  const seen = new Map<string, PodSeen>();
  let count = 0;
  let fatal: string | undefined;
  proc.child.stdout!.setEncoding('utf8');
  proc.child.stdout!.on('data', jsonSplitter((doc, at) => {
    let event: WatchEvent;
    try {
      event = JSON.parse(doc) as WatchEvent;
    } catch {
      fatal = `the pod watch printed something that is not JSON: ${doc.slice(0, 200)}`;
      return;
    }
    count++;
    const name = event.object?.metadata?.name;
    if (!name) return;
    const s = seen.get(name) ?? {};
    s.added ??= at;
    if (event.object?.spec?.nodeName) s.scheduled ??= at;
    const ip = event.object?.status?.podIP;
    if (event.object?.status?.phase === 'Running' && ip && s.running === undefined) {
      s.running = at;
      s.ip = ip;
    }
    if (event.type === 'DELETED') s.deleted ??= at;
    seen.set(name, s);
  }));
  void proc.exited.then((code) => (fatal ??= `the pod watch exited with ${code}: ${proc.output().slice(-500)}`));
  return {
    seen,
    events: () => count,
    check() {
      if (fatal !== undefined) throw new Error(fatal);
    },
  };
}

/** Polls in-memory state (no system calls) every 5 ms; undefined after `timeoutMs`. */
async function until<T>(check: () => T | undefined, timeoutMs: number): Promise<T | undefined> {
  for (const deadline = now() + timeoutMs; ; await sleep(5)) {
    const v = check();
    if (v !== undefined || now() > deadline) return v;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Pods.

function benchPod(name: string, node: string, kind: Kind): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { [LABEL]: kind } },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': node },
      ...(kind === 'host' ? { hostNetwork: true } : {}),
      terminationGracePeriodSeconds: 0,
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      // A shell that leaves on SIGTERM: the kubelet never kills with less than 2 s of grace, which a PID 1 without a
      // handler (a bare sleep) would wait out on every delete.
      containers: [{ name: 'sleep', image: IMAGE, imagePullPolicy: 'Never', command: ['/bin/sh', '-c', "trap 'exit 0' TERM; sleep 3600 & wait"] }],
    },
  };
}

/**
 * The container tasks (sandboxes included) the node's containerd runs: its task bundles, one folder per task in the
 * host's private /run/containerd, made when the task is created and removed when it is deleted. Read from here
 * rather than with `ctr` through the host's mount namespace file: no process per poll, and it keeps working when
 * that file is hidden (see the lab notes in the report).
 */
function tasksOf(host: HostRecord): Set<string> {
  const dir = join(privateDirOf(nodeMountsOf(host).root, '/run/containerd'), 'io.containerd.runtime.v2.task', 'k8s.io');
  try {
    return new Set(readdirSync(dir));
  } catch {
    return new Set();
  }
}

/** host-local's reservation of a pod address on the node (the conflist's network is cbr0). */
const reservationOf = (host: HostRecord, ip: string): string => join(privateDirOf(nodeMountsOf(host).root, '/var/lib/cni'), 'networks', 'cbr0', ip);

interface Sample {
  readonly name: string;
  readonly kind: Kind;
  readonly node: string;
  readonly t0: number;
  readonly createdMs: number;
  readonly addedMs?: number;
  readonly scheduledMs?: number;
  readonly runningMs?: number;
  readonly ip?: string;
  /** Delete issued → the watch shows DELETED. */
  readonly goneMs?: number;
  /** Delete issued → the node's tasks back to before the pod (and its address released). */
  readonly settledMs?: number;
  readonly reservationSeen?: boolean;
}

async function measurePod(kubectl: Kubectl, watch: PodWatch, host: HostRecord, name: string, kind: Kind): Promise<Sample> {
  const before = tasksOf(host);
  const t0 = now();
  await kubectl.run(['create', '-f', '-'], JSON.stringify(benchPod(name, host.name, kind)), 20_000);
  const createdMs = now() - t0;
  await until(() => watch.seen.get(name)?.running, POD_TIMEOUT_MS);
  const s = watch.seen.get(name) ?? {};
  const since = (t: number | undefined): number | undefined => (t === undefined ? undefined : t - t0);
  const reservation = kind === 'pod' && s.ip ? reservationOf(host, s.ip) : undefined;
  const reservationSeen = reservation !== undefined && existsSync(reservation);

  const d0 = now();
  await kubectl.run(['delete', 'pod', name, '--grace-period=0', '--force', '--wait=false'], undefined, 20_000);
  let settledMs: number | undefined;
  for (const deadline = d0 + SETTLE_TIMEOUT_MS; now() < deadline; await sleep(20)) {
    const tasksGone = [...tasksOf(host)].every((t) => before.has(t));
    if (tasksGone && !(reservationSeen && existsSync(reservation))) {
      settledMs = now() - d0;
      break;
    }
  }
  await until(() => watch.seen.get(name)?.deleted, 5_000);
  const deleted = watch.seen.get(name)?.deleted;
  return {
    name, kind, node: host.name, t0, createdMs,
    ...opt('addedMs', since(s.added)), ...opt('scheduledMs', since(s.scheduled)), ...opt('runningMs', since(s.running)),
    ...opt('ip', s.ip), ...opt('goneMs', deleted === undefined ? undefined : deleted - d0), ...opt('settledMs', settledMs),
    ...(kind === 'pod' ? { reservationSeen } : {}),
  };
}

/** `{ key: v }` when v is defined, else nothing (exactOptionalPropertyTypes). */
function opt<K extends string, V>(key: K, v: V | undefined): Partial<Record<K, V>> {
  return v === undefined ? {} : ({ [key]: v } as Record<K, V>);
}


const mean = (v: readonly number[]): number => (v.length === 0 ? Number.NaN : v.reduce((a, b) => a + b, 0) / v.length);
const statCells = (v: readonly number[]): string[] =>
  [String(v.length), ms(percentile(v, 50)), ms(percentile(v, 99)), ms(v.length ? Math.max(...v) : Number.NaN), ms(mean(v))];
const escapeCell = (text: string): string => text.replace(/\|/g, '\\|');

benchMain({
  tag: 'kp',
  title: `Kubelet lab: \`up --kubelet\` (${HOSTS} hosts) and pod creation → Running with an address (${PODS} pods on the pod network vs ${PODS} hostNetwork pods)`,
  deadlineMs: 840_000,
  body: async (ctx) => {
    let down: Teardown | undefined;
    ctx.defer(async () => {
      if (down) return;
      const d = await teardownLab();
      process.stderr.write(`kp: lab ${ID} torn down in ${ms(d.ms)}: ${d.text}\n`);
    });

    // A lab left with this id (an earlier run killed hard) is taken down first, so `up` is timed from nothing.
    let leftover = '';
    if (existsSync(labDir(ID)) || (existsSync('/run/netns') && readdirSync('/run/netns').some((n) => n.startsWith(labNetnsPrefix(ID))))) {
      leftover = (await teardownLab()).text;
      ctx.note(`a lab ${ID} was left: ${leftover}`);
    }
    ctx.note(`lab up --kubelet --id ${ID} --hosts ${HOSTS} --pods 0`);
    const up = await labUp(ctx);
    ctx.note(`lab up in ${ms(up.wallMs)}`);
    const state = requireLabState(ID);
    const kubectl = kubectlFor(labControlPlane(state));
    const hosts = state.hosts;
    if (hosts.length !== HOSTS) throw new Error(`lab ${ID} has ${hosts.length} hosts, expected ${HOSTS}`);

    const watch = startPodWatch(ctx, kubectl);
    // The watch has no pods to list; give it a moment to hold its watch (the warm-up pods absorb the rest).
    await sleep(1000);
    watch.check();

    const samples: Sample[] = [];
    const warm: Sample[] = [];
    const missed: string[] = [];
    const unsettled: string[] = [];
    const total = (WARMUP + PODS) * 2;
    let stoppedEarly = '';
    for (let k = 0; k < total; k++) {
      if (ctx.remainingMs() < RESERVE_MS + POD_TIMEOUT_MS) {
        stoppedEarly = `stopped after ${k} of ${total} pods: the benchmark's deadline was near`;
        ctx.note(stoppedEarly);
        break;
      }
      watch.check();
      const kind = PATTERN[k % PATTERN.length] as Kind;
      const host = hosts[k % HOSTS] as HostRecord;
      const name = `bkp-${kind === 'pod' ? 'c' : 'n'}${String(k).padStart(3, '0')}`;
      const sample = await measurePod(kubectl, watch, host, name, kind);
      if (sample.runningMs === undefined) missed.push(`${name} on ${host.name}`);
      if (sample.settledMs === undefined) unsettled.push(`${name} on ${host.name}`);
      (k < WARMUP * 2 ? warm : samples).push(sample);
      if ((k + 1) % 10 === 0) ctx.note(`${k + 1}/${total} pods; last ${name} ${ms(sample.runningMs ?? Number.NaN)} to Running, settled ${ms(sample.settledMs ?? Number.NaN)}`);
      if (missed.length > MAX_MISSED) throw new Error(`more than ${MAX_MISSED} pods not Running within ${POD_TIMEOUT_MS / 1000} s: ${missed.join(', ')}`);
    }
    watch.check();

    ctx.note('kubectl side by side; versions');
    const kubectlClient = await timed(KUBECTL_RUNS, () => kubectl.run(['version', '--client', '-o', 'json']));
    const versions = JSON.parse(await kubectl.run(['version', '-o', 'json'])) as { clientVersion?: { gitVersion?: string }; serverVersion?: { gitVersion?: string } };
    const nodeInfo = (await kubectl.nodes())[0]?.status?.nodeInfo;
    const count = async (args: readonly string[]): Promise<number> => (await kubectl.run(['get', 'pods', ...args, '--no-headers'])).split('\n').filter(Boolean).length;
    const left = await count(['-A']);
    const benchLeft = await count(['-n', 'default', '-l', LABEL]);

    ctx.note('lab down');
    down = await teardownLab();
    ctx.note(`lab ${ID} torn down: ${down.text}`);

    // ---- tables
    const stepRows = up.steps.map((s) => [escapeCell(s.text), ms(s.ms), escapeCell(s.outcome.replace(/^done,? ?/, '') || '')]);
    const stepsSum = up.steps.reduce((a, s) => a + s.ms, 0);
    const upTable = table(['`lab.js up --kubelet --hosts 2 --pods 0`, step (its own progress line)', 'took', 'detail'], [
      ...stepRows,
      ['rest: node start-up, tools check, state, the final report' + (up.replaced ? ', and replacing the lab left with this id' : ''), ms(up.wallMs - stepsSum), ''],
      ['**whole `up`, spawn to exit**', `**${ms(up.wallMs)}**`, ''],
      ['`lab.js down` afterwards', ms(down.ms), escapeCell(down.text)],
    ]);

    const of = (kind: Kind, f: (s: Sample) => number | undefined): number[] =>
      samples.filter((s) => s.kind === kind).map(f).filter((v): v is number => v !== undefined && Number.isFinite(v));
    const cni = of('pod', (s) => s.runningMs);
    const floor = of('host', (s) => s.runningMs);
    const head = ['create → Running with an address (t0 before `kubectl create`, t1 the watch event)', 'samples', 'p50', 'p99', 'max', 'p50 vs floor', 'p99 vs floor'];
    const podTable = table(head, [
      ['floor: hostNetwork pod (kubelet + containerd, no CNI)', String(floor.length), ...latencyCells(floor, floor)],
      ['**pod network: flannel CNI plugin (bridge + host-local)**', String(cni.length), ...latencyCells(cni, floor)],
    ]);
    const added = (f: (s: Sample) => number | undefined): string => {
      const a = of('pod', f);
      const b = of('host', f);
      return `${ms(percentile(a, 50) - percentile(b, 50))} at p50`;
    };
    const breakdown = table(['where the time goes', 'kind', 'samples', 'p50', 'p99', 'max', 'mean'], [
      ['t0 → `kubectl create` exits (kubectl start-up, POST, 201)', 'pod network', ...statCells(of('pod', (s) => s.createdMs))],
      ['', 'hostNetwork', ...statCells(of('host', (s) => s.createdMs))],
      ['t0 → the watch sees the pod (ADDED)', 'pod network', ...statCells(of('pod', (s) => s.addedMs))],
      ['', 'hostNetwork', ...statCells(of('host', (s) => s.addedMs))],
      ['t0 → the watch sees spec.nodeName (kube-scheduler bound it)', 'pod network', ...statCells(of('pod', (s) => s.scheduledMs))],
      ['', 'hostNetwork', ...statCells(of('host', (s) => s.scheduledMs))],
      ['bound → Running with an address (kubelet, containerd, CNI, status write)', 'pod network',
        ...statCells(of('pod', (s) => (s.runningMs === undefined || s.scheduledMs === undefined ? undefined : s.runningMs - s.scheduledMs)))],
      ['', 'hostNetwork', ...statCells(of('host', (s) => (s.runningMs === undefined || s.scheduledMs === undefined ? undefined : s.runningMs - s.scheduledMs)))],
    ]);
    const teardown = table(['after the measurement (informational): delete with --grace-period=0 --force →', 'kind', 'samples', 'p50', 'p99', 'max', 'mean'], [
      ['the watch sees DELETED', 'pod network', ...statCells(of('pod', (s) => s.goneMs))],
      ['', 'hostNetwork', ...statCells(of('host', (s) => s.goneMs))],
      ['node settled: its containers gone (and for the pod network, the address released by CNI DEL)', 'pod network', ...statCells(of('pod', (s) => s.settledMs))],
      ['', 'hostNetwork', ...statCells(of('host', (s) => s.settledMs))],
    ]);
    const clients = table(['client cost, inside t0 → t1 (kubectl in the hub namespace, via `ip netns exec`)', 'runs', 'median', 'p99'], [
      ['`kubectl version --client` (start-up, no request)', String(kubectlClient.length), ms(median(kubectlClient)), ms(percentile(kubectlClient, 99))],
    ]);
    const warmText = warm.map((s) => `${s.name} on ${s.node} ${ms(s.runningMs ?? Number.NaN)}`).join(', ');
    const noReservation = samples.filter((s) => s.kind === 'pod' && s.reservationSeen === false).length;
    const notes = [
      `Versions: kube-apiserver ${versions.serverVersion?.gitVersion ?? 'unknown'}, kubelet ${nodeInfo?.kubeletVersion ?? 'unknown'}, ` +
        `kubectl ${versions.clientVersion?.gitVersion ?? 'unknown'}, ${nodeInfo?.containerRuntimeVersion ?? 'containerd (version unknown)'}, Node ${process.version}; flannel-ts from this tree as the DaemonSet of manifests/kube-flannel.yml (${state.backendType}).`,
      ...(leftover ? [`A lab ${ID} left by an earlier run was taken down before \`up\` (not counted): ${leftover}.`] : []),
      `Pods: ${WARMUP} of each kind warming up (not counted: ${warmText}), then ${samples.length} measured, alternating h1 and h2, ` +
        `interleaved c, n, n, c; at the end ${left} pods in the cluster, ${benchLeft} of them ours.` +
        (stoppedEarly ? ` ${stoppedEarly}.` : ''),
      `What the pod network adds: ${added((s) => s.runningMs)} create → Running (ratio ${ratio(percentile(cni, 50), percentile(floor, 50))}); ` +
        `of which after the bind ${added((s) => (s.runningMs === undefined || s.scheduledMs === undefined ? undefined : s.runningMs - s.scheduledMs))}. ` +
        `kubectl's start-up (${ms(median(kubectlClient))}) is in both kinds' t0 → t1 alike.`,
      't0: just before `kubectl create -f -` is spawned (through `ip netns exec` into the hub). t1: arrival here of the watch event of ' +
        '`kubectl get pods -w -o json --output-watch-events` (one process in the hub from before the first pod) that first shows phase Running and a podIP. ' +
        'The kubelet writes the pod status after the container started (its status manager), so t1 includes that write and the watch\'s delivery. ' +
        'p99 is by nearest rank: over 50 samples it is the maximum.',
      `Pods not Running with an address within ${POD_TIMEOUT_MS / 1000} s: ${missed.length}${missed.length ? ` (${missed.slice(0, 5).join(', ')})` : ''}; ` +
        `nodes not settled within ${SETTLE_TIMEOUT_MS / 1000} s of a delete: ${unsettled.length}${unsettled.length ? ` (${unsettled.slice(0, 5).join(', ')})` : ''}` +
        (noReservation ? `; pod-network pods whose host-local reservation was not found to watch: ${noReservation}` : '') + '.',
      ...(down.ok ? [] : ['`lab.js down` failed, so the lab was swept by PID (first table). What neither removes: the hosts\' mount namespace ' +
        'files in /run/flannel-ts/mountns stay busy (EBUSY) once a kubelet lab\'s `up` has bound that folder over itself above a namespace ' +
        'mounted on the same file name (this lab\'s, or one an earlier lab with this id left hidden there).']),
    ];
    return `${upTable}\n\n${podTable}\n\n${breakdown}\n\n${teardown}\n\n${clients}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;
  },
});
