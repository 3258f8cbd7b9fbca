/**
 * A real etcd (Debian's etcd-server) for tests: free loopback ports, a temporary data dir, ready when etcd says it
 * serves clients, stopped by PID. `restart()` keeps the ports and data so clients can resume against it.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { spawnTracked, waitFor, type TrackedProcess } from './processes.js';

export interface EtcdTlsFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

export interface EtcdServerOptions {
  /** Serve clients over TLS and require client certificates signed by the CA (unless `clientCertAuth` is false). */
  readonly tls?: EtcdTlsFiles;
  /** With `tls`: false serves TLS to clients without a certificate of their own (default true). */
  readonly clientCertAuth?: boolean;
  /** Run etcd inside this network namespace (its loopback), e.g. to share it with a flanneld under test. */
  readonly netns?: string;
  /** Client listen address (default 127.0.0.1), e.g. an underlay address inside `netns` that other hosts reach. */
  readonly listenHost?: string;
  /** Client port (default: a free loopback port), e.g. 2379 inside a namespace of our own. */
  readonly clientPort?: number;
}

export interface EtcdServer {
  readonly endpoint: string;
  readonly dataDir: string;
  pid(): number;
  restart(): Promise<void>;
  /** Stops etcd without removing its data (for "etcd went away" tests); `start()` brings it back. */
  kill(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

const ETCD_BINARY = '/usr/bin/etcd';

export async function startEtcd(options: EtcdServerOptions = {}): Promise<EtcdServer> {
  if (!existsSync(ETCD_BINARY)) {
    throw new Error(`${ETCD_BINARY} is missing: install Debian's etcd-server (npm test does this)`);
  }
  const clientPort = options.clientPort ?? (await freePort());
  const peerPort = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'flannel-ts-etcd-'));
  const scheme = options.tls ? 'https' : 'http';
  const endpoint = `${scheme}://${options.listenHost ?? '127.0.0.1'}:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name', 'test',
    '--data-dir', join(dataDir, 'data'),
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `test=${peerUrl}`,
    '--logger', 'zap',
    '--log-outputs', 'stderr',
  ];
  if (options.tls) {
    args.push(
      '--cert-file', options.tls.certFile,
      '--key-file', options.tls.keyFile,
      // etcd asks for a client certificate whenever it is given a CA to check one against.
      ...(options.clientCertAuth === false ? [] : ['--trusted-ca-file', options.tls.caFile, '--client-cert-auth']),
    );
  }
  let proc: TrackedProcess | undefined;

  const start = async (): Promise<void> => {
    const [cmd, cmdArgs] = options.netns
      ? ['ip', ['netns', 'exec', options.netns, ETCD_BINARY, ...args]]
      : [ETCD_BINARY, args];
    // `ip netns exec` execs etcd in place, so the PID we record is etcd's own.
    const current = spawnTracked(cmd, cmdArgs, { env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.arch } }, ETCD_BINARY);
    proc = current;
    const early = current.exited.then((code) => {
      throw new Error(`etcd exited early with ${code}:\n${current.output().slice(-2000)}`);
    });
    early.catch(() => undefined);
    await Promise.race([
      waitFor('etcd to serve clients', () => (/serving client traffic|ready to serve client requests/.test(current.output()) ? true : undefined), 20_000),
      early,
    ]);
  };
  const kill = async (): Promise<void> => {
    await proc?.stop('SIGTERM', 5000);
  };
  await start();
  return {
    endpoint,
    dataDir,
    pid: () => proc?.pid ?? 0,
    start,
    kill,
    async restart() {
      await kill();
      await start();
    },
    async stop() {
      await kill();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
