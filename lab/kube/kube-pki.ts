/**
 * The control plane's keys, made with openssl in a folder of the run: a cluster CA, the apiserver's serving
 * certificate (for the hub's addresses, loopback and the `kubernetes` Service names), the service-account signing key
 * pair, and a static admin token. ECDSA P-256 throughout: a few milliseconds each, where RSA keys cost a second.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from '../netns.js';

export interface ControlPlanePki {
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly serviceAccountKey: string;
  readonly serviceAccountPub: string;
  /** kube-apiserver --token-auth-file: the admin token, in group system:masters. */
  readonly tokenFile: string;
}

/** Where the keys of a control plane whose PKI folder is `dir` are: fixed names, so a restart finds them again. */
export function pkiFiles(dir: string): ControlPlanePki {
  const f = (name: string): string => join(dir, name);
  return {
    caCert: f('ca.crt'), caKey: f('ca.key'), serverCert: f('apiserver.crt'), serverKey: f('apiserver.key'),
    serviceAccountKey: f('sa.key'), serviceAccountPub: f('sa.pub'), tokenFile: f('tokens.csv'),
  };
}

/**
 * Makes the keys in `dir` (see pkiFiles) and returns the admin token; `ips` and `dnsNames` are the serving
 * certificate's subject alternative names.
 */
export async function makeControlPlanePki(dir: string, ips: readonly string[], dnsNames: readonly string[]): Promise<string> {
  const f = (name: string): string => join(dir, name);
  const ecKey = (out: string): Promise<string> => sh('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', out]);
  await ecKey(f('ca.key'));
  await sh('openssl', ['req', '-x509', '-new', '-key', f('ca.key'), '-days', '3650', '-subj', '/CN=flannel-ts-lab-ca', '-out', f('ca.crt')]);
  await ecKey(f('apiserver.key'));
  await sh('openssl', ['req', '-new', '-key', f('apiserver.key'), '-subj', '/CN=kube-apiserver', '-out', f('apiserver.csr')]);
  const san = [...ips.map((ip) => `IP:${ip}`), ...dnsNames.map((d) => `DNS:${d}`)].join(',');
  writeFileSync(f('apiserver.ext'), `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n`);
  await sh('openssl', ['x509', '-req', '-in', f('apiserver.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-days', '3650', '-extfile', f('apiserver.ext'), '-out', f('apiserver.crt')]);
  await ecKey(f('sa.key'));
  await sh('openssl', ['ec', '-in', f('sa.key'), '-pubout', '-out', f('sa.pub')]);
  const adminToken = randomBytes(24).toString('hex');
  writeFileSync(f('tokens.csv'), `${adminToken},admin,admin,"system:masters"\n`, { mode: 0o600 });
  return adminToken;
}

/** A kubeconfig (JSON, which kubectl and client libraries read as YAML) for one server and bearer token. */
export function writeKubeconfig(path: string, server: string, caFile: string, user: string, token: string): void {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'lab', cluster: { server, 'certificate-authority': caFile } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: user, context: { cluster: 'lab', user } }],
    'current-context': user,
  };
  writeFileSync(path, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}
