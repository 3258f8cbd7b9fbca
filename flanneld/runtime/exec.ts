/**
 * Runs a host tool (iptables-restore, nft) with optional stdin, a timeout and cancellation. Failures carry the
 * argv, exit code and stderr, because "iptables-restore: exit 1" alone tells an operator nothing.
 */
import { spawn } from 'node:child_process';
import { FlannelError } from './errors.js';

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

export class ExecError extends FlannelError {
  override readonly name = 'ExecError';
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super('ERR_EXEC', `${argv.join(' ')}: ${exitCode === null ? 'did not finish' : `exit ${exitCode}`}${stderr.trim() ? `: ${stderr.trim()}` : ''}`, options);
  }
}

export type Exec = (argv: readonly string[], opts?: { input?: string; timeoutMs?: number; signal?: AbortSignal }) => Promise<ExecResult>;

export const execCommand: Exec = (argv, opts = {}) =>
  new Promise<ExecResult>((resolve, reject) => {
    const [cmd, ...args] = argv;
    if (!cmd) {
      reject(new ExecError(argv, null, 'empty command'));
      return;
    }
    const child = spawn(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 30_000,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => reject(new ExecError(argv, null, err.message, { cause: err })));
    child.on('close', (code) => {
      if (code === 0) resolve({ stdout, stderr });
      else reject(new ExecError(argv, code, stderr));
    });
    if (child.stdin) {
      // A tool that exits before reading all its input (on a syntax error, say) closes the pipe: its exit code
      // tells the story, so EPIPE on our side is not an error of its own.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
