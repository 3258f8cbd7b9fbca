/**
 * Child processes for real-component tests: spawned with their PID recorded in a per-run registry on disk, waited
 * on with deadlines, and stopped by PID only (never by name). A later run removes what an aborted run left behind.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const REGISTRY_DIR = '/tmp/flannel-ts-test/pids';

export interface TrackedProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  output(): string;
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | string>;
}

/** `identity` is a string the process's command line will contain (for telling it from a recycled PID later). */
export function spawnTracked(
  command: string,
  args: readonly string[],
  options: SpawnOptions = {},
  identity = command,
): TrackedProcess {
  mkdirSync(REGISTRY_DIR, { recursive: true });
  const child = spawn(command, [...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  if (child.pid === undefined) throw new Error(`failed to spawn ${command}`);
  const pid = child.pid;
  const registryFile = join(REGISTRY_DIR, String(process.pid));
  appendFileSync(registryFile, `${pid} ${identity}\n`);
  let log = '';
  const keep = (chunk: Buffer): void => {
    log += chunk.toString();
    if (log.length > 1_000_000) log = log.slice(-500_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, sig) => resolve(code ?? sig ?? 'unknown'));
  });
  return {
    pid,
    child,
    exited,
    output: () => log,
    async stop(signal = 'SIGTERM', graceMs = 5000) {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(pid, signal);
        const timer = setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
        }, graceMs);
        const result = await exited;
        clearTimeout(timer);
        return result;
      }
      return exited;
    },
  };
}

/** Kills processes recorded by test runs whose runner process is gone (a crashed or killed earlier run). */
export function killStaleTrackedProcesses(): void {
  let files: string[];
  try {
    files = readdirSync(REGISTRY_DIR);
  } catch {
    return;
  }
  for (const file of files) {
    const runner = Number(file);
    if (runner === process.pid || isAlive(runner)) continue;
    for (const line of readFileSync(join(REGISTRY_DIR, file), 'utf8').split('\n')) {
      const [pidText, command] = line.split(' ');
      const pid = Number(pidText);
      if (!pid || !command || !isAlive(pid)) continue;
      // Only kill it if it is still the program we started, not a recycled PID.
      const cmdline = readCmdline(pid);
      if (cmdline.includes(command)) process.kill(pid, 'SIGKILL');
    }
    rmSync(join(REGISTRY_DIR, file), { force: true });
  }
}

/** The PIDs of `pid`'s children, from every thread's list; none once it is gone. */
export function childPids(pid: number): number[] {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  return tids.flatMap((tid) => {
    try {
      return readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
    } catch {
      return []; // the thread ended between the listing and the read
    }
  });
}

/** `pid`'s children running `comm` (as /proc/<child>/comm names it): a daemon's helpers, found through the daemon. */
export function childrenNamed(pid: number, comm: string): number[] {
  return childPids(pid).filter((child) => {
    try {
      return readFileSync(`/proc/${child}/comm`, 'utf8').trim() === comm;
    } catch {
      return false; // already gone
    }
  });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readCmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
