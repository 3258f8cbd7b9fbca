/**
 * The lab end to end, driven as an operator drives it (`node dist/test/lab/lab.js …`, which `npm run lab` runs
 * after installing): up with 3 hosts × 2 pods for vxlan and host-gw with the whole matrix passing; a flanneld
 * restart that pods on the other hosts never notice; kill, add-pod and exec; and down leaving nothing behind.
 * Lab ids are `t<runner pid><letter>`, so a later run can take down what a dead run left.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive } from '../helpers/processes.js';
import { isRunning } from '../lab/lab-processes.js';
import { labDir, type LabState } from '../lab/lab-state.js';
import { REPO } from '../helpers/cni-invoke.js';

const LAB = join(REPO, 'dist/test/lab/lab.js');
const ids = { vxlan: `t${process.pid}v`, hostGw: `t${process.pid}g` };

interface LabRun {
  readonly code: number;
  readonly out: string;
}

function lab(...args: string[]): Promise<LabRun> {
  return new Promise((resolve) => {
    execFile('node', [LAB, ...args], { timeout: 100_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

const namespacesOf = (id: string): string[] => (existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(`ftl-${id}-`)) : []);
const stateOf = (id: string): LabState => JSON.parse(readFileSync(join(labDir(id), 'state.json'), 'utf8')) as LabState;
const subnetOf = (id: string, host: string): string => /FLANNEL_SUBNET=(\S+)/.exec(readFileSync(join(labDir(id), host, 'subnet.env'), 'utf8'))?.[1] ?? '';

/** Pings at 20 ms intervals for `count` packets; resolves with sent and received as ping counts them. */
function steadyPing(id: string, fromPod: string, ip: string, count: number): Promise<{ sent: number; received: number }> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', `ftl-${id}-${fromPod}`, 'ping', '-q', '-i', '0.02', '-W', '1', '-c', String(count), ip]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', () => {
      const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
      resolve({ sent: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0) });
    });
  });
}

async function takeDownStaleLabs(): Promise<void> {
  const stale = new Set<string>();
  const names = [...(existsSync('/run/netns') ? readdirSync('/run/netns') : []), ...(existsSync(join(REPO, '.lab')) ? readdirSync(join(REPO, '.lab')).map((d) => `ftl-${d}-`) : [])];
  for (const name of names) {
    const m = /^ftl-(t(\d+)[a-z])-/.exec(name);
    if (m && Number(m[2]) !== process.pid && !isAlive(Number(m[2]))) stale.add(m[1] as string);
  }
  for (const id of stale) await lab('down', '--id', id);
}

beforeAll(takeDownStaleLabs);
afterAll(async () => {
  for (const id of Object.values(ids)) await lab('down', '--id', id);
});

