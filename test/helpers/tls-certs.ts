/** A throwaway CA plus server and client certificates for 127.0.0.1, made with openssl for TLS tests. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh } from './netns.js';

export interface TestCerts {
  readonly dir: string;
  readonly caFile: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

export async function makeTestCerts(): Promise<TestCerts> {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-tls-'));
  const f = (name: string) => join(dir, name);
  await sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=flannel-ts-test-ca',
    '-keyout', f('ca.key'), '-out', f('ca.crt')]);
  writeFileSync(f('san.cnf'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  for (const who of ['server', 'client']) {
    await sh('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${who}`, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`)]);
    await sh('openssl', ['x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-days', '2', '-extfile', f('san.cnf'), '-out', f(`${who}.crt`)]);
  }
  return {
    dir,
    caFile: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
  };
}
