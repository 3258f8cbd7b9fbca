/**
 * Daemons the lab runs inside its namespaces: started detached (they outlive the lab command), recorded by PID and
 * start time, and stopped only by that PID — never by name, so nothing else on the machine is ever signalled.
 */
import { spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { nodeLauncher } from './kubelet/node-mounts.js';
import { sh } from './netns.js';
import type { ProcessRecord } from './lab-state.js';

/** State and start time from /proc/<pid>/stat, or undefined when there is no such process. */
function procStat(pid: number): { state: string; startTime: string } | undefined {
  try {
    // The command name (field 2) may hold spaces and parentheses; the fields after its closing ')' do not.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] as string, startTime: fields[19] as string };
  } catch {
    return undefined;
  }
}

export function processStartTime(pid: number): string | undefined {
  return procStat(pid)?.startTime;
}

/**
 * Our process, still alive. A daemon that has exited stays a zombie until init reaps it (the lab command that
 * started it is long gone), which can take seconds; it counts as stopped at once.
 */
export function isRunning(record: ProcessRecord): boolean {
  const stat = procStat(record.pid);
  return stat !== undefined && stat.startTime === record.startTime && stat.state !== 'Z' && stat.state !== 'X';
}

/**
 * `ip netns exec` (or, for a kubelet host's mount namespace, nsenter) execs the command in place, so the PID we get
 * is the daemon's own.
 */
export function startDetached(netns: string, argv: readonly string[], log: string, mountNs?: string): ProcessRecord {
  const out = openSync(log, 'a');
  const launcher = mountNs ? nodeLauncher({ netns, mountNs }, argv) : ['ip', 'netns', 'exec', netns, ...argv];
  const child = spawn(launcher[0] as string, launcher.slice(1), { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  const startTime = child.pid === undefined ? undefined : processStartTime(child.pid);
  if (child.pid === undefined || startTime === undefined) throw new Error(`cannot start ${argv[0]} in ${netns}`);
  return { pid: child.pid, startTime, netns, argv: [...argv], log, ...(mountNs ? { mountNs } : {}) };
}

/**
 * wireguard-go keeps its UAPI socket in /run/wireguard whatever the network namespace, so each host's daemon gets
 * its own, as separate machines would have: a tmpfs mounted in the mount namespace `ip netns exec` makes for the
 * process (it does not propagate back, and goes when the last process in it exits). sh execs `argv` in place, so
 * the PID stays the daemon's own. The sockets are reached from outside as /proc/<pid>/root/run/wireguard/.
 */
const PRIVATE_WIREGUARD_RUN = 'mkdir -p /run/wireguard && mount -t tmpfs -o mode=0755 flannel-ts-wg /run/wireguard && exec "$0" "$@"';

export const withPrivateWireguardRun = (argv: readonly string[]): string[] => ['sh', '-c', PRIVATE_WIREGUARD_RUN, ...argv];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sends `signal`, then SIGKILL if the process is still there after `graceMs`. Resolves once it is gone. */
export async function stopProcess(record: ProcessRecord, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<boolean> {
  if (!isRunning(record)) return false;
  process.kill(record.pid, signal);
  for (let waited = 0; isRunning(record); waited += 50) {
    if (waited >= graceMs) {
      process.kill(record.pid, 'SIGKILL');
      graceMs = Number.POSITIVE_INFINITY;
    }
    await sleep(50);
  }
  return true;
}

/**
 * Every process living in one of our namespaces, found by the namespace rather than a record: what `down` uses to
 * clean up after a lab whose state file was lost. These namespaces are ours, so whatever runs in them is too.
 */
export async function processesInNetns(netns: string): Promise<ProcessRecord[]> {
  const out = await sh('ip', ['netns', 'pids', netns]).catch(() => '');
  const records: ProcessRecord[] = [];
  for (const pid of out.split(/\s+/).filter(Boolean).map(Number)) {
    const startTime = processStartTime(pid);
    if (startTime !== undefined && pid !== process.pid) records.push({ pid, startTime, netns, argv: [], log: '' });
  }
  return records;
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** A pino JSON line as one readable line (time, level, component, message, error); other lines as they are. */
export function readableLogLine(line: string): string {
  let rec: { time?: string; level?: number; component?: string; msg?: string; err?: { message?: string } };
  try {
    rec = JSON.parse(line) as typeof rec;
  } catch {
    return line;
  }
  const parts = [rec.time ?? '', LEVELS[rec.level ?? 0] ?? String(rec.level), rec.component ? `[${rec.component}]` : '', rec.msg ?? ''];
  const text = parts.filter(Boolean).join(' ');
  return rec.err?.message ? `${text}: ${rec.err.message}` : text;
}

/** The last lines of a daemon's log, to show why it stopped. */
export function logTail(path: string, lines = 8): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).map((l) => `  ${readableLogLine(l)}`).join('\n');
  } catch {
    return '  (no log)';
  }
}
