/**
 * Supervises Debian's wireguard-go (0.0.20220316) running one userspace WireGuard device, for hosts whose kernel
 * lacks the wireguard module. The process owns the TUN device and its UAPI socket: both go when it exits, so a
 * crash loses the peers, which is why the last desired configuration is kept and re-applied after each restart.
 *
 * The process is started in the foreground (`-f`) so it stays our child: we learn of its exit, read its output and
 * stop it by PID. Time and process creation are injected so tests drive crashes and backoff without waiting.
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { Backoff, type BackoffOptions } from '../../flanneld/runtime/backoff.js';
import type { Clock } from '../../flanneld/runtime/clock.js';
import { FlannelError, errorMessage } from '../../flanneld/runtime/errors.js';
import { mathRandom } from '../../flanneld/runtime/random.js';
import { Serial } from '../../flanneld/runtime/serial.js';
import type { WgCurrentPeers, WgDeviceConfig, WgDeviceState, WgPeerConfig } from './uapi.js';
import type { WgPeerChanges } from './wg-device.js';
import { UAPI_SOCKET_DIR, UapiClient, uapiSocketPath } from './uapi-socket.js';
import { SECOND_GREETING_DELAY_MS, greetingOrder, stillUngreeted } from './wg-greeting.js';
import { encodeWgKey, wgPublicKey } from './wg-key.js';

export const WIREGUARD_GO = 'wireguard-go';
/** From spawning to the first answered `get`; wireguard-go is listening within milliseconds when it works at all. */
export const READY_TIMEOUT_MS = 5_000;
const READY_POLL_MS = 100;
/** Between SIGTERM and SIGKILL: wireguard-go closes its device and socket at once on SIGTERM. */
export const STOP_GRACE_MS = 3_000;
/** A process that stayed up this long was healthy, so its crash restarts the backoff from the start. */
export const STABLE_UP_MS = 60_000;
/** No jitter: one device per node, so there is no herd of restarts to spread. */
export const RESTART_BACKOFF: BackoffOptions = { initialMs: 1_000, maxMs: 30_000, jitter: 0 };
const UAPI_TIMEOUT_MS = 2_000;
/** The output kept for logs and errors: enough for wireguard-go's last complaints, never a flood. */
const OUTPUT_TAIL_CHARS = 4_096;
const OUTPUT_TAIL_LINES = 20;

/** How a process ended; `error` alone when it never ran (ENOENT, EACCES). */
export interface WgExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly error?: NodeJS.ErrnoException | undefined;
}

/** The slice of a child process the supervisor uses, so tests substitute a fake. */
export interface WgProcess {
  readonly pid: number | undefined;
  /** stdout and stderr text, in arrival order. */
  onOutput(listener: (text: string) => void): void;
  /** Called once, when the process has exited and its output is read, or when it could not be started. */
  onExit(listener: (exit: WgExit) => void): void;
  kill(signal: NodeJS.Signals): void;
}

export type WgSpawner = (command: string, args: readonly string[], env: NodeJS.ProcessEnv) => WgProcess;

/** What the supervisor needs of the device's UAPI socket; UapiClient is the real one. */
export interface WgUapi {
  get(): Promise<WgDeviceState>;
  set(config: WgDeviceConfig, current?: WgCurrentPeers): Promise<void>;
  update(config: WgDeviceConfig, remove: readonly string[]): Promise<void>;
  kick(peers: readonly WgPeerConfig[]): Promise<void>;
}

export interface WireguardGoOptions {
  readonly device: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly spawn?: WgSpawner | undefined;
  /** Where the UAPI sockets live; wireguard-go's own is /var/run/wireguard. */
  readonly socketDir?: string | undefined;
  readonly uapi?: ((socketPath: string) => WgUapi) | undefined;
  /** The device went away with its process; `reason` says how, for /healthz. */
  readonly onDown?: ((reason: string) => void) | undefined;
  /** The device is back after a restart, configured as last desired. */
  readonly onUp?: (() => void) | undefined;
}

