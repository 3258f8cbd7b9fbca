import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { WgCurrentPeers, WgDeviceConfig, WgDeviceState, WgPeerConfig } from '../../../../backends/wireguard/uapi.js';
import { SECOND_GREETING_DELAY_MS } from '../../../../backends/wireguard/wg-greeting.js';
import { encodeWgKey, wgPublicKey } from '../../../../backends/wireguard/wg-key.js';
import {
  OutputTail, READY_TIMEOUT_MS, STABLE_UP_MS, STOP_GRACE_MS, spawnChild, startWireguardGo,
  type WgExit, type WgProcess, type WireguardGoHandle,
} from '../../../../backends/wireguard/wireguard-go.js';
import { FlannelError } from '../../../../flanneld/runtime/errors.js';
import { ManualClock } from '../../../helpers/manual-clock.js';
import { memoryLog } from '../../../helpers/test-log.js';

const PRIVATE = Buffer.alloc(32, 0x11).toString('base64');
const PEER = Buffer.alloc(32, 0xaa).toString('base64');
const CONFIG: WgDeviceConfig = { privateKey: PRIVATE, listenPort: 51820, peers: [] };
const STATE: WgDeviceState = { privateKey: PRIVATE, listenPort: 51820, fwmark: 0, peers: [] };

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

/** Lets every promise chain the supervisor started run to its next wait on the clock. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** How a spawned fake behaves: answers on its socket at once, only when told, or is not installed. */
type Plan = 'ready' | 'silent' | 'enoent';

class FakeProcess implements WgProcess {
  readonly signals: NodeJS.Signals[] = [];
  exit: WgExit | undefined;
  listening = false;
  /** Signals the process dies of; wireguard-go exits on SIGTERM, and nothing survives SIGKILL. */
  diesOn: NodeJS.Signals[] = ['SIGTERM', 'SIGKILL'];
  private readonly outputListeners: ((text: string) => void)[] = [];
  private exitListener: ((exit: WgExit) => void) | undefined;

  constructor(readonly pid: number | undefined) {}

  onOutput(listener: (text: string) => void): void {
    this.outputListeners.push(listener);
  }

  onExit(listener: (exit: WgExit) => void): void {
    this.exitListener = listener;
  }

  kill(signal: NodeJS.Signals): void {
    this.signals.push(signal);
    if (this.diesOn.includes(signal)) queueMicrotask(() => this.end({ code: null, signal }));
  }

  print(text: string): void {
    for (const listener of this.outputListeners) listener(text);
  }

  end(exit: WgExit): void {
    if (this.exit) return;
    this.exit = exit;
    this.listening = false;
    this.exitListener?.(exit);
  }
}

/** A spawner of fake processes and a UAPI that answers while the latest process listens. */
function fakeHost() {
  const clock = new ManualClock();
  const { log, lines } = memoryLog();
  const plans: Plan[] = [];
  const spawnTimes: number[] = [];
  const spawns: { command: string; args: readonly string[]; env: NodeJS.ProcessEnv }[] = [];
  const processes: FakeProcess[] = [];
  const sets: { config: WgDeviceConfig; current?: WgCurrentPeers | undefined; remove?: readonly string[] }[] = [];
  const kicks: string[][] = [];
  /** Peers the device reports a handshake with. */
  const handshaken: string[] = [];
  const events: string[] = [];
  const live = (): FakeProcess => {
    const proc = processes.at(-1);
    if (!proc?.listening) throw new FlannelError('ERR_DEVICE', 'connect ECONNREFUSED');
    return proc;
  };
  const host = {
    clock, lines, plans, spawns, spawnTimes, processes, sets, kicks, handshaken, events,
    get current(): FakeProcess {
      return processes.at(-1)!;
    },
    options: {
      device: 'wg0',
      clock,
      log,
      spawn: (command: string, args: readonly string[], env: NodeJS.ProcessEnv): WgProcess => {
        spawns.push({ command, args, env });
        spawnTimes.push(clock.now());
        const proc = new FakeProcess(1000 + processes.length);
        processes.push(proc);
        const plan = plans.shift() ?? 'ready';
        if (plan === 'ready') proc.listening = true;
        if (plan === 'enoent') {
          const error = Object.assign(new Error('spawn wireguard-go ENOENT'), { code: 'ENOENT' });
          queueMicrotask(() => proc.end({ code: null, signal: null, error }));
        }
        return proc;
      },
      uapi: () => ({
        get: async () => {
          live();
          return { ...STATE, peers: handshaken.map((publicKey) => ({ publicKey, presharedKey: undefined, endpoint: undefined, persistentKeepalive: 0, allowedIps: [], lastHandshakeMs: 1, rxBytes: 0, txBytes: 0 })) };
        },
        set: async (config: WgDeviceConfig, current?: WgCurrentPeers) => {
          live();
          sets.push({ config, current });
        },
        update: async (config: WgDeviceConfig, remove: readonly string[]) => {
          live();
          sets.push({ config, remove });
        },
        kick: async (peers: readonly WgPeerConfig[]) => {
          live();
          kicks.push(peers.map((p) => p.publicKey));
        },
      }),
      onDown: (reason: string) => events.push(`down: ${reason}`),
      onUp: () => events.push('up'),
    },
  };
  return host;
}

