/**
 * Builds the etcd3 client from upstream's flags. A client certificate is presented only when both key and cert are
 * given, as upstream does; the connection is TLS then, and also when every endpoint is https:// (etcd3 dials those
 * with TLS against the system roots, or against --etcd-cafile when given), so `tls` says what really happens.
 */
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions } from 'etcd3';
import { ConfigError } from '../../runtime/errors.js';

/**
 * The largest gRPC message the client accepts. gRPC's default (4 MiB) is what ~21,000 leases in one listing exceed;
 * listings are paged now (paged-range.ts: 1000 keys, under 8 MiB even at the value cap), so this only has to hold
 * one page, one watch response (etcd batches a watcher's catch-up events) or one key at etcd's request limit
 * (--max-request-bytes, 1.5 MiB by default). grpc-js checks the length prefix before buffering, so a larger message
 * costs an error, not the memory.
 */
export const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;

export interface EtcdClientOptions {
  readonly endpoints: readonly string[];
  readonly keyFile: string;
  readonly certFile: string;
  readonly caFile: string;
  readonly username: string;
  readonly password: string;
  /** Per-call deadline, so one hung request never stalls a loop. */
  readonly callTimeoutMs?: number;
  /** gRPC receive limit (default MAX_RECEIVE_BYTES); tests lower it to reach it cheaply. */
  readonly maxReceiveBytes?: number;
}

export interface EtcdClientPlan {
  readonly options: IOptions;
  /** True when the connection is plain text (upstream logs a warning then). */
  readonly insecure: boolean;
  /** TLS with a client certificate (--etcd-certfile and --etcd-keyfile). */
  readonly clientCertificate: boolean;
}

export function planEtcdClient(opts: EtcdClientOptions): EtcdClientPlan {
  const hosts = opts.endpoints.map((e) => e.trim()).filter((e) => e !== '');
  if (hosts.length === 0) throw new ConfigError('etcd-endpoints', opts.endpoints.join(','), 'no endpoint given');
  for (const host of hosts) {
    if (!/^https?:\/\/[^/]+\/?$/.test(host)) {
      throw new ConfigError('etcd-endpoints', host, 'each endpoint must look like http(s)://host:port');
    }
  }
  const timeout = opts.callTimeoutMs ?? 10_000;
  const options: IOptions = {
    hosts: [...hosts],
    dialTimeout: Math.min(timeout, 5_000),
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    grpcOptions: { 'grpc.max_receive_message_length': opts.maxReceiveBytes ?? MAX_RECEIVE_BYTES },
  };
  const read = (flag: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError(flag, path, 'cannot read file', { cause: err });
    }
  };
  const clientCertificate = opts.keyFile !== '' && opts.certFile !== '';
  const https = hosts.filter((h) => h.startsWith('https://')).length;
  if (clientCertificate) {
    options.credentials = {
      // grpc's createSsl takes null for "use the system roots"; etcd3's type just does not say so.
      rootCertificate: opts.caFile !== '' ? read('etcd-cafile', opts.caFile) : (null as unknown as Buffer),
      privateKey: read('etcd-keyfile', opts.keyFile),
      certChain: read('etcd-certfile', opts.certFile),
    };
  } else if (https > 0) {
    // etcd3 refuses a mix of schemes without credentials; say so in flag terms, before any connection.
    if (https < hosts.length) {
      throw new ConfigError('etcd-endpoints', hosts.join(','), 'mixes http:// and https:// endpoints; use one scheme for all');
    }
    if (opts.caFile !== '') options.credentials = { rootCertificate: read('etcd-cafile', opts.caFile) };
  }
  if (opts.username !== '' || opts.password !== '') {
    options.auth = { username: opts.username, password: opts.password };
  }
  return { options, insecure: !clientCertificate && https === 0, clientCertificate };
}

export function createEtcdClient(plan: EtcdClientPlan): Etcd3 {
  return new Etcd3(plan.options);
}
