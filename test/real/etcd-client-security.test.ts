/** TLS (CA, client certificate and key) and username/password against real etcd servers configured for them. */
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { parseIPv4 } from '../../flanneld/ip/address.js';
import { systemClock } from '../../flanneld/runtime/clock.js';
import { seededRandom } from '../../flanneld/runtime/random.js';
import { createEtcdClient, planEtcdClient, type EtcdClientOptions } from '../../flanneld/subnet/etcd/etcd-client.js';
import { EtcdLeaseStore } from '../../flanneld/subnet/etcd/etcd-lease-store.js';
import { EtcdSubnetManager } from '../../flanneld/subnet/etcd/etcd-subnet-manager.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd-server.js';
import { killStaleTrackedProcesses } from '../helpers/processes.js';
import { testLog } from '../helpers/test-log.js';
import { makeTestCerts, type TestCerts } from '../helpers/tls-certs.js';

const servers: EtcdServer[] = [];
let certs: TestCerts | undefined;
const none: EtcdClientOptions = { endpoints: [], keyFile: '', certFile: '', caFile: '', username: '', password: '', callTimeoutMs: 3000 };

async function acquireWith(opts: EtcdClientOptions): Promise<string> {
  const client = createEtcdClient(planEtcdClient(opts));
  try {
    await client.put('/coreos.com/network/config').value('{"Network":"10.90.0.0/16","Backend":{"Type":"alloc"}}');
    const mgr = new EtcdSubnetManager({
      store: new EtcdLeaseStore(client, '/coreos.com/network'),
      prefix: '/coreos.com/network',
      clock: systemClock,
      random: seededRandom(3),
      log: testLog(),
    });
    const lease = await mgr.acquireLease({ attrs: { publicIP: parseIPv4('192.0.2.30')!, backendType: 'alloc' } }, new AbortController().signal);
    return lease.subnet ? 'ok' : 'no subnet';
  } finally {
    client.close();
  }
}

afterAll(async () => {
  for (const s of servers) await s.stop();
  if (certs) rmSync(certs.dir, { recursive: true, force: true });
});

describe('etcd client security', () => {
  it('talks TLS with a CA, client certificate and key', async () => {
    killStaleTrackedProcesses();
    certs = await makeTestCerts();
    const etcd = await startEtcd({ tls: { caFile: certs.caFile, certFile: certs.serverCert, keyFile: certs.serverKey } });
    servers.push(etcd);
    const tls = { ...none, endpoints: [etcd.endpoint], caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey };
    expect(await acquireWith(tls)).toBe('ok');
    // Without the client certificate the server refuses us.
    await expect(acquireWith({ ...tls, keyFile: '', certFile: '' })).rejects.toThrow();
  });

  it('talks TLS to an https:// endpoint without a client certificate, verifying the server with --etcd-cafile', async () => {
    certs ??= await makeTestCerts();
    const etcd = await startEtcd({ tls: { caFile: certs.caFile, certFile: certs.serverCert, keyFile: certs.serverKey }, clientCertAuth: false });
    servers.push(etcd);
    expect(etcd.endpoint).toMatch(/^https:/);
    const caOnly = { ...none, endpoints: [etcd.endpoint], caFile: certs.caFile };
    expect(planEtcdClient(caOnly)).toMatchObject({ insecure: false, clientCertificate: false });
    expect(await acquireWith(caOnly)).toBe('ok');
    // Without the CA, the system roots do not know the test CA: proof that the connection really is TLS.
    await expect(acquireWith({ ...caOnly, caFile: '' })).rejects.toThrow();
  });

  it('authenticates with username and password', async () => {
    const etcd = await startEtcd();
    servers.push(etcd);
    const admin = createEtcdClient(planEtcdClient({ ...none, endpoints: [etcd.endpoint] }));
    await admin.user('root').create('rootpw');
    await admin.role('root').create().catch(() => undefined);
    await admin.user('root').addRole('root');
    await admin.auth.authEnable({});
    admin.close();
    expect(await acquireWith({ ...none, endpoints: [etcd.endpoint], username: 'root', password: 'rootpw' })).toBe('ok');
    await expect(acquireWith({ ...none, endpoints: [etcd.endpoint], username: 'root', password: 'wrong' })).rejects.toThrow();
  });
});