type Host = ReturnType<typeof fakeHost>;

async function started(host: Host, socketDir?: string): Promise<WireguardGoHandle> {
  const handle = await startWireguardGo({ ...host.options, socketDir });
  cleanups.push(() => void handle.stop());
  return handle;
}

/** Moves the clock in small steps, letting the supervisor react after each. */
async function advance(clock: ManualClock, ms: number, step = 100): Promise<void> {
  for (let passed = 0; passed < ms; passed += step) {
    await settle();
    clock.advance(Math.min(step, ms - passed));
    await settle();
  }
}

async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

/** A start whose process prints `output` and never answers; `failure` is the start's coming rejection. */
async function silentStart(host: Host, ...output: string[]): Promise<{ failure: Promise<Error & { code?: string }> }> {
  host.plans.push('silent');
  const starting = rejection(startWireguardGo(host.options));
  await settle();
  for (const text of output) host.current.print(text);
  return { failure: starting };
}

/** Crashes the running process and returns how long the supervisor waited before spawning the next one. */
async function crashAndTimeRestart(host: Host): Promise<number> {
  const spawned = host.spawns.length;
  host.current.end({ code: 2, signal: null });
  await settle();
  const from = host.clock.now();
  for (let i = 0; i < 400 && host.spawns.length === spawned; i++) await advance(host.clock, 100);
  await settle();
  return host.clock.now() - from;
}

