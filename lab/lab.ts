#!/usr/bin/env node
/**
 * `npm run lab -- <sub-command> [options]`: a real etcd-backed (or, with --kube, Kubernetes) overlay on one machine (see LAB_USAGE). Every host
 * and pod is a network namespace named `ftl-<id>-…` on a bridge underlay in 192.0.2.0/24; nothing in the root
 * namespace changes.
 */
import { addPod, down, exec, kill, kubectl, restart, status, up, type LabContext } from './lab-commands.js';
import { LAB_USAGE, LabUsageError, parseLabArgs } from './lab-args.js';
import { createProgress } from './progress.js';

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') {
    console.log(LAB_USAGE);
    return 0;
  }
  const opts = parseLabArgs(argv);
  if (process.getuid?.() !== 0) throw new Error('the lab needs root: it creates network namespaces and runs etcd and flanneld in them (try sudo)');
  const ctx: LabContext = { opts, progress: createProgress(process.stdout), print: (text) => console.log(text) };
  switch (opts.command) {
    case 'up': await up(ctx); break;
    case 'status': await status(ctx); break;
    case 'exec': return exec(ctx);
    case 'kubectl': return kubectl(ctx);
    case 'add-pod': await addPod(ctx); break;
    case 'kill': await kill(ctx); break;
    case 'restart': await restart(ctx); break;
    case 'down': await down(ctx); break;
  }
  return Number(process.exitCode ?? 0);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`lab: ${err instanceof Error ? err.message : String(err)}`);
    if (err instanceof LabUsageError) console.error(`\n${LAB_USAGE}`);
    process.exit(err instanceof LabUsageError ? 2 : 1);
  },
);
