/**
 * How flanneld reaches the API server, as upstream's BuildConfigFromFlags decides it: `--kubeconfig-file` (its server
 * replaced by `--kube-api-url` when both are given), `--kube-api-url` alone (with the pod's service account token
 * when there is one), or neither: in-cluster, from the service account and KUBERNETES_SERVICE_HOST/PORT.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig, type Cluster, type User } from '@kubernetes/client-node';
import { ConfigError, FlannelError, errorMessage } from '../../runtime/errors.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConnectOptions {
  readonly kubeconfigFile: string;
  readonly apiUrl: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Prepended to the service account paths (tests point it into a temporary directory). */
  readonly pathPrefix?: string;
}

export function kubeConfigFor(opts: KubeConnectOptions): KubeConfig {
  const kc = new KubeConfig();
  const prefix = opts.pathPrefix ?? '';
  const saDir = `${prefix}${SERVICE_ACCOUNT_DIR}`;
  if (opts.apiUrl && !/^https?:\/\/[^/]+/.test(opts.apiUrl)) {
    throw new ConfigError('kube-api-url', opts.apiUrl, 'must be an http:// or https:// URL');
  }
  if (opts.kubeconfigFile) {
    try {
      kc.loadFromFile(opts.kubeconfigFile);
    } catch (err) {
      throw new ConfigError('kubeconfig-file', opts.kubeconfigFile, `cannot be loaded: ${errorMessage(err)}`, { cause: err });
    }
    const current = kc.getCurrentCluster();
    if (!current) throw new ConfigError('kubeconfig-file', opts.kubeconfigFile, 'has no current context with a cluster');
    if (opts.apiUrl) {
      const plainHttp = opts.apiUrl.startsWith('http://');
      const clusters = kc.getClusters().map((c): Cluster => (c.name === current.name ? { ...c, server: opts.apiUrl, skipTLSVerify: plainHttp || c.skipTLSVerify } : c));
      kc.loadFromOptions({ clusters, users: kc.getUsers(), contexts: kc.getContexts(), currentContext: kc.getCurrentContext() });
    }
    return kc;
  }
  const host = opts.env['KUBERNETES_SERVICE_HOST'];
  const port = opts.env['KUBERNETES_SERVICE_PORT'];
  if (!opts.apiUrl && (!host || !port)) {
    throw new FlannelError('ERR_CONFIG_INVALID', 'not running in a pod (KUBERNETES_SERVICE_HOST/PORT are unset): give --kubeconfig-file or --kube-api-url');
  }
  // In a pod this is client-go's InClusterConfig; with --kube-api-url the pod's credentials still apply when mounted.
  const server = opts.apiUrl || `https://${host?.includes(':') ? `[${host}]` : host}:${port}`;
  const token = join(saDir, 'token');
  const ca = join(saDir, 'ca.crt');
  const inPod = !opts.apiUrl || existsSync(token);
  const user: User = inPod ? { name: 'flanneld', authProvider: { name: 'tokenFile', config: { tokenFile: token } } } : { name: 'flanneld' };
  // client-node refuses plain http unless TLS verification is off; there is no TLS to verify on such a URL.
  const plainHttp = server.startsWith('http://');
  const cluster: Cluster = { name: 'flanneld', server, skipTLSVerify: plainHttp, ...(!plainHttp && (existsSync(ca) || !opts.apiUrl) ? { caFile: ca } : {}) };
  kc.loadFromClusterAndUser(cluster, user);
  return kc;
}