export interface WireguardGoHandle {
  readonly device: string;
  /**
   * Kept to re-apply after a restart. With `changes` only those are sent (the caller knows what the device holds);
   * without, the difference against the device's current peers.
   */
  configure(desired: WgDeviceConfig, changes?: WgPeerChanges): Promise<void>;
  state(): Promise<WgDeviceState>;
  /** SIGTERM, SIGKILL after STOP_GRACE_MS; resolves once the process has exited. Also ends any restart. */
  stop(): Promise<void>;
  /** Settles when supervision is over: after stop(), or when a restart finds wireguard-go uninstalled. */
  readonly exited: Promise<WgExit>;
}

/** node:child_process with the output piped; stdin is not, as wireguard-go never reads it. */
export const spawnChild: WgSpawner = (command, args, env) => {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  return {
    get pid() {
      return child.pid;
    },
    onOutput(listener) {
      for (const stream of [child.stdout, child.stderr]) stream?.setEncoding('utf8').on('data', listener);
    },
    onExit(listener) {
      let done = false;
      const once = (exit: WgExit): void => {
        if (!done) listener(exit);
        done = true;
      };
      // 'error' also reports a failed kill of a running child; only one without a PID never ran.
      child.on('error', (error) => (child.pid === undefined ? once({ code: null, signal: null, error }) : undefined));
      // 'close' rather than 'exit': by then the last output has been read.
      child.once('close', (code, signal) => once({ code, signal }));
    },
    kill(signal) {
      child.kill(signal);
    },
  };
};

/** Starts wireguard-go for the device and resolves once its UAPI socket answers. */
export async function startWireguardGo(options: WireguardGoOptions): Promise<WireguardGoHandle> {
  const supervisor = new Supervisor(options);
  await supervisor.start();
  return supervisor;
}

/** The last few KB of a process's output, cut at line starts. */
export class OutputTail {
  private text = '';

  push(chunk: string): void {
    this.text += chunk;
    if (this.text.length <= OUTPUT_TAIL_CHARS) return;
    const kept = this.text.slice(-OUTPUT_TAIL_CHARS);
    const lineStart = kept.indexOf('\n');
    this.text = lineStart < 0 ? kept : kept.slice(lineStart + 1);
  }

  lines(): string[] {
    return this.text.split('\n').filter((line) => line.trim() !== '').slice(-OUTPUT_TAIL_LINES);
  }
}

/** One process of the device. */
class Run {
  readonly output = new OutputTail();
  readonly exited: Promise<WgExit>;
  exit: WgExit | undefined;
  private terminating: Promise<void> | undefined;

  constructor(readonly process: WgProcess) {
    process.onOutput((text) => this.output.push(text));
    this.exited = new Promise<WgExit>((resolve) =>
      process.onExit((exit) => {
        this.exit = exit;
        resolve(exit);
      }),
    );
  }

  /** Idempotent, so a stop and a failed restart may both ask. */
  terminate(clock: Clock, afterKill: () => Promise<void>): Promise<void> {
    this.terminating ??= this.signalUntilExit(clock, afterKill);
    return this.terminating;
  }

  private async signalUntilExit(clock: Clock, afterKill: () => Promise<void>): Promise<void> {
    if (this.exit) return;
    this.process.kill('SIGTERM');
    if (await exitsWithin(this, clock, STOP_GRACE_MS)) return;
    this.process.kill('SIGKILL');
    await this.exited;
    await afterKill();
  }
}

/** Whether the run exits before `ms` pass (or the signal aborts) on the clock. */
async function exitsWithin(run: Run, clock: Clock, ms: number, signal?: AbortSignal): Promise<boolean> {
  const done = new AbortController();
  const sleep = clock.sleep(ms, signal ? AbortSignal.any([signal, done.signal]) : done.signal).catch(() => undefined);
  await Promise.race([sleep, run.exited]);
  done.abort();
  return run.exit !== undefined;
}

