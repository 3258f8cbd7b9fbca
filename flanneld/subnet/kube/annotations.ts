/**
 * The Node annotations flannel publishes and reads (docs/compatibility.md#kubernetes-mode), named from
 * `--kube-annotation-prefix` with upstream's normalisation, so nodes annotated by upstream flannel and by flannel-ts
 * read the same.
 */
import { ConfigError } from '../../runtime/errors.js';

export interface AnnotationNames {
  readonly kubeSubnetManager: string;
  readonly backendType: string;
  readonly backendData: string;
  readonly backendV6Data: string;
  readonly publicIP: string;
  readonly publicIPv6: string;
  /** Set by an operator: published as public-ip instead of the detected address (NAT). */
  readonly publicIPOverwrite: string;
  readonly publicIPv6Overwrite: string;
  /** Set by an operator: used as if given by --public-ip / --public-ipv6. */
  readonly nodePublicIP: string;
  readonly nodePublicIPv6: string;
}

const PREFIX_FORMAT = /^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?\/[a-z0-9_-]*$/;

/**
 * `flannel.alpha.coreos.com` → `flannel.alpha.coreos.com/backend-type`; `example.com/pfx` → `example.com/pfx-backend-type`.
 */
export function annotationNames(prefix: string): AnnotationNames {
  const slashes = prefix.split('/').length - 1;
  if (slashes > 1) throw new ConfigError('kube-annotation-prefix', prefix, 'can contain at most one slash');
  let p = slashes === 0 ? `${prefix}/` : prefix;
  if (!p.endsWith('/') && !p.endsWith('-')) p += '-';
  if (!PREFIX_FORMAT.test(p)) {
    throw new ConfigError('kube-annotation-prefix', prefix, 'must be in the format fqdn/[0-9a-z-_]* (lower case)');
  }
  return Object.freeze({
    kubeSubnetManager: `${p}kube-subnet-manager`,
    backendType: `${p}backend-type`,
    backendData: `${p}backend-data`,
    backendV6Data: `${p}backend-v6-data`,
    publicIP: `${p}public-ip`,
    publicIPv6: `${p}public-ipv6`,
    publicIPOverwrite: `${p}public-ip-overwrite`,
    publicIPv6Overwrite: `${p}public-ipv6-overwrite`,
    nodePublicIP: `${p}node-public-ip`,
    nodePublicIPv6: `${p}node-public-ipv6`,
  });
}
