/**
 * Drives the lab as an operator does (`node dist/lab/lab.js …`, what `npm run lab` runs after installing), for the
 * lab's real tests: run a sub-command, read its state, ping steadily between pods, and take down what a dead test
 * run left (lab ids are `t<runner pid><letter>`).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { MOUNT_NS_DIR } from '../../lab/kubelet/node-mounts.js';
import { isRunning } from '../../lab/lab-processes.js';
import { labDir, type LabState } from '../../lab/lab-state.js';
import { REPO } from './cni-invoke.js';
import { isAlive } from './processes.js';

const LAB = join(REPO, 'dist/lab/lab.js');

export interface LabRun {
  readonly code: number;
  readonly out: string;
}

export function lab(...args: string[]): Promise<LabRun> {
  return labWithin(100_000, ...args);
}

/** `lab` for sub-commands that take longer, such as a kubelet lab's `up` (images, containerd, a DaemonSet rollout). */
export function labWithin(timeoutMs: number, ...args: string[]): Promise<LabRun> {
  return new Promise((resolve) => {
    execFile('node', [LAB, ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

export const namespacesOf = (id: string): string[] => (existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(`ftl-${id}-`)) : []);
export const stateOf = (id: string): LabState => JSON.parse(readFileSync(join(labDir(id), 'state.json'), 'utf8')) as LabState;
export const subnetOf = (id: string, host: string): string => /FLANNEL_SUBNET=(\S+)/.exec(readFileSync(join(labDir(id), host, 'subnet.env'), 'utf8'))?.[1] ?? '';

/** iputils' summary (`100 packets transmitted, 98 received`) and busybox's (`…, 98 packets received`). */
export const PING_COUNTS = /(\d+) packets transmitted, (\d+) (?:packets )?received/;

/** Pings at 20 ms intervals for `count` packets; resolves with sent and received as ping counts them. */
export function steadyPing(id: string, fromPod: string, ip: string, count: number): Promise<{ sent: number; received: number }> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', `ftl-${id}-${fromPod}`, 'ping', '-q', '-i', '0.02', '-W', '1', '-c', String(count), ip]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', () => {
      const m = PING_COUNTS.exec(out);
      resolve({ sent: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0) });
    });
  });
}

export async function takeDownStaleLabs(): Promise<void> {
  const stale = new Set<string>();
  const names = [...(existsSync('/run/netns') ? readdirSync('/run/netns') : []), ...(existsSync(join(REPO, '.lab')) ? readdirSync(join(REPO, '.lab')).map((d) => `ftl-${d}-`) : []),
    // Kubelet hosts' mount namespace files outlive a run killed before its down.
    ...(existsSync(MOUNT_NS_DIR) ? readdirSync(MOUNT_NS_DIR) : [])];
  for (const name of names) {
    const m = /^ftl-(t(\d+)[a-z])-/.exec(name);
    if (m && Number(m[2]) !== process.pid && !isAlive(Number(m[2]))) stale.add(m[1] as string);
  }
  for (const id of stale) await lab('down', '--id', id);
}

/** `up` with `args`, which must print the matrix verdict `reachable` and exit 0; its output, for further checks. */
export async function upReaching(id: string, reachable: string, ...args: string[]): Promise<string> {
  const run = await labWithin(args.includes('--kubelet') ? 400_000 : 100_000, 'up', '--id', id, ...args);
  expect(run.out).toContain(reachable);
  expect(run.code, run.out).toBe(0);
  return run.out;
}

/**
 * `down`, then nothing of the lab is left: no namespace, none of its recorded processes, no state dir. `lostState`:
 * the state file is removed first, as a crash might, so `down` has only the namespace names to go by. `summary`: what
 * down must report.
 */
export async function downLeavesNothing(id: string, opts: { lostState?: boolean; summary?: RegExp } = {}): Promise<void> {
  const records = Object.values(stateOf(id).processes);
  if (opts.lostState) rmSync(join(labDir(id), 'state.json'));
  const down = await lab('down', '--id', id);
  expect(down.code, down.out).toBe(0);
  if (opts.summary) expect(down.out).toMatch(opts.summary);
  expect(namespacesOf(id)).toEqual([]);
  expect(records.filter(isRunning)).toEqual([]);
  expect(existsSync(labDir(id))).toBe(false);
}