class Supervisor implements WireguardGoHandle {
  readonly device: string;
  readonly exited: Promise<WgExit>;
  private readonly socketPath: string;
  private readonly uapi: WgUapi;
  private readonly spawn: WgSpawner;
  private readonly serial = new Serial();
  private readonly stopping = new AbortController();
  private readonly backoff = new Backoff(RESTART_BACKOFF, mathRandom);
  private finish!: (exit: WgExit) => void;
  private run: Run | undefined;
  private upSince = 0;
  private desired: WgDeviceConfig | undefined;
  /**
   * Until this process has been given its first peers. Peers still hold sessions with the previous process (before
   * a crash or a daemon restart) that this one cannot read, and would wait up to 15 s (WireGuard's rekey timeout)
   * before starting over; so the first peers a process gets are each sent a keepalive, which starts a handshake.
   */
  private freshProcess = true;
  private ourKey: { readonly privateKey: string; readonly publicKey: string } | undefined;
  private restarting: Promise<void> = Promise.resolve();
  private stopped: Promise<void> | undefined;

  constructor(private readonly options: WireguardGoOptions) {
    this.device = options.device;
    this.socketPath = uapiSocketPath(options.device, options.socketDir ?? UAPI_SOCKET_DIR);
    this.uapi = options.uapi?.(this.socketPath) ?? new UapiClient({ socketPath: this.socketPath, clock: options.clock, timeoutMs: UAPI_TIMEOUT_MS });
    this.spawn = options.spawn ?? spawnChild;
    this.exited = new Promise<WgExit>((resolve) => (this.finish = resolve));
  }

  async start(): Promise<void> {
    await this.launch();
    this.watch();
  }

  configure(desired: WgDeviceConfig, changes?: WgPeerChanges): Promise<void> {
    this.desired = desired;
    return this.serial.run(async () => {
      if (changes) await this.uapi.update({ ...desired, peers: changes.write }, changes.remove);
      else await this.uapi.set(desired, await this.uapi.get());
      if (await this.greetIfFresh(desired)) return;
      // A peer that learnt of us before we did of it greeted us in vain, and its next try is REKEY_TIMEOUT (5 s)
      // away; a greeting now, when both sides know each other, makes the tunnel at once.
      if (changes && changes.write.length > 0) await this.greet(desired, changes.write);
    });
  }