describe('startWireguardGo', () => {
  it('runs wireguard-go in the foreground and hands back the device once its socket answers', async () => {
    const host = fakeHost();
    host.plans.push('silent');
    const starting = startWireguardGo(host.options);
    await advance(host.clock, 300);
    host.current.listening = true;
    await advance(host.clock, 100);
    const handle = await starting;
    cleanups.push(() => void handle.stop());
    expect(host.spawns).toEqual([{ command: 'wireguard-go', args: ['-f', 'wg0'], env: expect.objectContaining({ WG_PROCESS_FOREGROUND: '1' }) }]);
    expect(await handle.state()).toEqual(STATE);
    await handle.configure(CONFIG);
    // An incremental set against the peers the device has, so unchanged peers never drop out.
    expect(host.sets).toEqual([{ config: CONFIG, current: STATE }]);
  });

  it('sends only the given changes, and keeps the whole desired configuration for a restart', async () => {
    const host = fakeHost();
    const handle = await started(host);
    const desired = { ...CONFIG, peers: [{ publicKey: PEER, allowedIps: [] }] };
    await handle.configure(desired, { remove: ['gone'], write: desired.peers });
    expect(host.sets).toEqual([{ config: desired, remove: ['gone'] }]);
    await crashAndTimeRestart(host);
    expect(host.sets.at(-1)).toEqual({ config: desired, current: undefined });
  });

  it("greets a fresh process's first peers and each peer added later: at once where our key is lower, after 1 s where the peer's is and it has not greeted us", async () => {
    const ours = encodeWgKey(wgPublicKey(Buffer.from(PRIVATE, 'base64')));
    const below = { publicKey: Buffer.alloc(32, 0xf8).toString('base64'), allowedIps: [] }; // "+...": below any key
    const above = { publicKey: Buffer.alloc(32, 0xcf).toString('base64'), allowedIps: [] }; // "z...": above ours
    expect([below.publicKey < ours, ours < above.publicKey]).toEqual([true, true]);
    const host = fakeHost();
    const handle = await started(host);
    await handle.configure({ ...CONFIG, peers: [] }, { remove: [], write: [] });
    expect(host.kicks).toEqual([]);
    // Fresh process, both peers: the one above us at once; the one below us only when it has not greeted us in 1 s.
    const both = { ...CONFIG, peers: [below, above] };
    await handle.configure(both, { remove: [], write: both.peers });
    expect(host.kicks).toEqual([[above.publicKey]]);
    await advance(host.clock, SECOND_GREETING_DELAY_MS);
    expect(host.kicks).toEqual([[above.publicKey], [below.publicKey]]);
    // Added later: the one below us greeted us meanwhile (a handshake on the device), so it is left alone.
    await handle.configure({ ...CONFIG, peers: [] }, { remove: [below.publicKey, above.publicKey], write: [] });
    host.handshaken.push(below.publicKey);
    await handle.configure(both, { remove: [], write: both.peers });
    await advance(host.clock, SECOND_GREETING_DELAY_MS);
    expect(host.kicks.slice(2)).toEqual([[above.publicKey]]);
    // A restart greets everyone again, in the same order.
    host.handshaken.length = 0;
    await crashAndTimeRestart(host);
    expect(host.kicks.at(-1)).toEqual([above.publicKey]);
    await advance(host.clock, SECOND_GREETING_DELAY_MS);
    expect(host.kicks.at(-1)).toEqual([below.publicKey]);
  });

  it('fails after 5 s without an answer, naming the device and its last output, and stops the process', async () => {
    const host = fakeHost();
    const { failure: starting } = await silentStart(
      host,
      'INFO: (wg0) 2026/01/01 00:00:00 Starting wireguard-go version 0.0.20220316\n',
      'ERROR: (wg0) 2026/01/01 00:00:00 Failed to create TUN device: operation not permitted\n',
    );
    await advance(host.clock, READY_TIMEOUT_MS - 100);
    expect(host.current.signals).toEqual([]);
    await advance(host.clock, 100);
    const err = await starting;
    expect(err.code).toBe('ERR_DEVICE');
    expect(err.message).toContain('wireguard-go for wg0 did not answer');
    expect(err.message).toContain('within 5000 ms');
    expect(err.message).toContain('Failed to create TUN device: operation not permitted');
    expect(host.current.signals).toEqual(['SIGTERM']);
  });

  it('fails at once when the process exits before answering', async () => {
    const host = fakeHost();
    const { failure: starting } = await silentStart(host, 'ERROR: (wg0) UAPI listen error: unix socket in use\n');
    host.current.end({ code: 1, signal: null });
    const err = await starting;
    expect(err.message).toMatch(/^wireguard-go for wg0 exited with code 1 before answering on .*wg0\.sock; its last output:\nERROR: .*unix socket in use$/);
  });

  it('says wireguard-go is not installed on ENOENT, and does not retry', async () => {
    const host = fakeHost();
    host.plans.push('enoent');
    const err = await rejection(startWireguardGo(host.options));
    expect(err.code).toBe('ERR_DEVICE');
    expect(err.message).toContain('wireguard-go is not installed (Debian package wireguard-go)');
    await advance(host.clock, 60_000, 1_000);
    expect(host.spawns).toHaveLength(1);
    expect(host.events).toEqual([]);
  });
});

describe('WireguardGoHandle supervision', () => {
  it('reports a crash, restarts after 1 s, re-applies the configuration and reports the device back', async () => {
    const host = fakeHost();
    const handle = await started(host);
    await handle.configure({ ...CONFIG, peers: [{ publicKey: PEER, allowedIps: [] }] });
    host.current.print('ERROR: (wg0) something broke\n');
    expect(await crashAndTimeRestart(host)).toBe(1_000);
    expect(host.events).toEqual(['down: wireguard-go for wg0 (pid 1000) exited with code 2', 'up']);
    // The fresh device is empty, so the last desired configuration goes in whole.
    expect(host.sets.at(-1)).toEqual({ config: { ...CONFIG, peers: [{ publicKey: PEER, allowedIps: [] }] }, current: undefined });
    const crash = host.lines.find((line) => line.msg.includes('exited with code 2'));
    expect(crash).toMatchObject({ device: 'wg0', pid: 1000, code: 2, signal: null, output: ['ERROR: (wg0) something broke'] });
    expect(await handle.state()).toEqual(STATE);
  });

  it('doubles the delay up to 30 s while restarts keep failing, and starts over after 60 s up', async () => {
    const host = fakeHost();
    await started(host);
    // Six restarts whose process never answers (each given up on after 5 s), then one that works.
    host.plans.push(...Array<Plan>(6).fill('silent'));
    host.current.end({ code: 2, signal: null });
    for (let i = 0; i < 200 && !host.events.includes('up'); i++) await advance(host.clock, 1_000);
    const waits = host.spawnTimes.slice(1).map((at, i) => at - host.spawnTimes[i]! - (i === 0 ? 0 : READY_TIMEOUT_MS));
    expect(waits).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
    await advance(host.clock, STABLE_UP_MS, 1_000);
    expect(await crashAndTimeRestart(host)).toBe(1_000);
  });

  it('stops during the backoff without restarting', async () => {
    const host = fakeHost();
    const handle = await started(host);
    host.current.end({ code: null, signal: 'SIGSEGV' });
    await advance(host.clock, 500);
    await handle.stop();
    expect(await handle.exited).toEqual({ code: null, signal: 'SIGSEGV' });
    await advance(host.clock, 60_000, 1_000);
    expect(host.spawns).toHaveLength(1);
    expect(host.events).toEqual(['down: wireguard-go for wg0 (pid 1000) was killed by SIGSEGV']);
  });

  it('gives up when a restart finds wireguard-go uninstalled', async () => {
    const host = fakeHost();
    const handle = await started(host);
    host.plans.push('enoent');
    await crashAndTimeRestart(host);
    expect(await handle.exited).toMatchObject({ error: { code: 'ENOENT' } });
    expect(host.events.at(-1)).toContain('wireguard-go is not installed');
    await advance(host.clock, 60_000, 1_000);
    expect(host.spawns).toHaveLength(2);
  });

  it('stops with SIGTERM, then SIGKILL after 3 s, removing the socket a killed process leaves', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flannel-wggo-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const host = fakeHost();
    const handle = await started(host, dir);
    writeFileSync(join(dir, 'wg0.sock'), '');
    host.current.diesOn = ['SIGKILL'];
    const stopping = handle.stop();
    await advance(host.clock, STOP_GRACE_MS - 100);
    expect(host.current.signals).toEqual(['SIGTERM']);
    await advance(host.clock, 100);
    await stopping;
    expect(host.current.signals).toEqual(['SIGTERM', 'SIGKILL']);
    expect(existsSync(join(dir, 'wg0.sock'))).toBe(false);
    expect(await handle.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(host.events).toEqual([]);
  });
});

