/** Builds the etcd3 client from upstream's flags: TLS only when both key and cert are given, as upstream does. */
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions } from 'etcd3';
import { ConfigError } from '../../runtime/errors.js';

export interface EtcdClientOptions {
  readonly endpoints: readonly string[];
  readonly keyFile: string;
  readonly certFile: string;
  readonly caFile: string;
  readonly username: string;
  readonly password: string;
  /** Per-call deadline, so one hung request never stalls a loop. */
  readonly callTimeoutMs?: number;
}

export interface EtcdClientPlan {
  readonly options: IOptions;
  /** True when the connection is plain text (upstream logs a warning then). */
  readonly insecure: boolean;
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
  };
  const tls = opts.keyFile !== '' && opts.certFile !== '';
  if (tls) {
    const read = (flag: string, path: string): Buffer => {
      try {
        return readFileSync(path);
      } catch (err) {
        throw new ConfigError(flag, path, 'cannot read file', { cause: err });
      }
    };
    options.credentials = {
      // grpc's createSsl takes null for "use the system roots"; etcd3's type just does not say so.
      rootCertificate: opts.caFile !== '' ? read('etcd-cafile', opts.caFile) : (null as unknown as Buffer),
      privateKey: read('etcd-keyfile', opts.keyFile),
      certChain: read('etcd-certfile', opts.certFile),
    };
  }
  if (opts.username !== '' || opts.password !== '') {
    options.auth = { username: opts.username, password: opts.password };
  }
  return { options, insecure: !tls };
}

export function createEtcdClient(plan: EtcdClientPlan): Etcd3 {
  return new Etcd3(plan.options);
}