describe('lab with vxlan', () => {
  const id = ids.vxlan;

  it('comes up with 3 hosts × 2 pods and every pod reaches every other', async () => {
    const run = await lab('up', '--id', id, '--hosts', '3', '--pods', '2');
    expect(run.out).toContain('30/30 pod pairs reachable');
    expect(run.code, run.out).toBe(0);
    expect(run.out).toMatch(/• every flanneld has its lease and wrote subnet.env … done \(\d+ ms\)/);
    const state = stateOf(id);
    expect(state.hosts.map((h) => h.name)).toEqual(['h1', 'h2', 'h3']);
    expect(state.pods).toHaveLength(6);
    expect(run.out).toMatch(/\| h1 \| 192\.0\.2\.1 \| 10\.244\.\d+\.1\/24 \| 1450 \| flannel\.1 \| ([0-9a-f]{2}:){5}[0-9a-f]{2} \| running/);
    expect(run.out.match(/^\| 10\.244\.\d+\.0\/24 \| 192\.0\.2\.\d \| vxlan \|/gm)).toHaveLength(3);
    expect(readFileSync(join(labDir(id), 'h1', 'flanneld.log'), 'utf8')).toContain('"msg":"starting flanneld"');
  });

  it('restarts one flanneld while pods on the other hosts keep talking without a lost packet', async () => {
    const state = stateOf(id);
    const h2p1 = state.pods.find((p) => p.name === 'h2-p1');
    const h3p1 = state.pods.find((p) => p.name === 'h3-p1');
    const h1p1 = state.pods.find((p) => p.name === 'h1-p1');
    const subnetBefore = subnetOf(id, 'h1');
    // ~4 s of traffic at 20 ms spacing: across hosts away from h1, and into h1's pods through its datapath.
    const pings = [steadyPing(id, 'h2-p1', h3p1?.ip ?? '', 200), steadyPing(id, 'h3-p1', h1p1?.ip ?? '', 200)];
    await new Promise((r) => setTimeout(r, 500));
    const restart = await lab('restart', 'h1', '--id', id);
    expect(restart.code, restart.out).toBe(0);
    expect(restart.out).toMatch(/restart flanneld on h1 … done, pid \d+ \(\d+ ms\)/);
    const [others, intoH1] = await Promise.all(pings);
    expect(others).toEqual({ sent: 200, received: 200 });
    expect(intoH1).toEqual({ sent: 200, received: 200 });
    expect(stateOf(id).processes['h1']?.pid).not.toBe(state.processes['h1']?.pid);
    expect(subnetOf(id, 'h1')).toBe(subnetBefore);
    expect(h2p1).toBeDefined();
  });

  it('kill leaves the datapath in place and status says the daemon stopped; add-pod and exec work', async () => {
    const killed = await lab('kill', 'h2', '--id', id);
    expect(killed.code, killed.out).toBe(0);
    const status = await lab('status', '--id', id);
    expect(status.out).toMatch(/\| h2 \| 192\.0\.2\.2 \|.*\| stopped \|/);
    expect(status.out).toContain('30/30 pod pairs reachable');
    expect((await lab('kill', 'h2', '--id', id)).out).toContain('h2 is not running');
    expect((await lab('restart', 'h2', '--id', id)).code).toBe(0);

    const added = await lab('add-pod', 'h3', '--id', id);
    expect(added.code, added.out).toBe(0);
    expect(added.out).toMatch(/done, h3-p3 10\.244\.\d+\.4/);
    expect(added.out).toMatch(/^\| h3-p3 \| ok \| ok \| ok \| ok \| ok \| ok \| — \|$/m);

    const routes = await lab('exec', 'h1', '--id', id, '--', 'ip', 'route');
    expect(routes.out.match(/via 10\.244\.\d+\.0 dev flannel\.1 onlink/g)).toHaveLength(2);
    expect((await lab('exec', 'h1-p1', '--id', id, '--', 'false')).code).toBe(1);
    expect((await lab('exec', 'h9', '--id', id, '--', 'true')).out).toContain('no "h9" in lab');
  });

  it('down removes every namespace, process and file of the lab, and is safe to run again', async () => {
    const state = stateOf(id);
    const records = Object.values(state.processes);
    const down = await lab('down', '--id', id);
    expect(down.code, down.out).toBe(0);
    expect(down.out).toMatch(/4 process\(es\) stopped, 11 namespace\(s\) removed/);
    expect(namespacesOf(id)).toEqual([]);
    expect(records.filter(isRunning)).toEqual([]);
    expect(existsSync(labDir(id))).toBe(false);
    expect((await lab('down', '--id', id)).out).toContain('0 process(es) stopped, 0 namespace(s) removed');
    expect((await lab('status', '--id', id)).out).toContain(`lab "${id}" is not up`);
  });
});

describe('lab with host-gw', () => {
  const id = ids.hostGw;

  it('comes up with 3 hosts × 2 pods, routes via the hosts, the whole matrix passes, and goes down clean', async () => {
    const run = await lab('up', '--id', id, '--backend', 'host-gw');
    expect(run.out).toContain('30/30 pod pairs reachable');
    expect(run.code, run.out).toBe(0);
    const routes = await lab('exec', 'h1', '--id', id, '--', 'ip', 'route');
    expect(routes.out.match(/10\.244\.\d+\.0\/24 via 192\.0\.2\.[23] dev eth0/g)).toHaveLength(2);
    expect((await lab('down', '--id', id)).code).toBe(0);
    expect(namespacesOf(id)).toEqual([]);
  });
});