describe('WireguardGoHandle over a real UAPI socket', () => {
  it('waits for the socket in the injected directory and configures through it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flannel-wggo-'));
    const requests: string[] = [];
    const server = createServer((socket) => {
      let text = '';
      socket.on('data', (chunk) => {
        text += chunk.toString('utf8');
        if (!text.endsWith('\n\n')) return;
        requests.push(text.slice(0, text.indexOf('\n')));
        socket.end(text.startsWith('get=1') ? 'listen_port=51820\nerrno=0\n\n' : 'errno=0\n\n');
        text = '';
      });
    });
    cleanups.push(() => {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const host = fakeHost();
    host.plans.push('silent');
    const { uapi: _, ...options } = host.options;
    let handle: WireguardGoHandle | undefined;
    const starting = startWireguardGo({ ...options, socketDir: dir }).then((started) => (handle = started));
    // Not there yet: the first get fails on the missing socket and the supervisor polls on the clock.
    await expect.poll(() => host.clock.nextDeadline()).toBe(host.clock.now() + 100);
    await new Promise<void>((resolve) => server.listen(join(dir, 'wg0.sock'), resolve));
    // Time moves only for the poll's sleep, never for a get in flight, so a slow machine cannot time one out.
    for (let i = 0; i < 1_000 && !handle; i++) {
      if (host.clock.nextDeadline() === host.clock.now() + 100) host.clock.advance(100);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const device = await starting;
    cleanups.push(() => void device.stop());
    expect((await device.state()).listenPort).toBe(51820);
    await device.configure(CONFIG);
    expect(requests).toEqual(['get=1', 'get=1', 'get=1', 'set=1']);
  });
});

describe('OutputTail', () => {
  it('keeps the last lines of a flood, a few KB at most, cut at a line start', () => {
    const tail = new OutputTail();
    for (let i = 0; i < 1_000; i++) tail.push(`line ${i}\n`);
    expect(tail.lines()).toEqual(Array.from({ length: 20 }, (_, i) => `line ${980 + i}`));
    tail.push('x'.repeat(10_000));
    expect(tail.lines().join('').length).toBeLessThanOrEqual(4_096);
  });
});

describe('spawnChild', () => {
  it('reports output and the exit code', async () => {
    const child = spawnChild('sh', ['-c', 'echo out; echo err >&2; exit 3'], process.env);
    let output = '';
    child.onOutput((text) => (output += text));
    const exit = await new Promise<WgExit>((resolve) => child.onExit(resolve));
    expect(exit).toEqual({ code: 3, signal: null });
    expect(output.split('\n').sort()).toEqual(['', 'err', 'out']);
  });

  it('reports a missing program as ENOENT', async () => {
    const child = spawnChild('/nonexistent/wireguard-go', [], process.env);
    const exit = await new Promise<WgExit>((resolve) => child.onExit(resolve));
    expect(exit.error?.code).toBe('ENOENT');
  });
});
