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

/** A client certificate and its key, signed by a control plane's CA. */
export interface ClientCert {
  readonly cert: string;
  readonly key: string;
}

/**
 * A client certificate for `commonName` in `groups` (the apiserver reads CN as the user, O as the groups), signed
 * by the CA of the PKI folder `dir`, written as `<name>.crt` and `<name>.key` there.
 */
export async function makeClientCert(dir: string, name: string, commonName: string, groups: readonly string[] = []): Promise<ClientCert> {
  const f = (file: string): string => join(dir, file);
  const files = { cert: f(`${name}.crt`), key: f(`${name}.key`) };
  await sh('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', files.key]);
  const subject = `/CN=${commonName}${groups.map((g) => `/O=${g}`).join('')}`;
  await sh('openssl', ['req', '-new', '-key', files.key, '-subj', subject, '-out', f(`${name}.csr`)]);
  writeFileSync(f(`${name}.ext`), 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n');
  // A random serial rather than -CAcreateserial's shared ca.srl: hosts get their certificates in parallel.
  await sh('openssl', ['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-set_serial', `0x${randomBytes(16).toString('hex')}`,
    '-days', '3650', '-extfile', f(`${name}.ext`), '-out', files.cert]);
  return files;
}

/** A kubeconfig's text (JSON, which kubectl and client libraries read as YAML): a bearer token or a client certificate. */
export function kubeconfigText(server: string, caFile: string, user: string, credential: string | ClientCert): string {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'lab', cluster: { server, 'certificate-authority': caFile } }],
    users: [{ name: user, user: typeof credential === 'string' ? { token: credential } : { 'client-certificate': credential.cert, 'client-key': credential.key } }],
    contexts: [{ name: user, context: { cluster: 'lab', user } }],
    'current-context': user,
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** A kubeconfig for one server and bearer token. */
export function writeKubeconfig(path: string, server: string, caFile: string, user: string, token: string): void {
  writeFileSync(path, kubeconfigText(server, caFile, user, token), { mode: 0o600 });
}