  state(): Promise<WgDeviceState> {
    return this.uapi.get();
  }

  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping.abort();
    await this.restarting;
    const run = this.run;
    if (run) await this.terminate(run);
    this.finish(run?.exit ?? { code: null, signal: null });
  }

  /** A process answering on its socket, or an ERR_DEVICE error with the process gone. */
  private async launch(): Promise<void> {
    const run = new Run(this.spawn(WIREGUARD_GO, ['-f', this.device], { ...process.env, WG_PROCESS_FOREGROUND: '1' }));
    this.run = run;
    try {
      await this.waitReady(run);
    } catch (err) {
      await this.terminate(run);
      throw err;
    }
    this.upSince = this.options.clock.now();
  }

  private async waitReady(run: Run): Promise<void> {
    const { clock } = this.options;
    const deadline = clock.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (run.exit) throw this.exitedEarly(run, run.exit);
      let lastError: unknown;
      try {
        await this.uapi.get();
        return;
      } catch (err) {
        lastError = err;
      }
      if (run.exit) throw this.exitedEarly(run, run.exit);
      if (clock.now() >= deadline) throw this.deviceError(run, `did not answer on ${this.socketPath} within ${READY_TIMEOUT_MS} ms (${errorMessage(lastError)})`);
      await exitsWithin(run, clock, Math.min(READY_POLL_MS, deadline - clock.now()), this.stopping.signal);
      this.stopping.signal.throwIfAborted();
    }
  }

  private exitedEarly(run: Run, exit: WgExit): FlannelError {
    if (exit.error?.code === 'ENOENT') {
      return new FlannelError('ERR_DEVICE', `${WIREGUARD_GO} is not installed (Debian package ${WIREGUARD_GO}), needed for WireGuard device ${this.device}`, { cause: exit.error });
    }
    return this.deviceError(run, `${describeExit(exit)} before answering on ${this.socketPath}`, exit.error);
  }

  private deviceError(run: Run, what: string, cause?: unknown): FlannelError {
    return new FlannelError('ERR_DEVICE', `${WIREGUARD_GO} for ${this.device} ${what}${outputSuffix(run)}`, { cause });
  }

  private terminate(run: Run): Promise<void> {
    // A SIGKILLed wireguard-go leaves its socket behind; remove it so nothing mistakes it for a live device.
    return run.terminate(this.options.clock, () => rm(this.socketPath, { force: true }));
  }

  private watch(): void {
    const run = this.run!;
    void run.exited.then((exit) => this.exitedWhileUp(run, exit));
  }

  private exitedWhileUp(run: Run, exit: WgExit): void {
    if (this.stopping.signal.aborted) return;
    const reason = `${WIREGUARD_GO} for ${this.device} (pid ${run.process.pid}) ${describeExit(exit)}`;
    this.options.log.error({ device: this.device, pid: run.process.pid, code: exit.code, signal: exit.signal, output: run.output.lines() }, `${reason}; restarting it`);
    this.options.onDown?.(reason);
    if (this.options.clock.now() - this.upSince >= STABLE_UP_MS) this.backoff.reset();
    this.restarting = this.restartLoop();
  }

  /** Until a process is up and configured, stop() is called, or wireguard-go turns out to be uninstalled. */
  private async restartLoop(): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      const delayMs = this.backoff.next();
      this.options.log.info({ device: this.device, delayMs }, `restarting ${WIREGUARD_GO}`);
      try {
        await this.options.clock.sleep(delayMs, signal);
        await this.launch();
        await this.serial.run(() => this.reapply());
      } catch (err) {
        if (signal.aborted) return;
        if (this.run?.exit?.error?.code === 'ENOENT') return this.giveUp(this.run.exit, err);
        await this.terminate(this.run!);
        this.options.log.error({ device: this.device, err: errorMessage(err) }, `${WIREGUARD_GO} restart failed`);
        continue;
      }
      this.watch();
      this.options.log.info({ device: this.device, pid: this.run?.process.pid }, `${WIREGUARD_GO} is back`);
      this.options.onUp?.();
      return;
    }
  }

  /** A fresh device has no peers, so the whole configuration goes in one replacing set. */
  private async reapply(): Promise<void> {
    this.freshProcess = true;
    if (this.desired) {
      await this.uapi.set(this.desired);
      await this.greetIfFresh(this.desired);
    }
  }

  /** True when it greeted (or will greet) every peer. */
  private async greetIfFresh(desired: WgDeviceConfig): Promise<boolean> {
    if (!this.freshProcess || desired.peers.length === 0) return false;
    this.freshProcess = false;
    await this.greet(desired, desired.peers);
    return true;
  }

  /** Greets the peers it goes first with now, the others a moment later if they have not greeted us (wg-greeting.ts). */
  private async greet(desired: WgDeviceConfig, peers: readonly WgPeerConfig[]): Promise<void> {
    const { now, later } = greetingOrder(this.publicKeyOf(desired.privateKey), peers);
    if (now.length > 0) await this.uapi.kick(now);
    if (later.length === 0) return;
    void this.options.clock.sleep(SECOND_GREETING_DELAY_MS, this.stopping.signal).then(
      () => this.serial.run(async () => {
        const wanted = this.desired?.peers ?? [];
        const due = stillUngreeted(later, wanted, (await this.uapi.get()).peers);
        if (due.length > 0) await this.uapi.kick(due);
      }),
      () => undefined,
    ).catch((err: unknown) => this.options.log.debug({ device: this.device, err: errorMessage(err) }, 'cannot greet the peers; traffic will start the handshakes'));
  }

  /** Derived once per key, not on every batch of peer changes. */
  private publicKeyOf(privateKey: string): string {
    if (this.ourKey?.privateKey !== privateKey) this.ourKey = { privateKey, publicKey: encodeWgKey(wgPublicKey(Buffer.from(privateKey, 'base64'))) };
    return this.ourKey.publicKey;
  }

  private giveUp(exit: WgExit, err: unknown): void {
    this.options.log.error({ device: this.device, err: errorMessage(err) }, `cannot restart ${WIREGUARD_GO}; the device stays down`);
    this.options.onDown?.(errorMessage(err));
    this.finish(exit);
  }
}

function describeExit(exit: WgExit): string {
  if (exit.error) return `could not be started (${exit.error.message})`;
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

function outputSuffix(run: Run): string {
  const lines = run.output.lines();
  return lines.length ? `; its last output:\n${lines.join('\n')}` : '; it printed nothing';
}
