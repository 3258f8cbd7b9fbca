/**
 * The etcd client plan: whether the connection is TLS as it really is (etcd3 dials https:// endpoints with TLS even
 * without a client certificate), which credentials go with it, and the raised gRPC receive limit.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_RECEIVE_BYTES, planEtcdClient, type EtcdClientOptions } from '../../../../flanneld/subnet/etcd/etcd-client.js';
import { thrownConfigError } from '../../../helpers/thrown-config-error.js';

const dir = mkdtempSync(join(tmpdir(), 'etcd-client-'));
const file = (name: string): string => {
  const path = join(dir, name);
  writeFileSync(path, `-----${name}-----`);
  return path;
};
const ca = file('ca.crt');
const cert = file('client.crt');
const key = file('client.key');
const none: EtcdClientOptions = { endpoints: [], keyFile: '', certFile: '', caFile: '', username: '', password: '' };

describe('planEtcdClient', () => {
  it.each([
    ['http, no files', ['http://10.0.0.1:2379'], {}, { insecure: true, clientCertificate: false, credentials: undefined }],
    ['https, no files', ['https://10.0.0.1:2379'], {}, { insecure: false, clientCertificate: false, credentials: undefined }],
    ['https with a CA only', ['https://10.0.0.1:2379'], { caFile: ca }, { insecure: false, clientCertificate: false, credentials: ['rootCertificate'] }],
    ['https, cert and key', ['https://10.0.0.1:2379'], { certFile: cert, keyFile: key, caFile: ca }, { insecure: false, clientCertificate: true, credentials: ['certChain', 'privateKey', 'rootCertificate'] }],
    ['http, cert and key (etcd3 still dials TLS)', ['http://10.0.0.1:2379'], { certFile: cert, keyFile: key }, { insecure: false, clientCertificate: true, credentials: ['certChain', 'privateKey', 'rootCertificate'] }],
    ['http with a CA only (no TLS, as upstream)', ['http://10.0.0.1:2379'], { caFile: ca }, { insecure: true, clientCertificate: false, credentials: undefined }],
    ['two https endpoints', ['https://a:2379', 'https://b:2379'], {}, { insecure: false, clientCertificate: false, credentials: undefined }],
  ])('%s', (_name, endpoints, files, expected) => {
    const plan = planEtcdClient({ ...none, endpoints, ...files });
    expect(plan.insecure).toBe(expected.insecure);
    expect(plan.clientCertificate).toBe(expected.clientCertificate);
    expect(plan.options.credentials && Object.keys(plan.options.credentials).sort()).toEqual(expected.credentials);
  });

  it('reads the CA file for an https endpoint without a client certificate', () => {
    const plan = planEtcdClient({ ...none, endpoints: ['https://10.0.0.1:2379'], caFile: ca });
    expect(plan.options.credentials?.rootCertificate.toString()).toBe('-----ca.crt-----');
  });

  it('refuses a mix of http:// and https:// without a client certificate, naming both', () => {
    const err = thrownConfigError(() => planEtcdClient({ ...none, endpoints: ['http://a:2379', 'https://b:2379'] }));
    expect(err.message).toBe('etcd-endpoints: mixes http:// and https:// endpoints; use one scheme for all (got "http://a:2379,https://b:2379")');
  });

  it('raises the gRPC receive limit far above the 4 MiB default (or to what a test asks)', () => {
    expect(MAX_RECEIVE_BYTES).toBe(64 * 1024 * 1024);
    expect(planEtcdClient({ ...none, endpoints: ['http://a:2379'] }).options.grpcOptions).toEqual({ 'grpc.max_receive_message_length': MAX_RECEIVE_BYTES });
    expect(planEtcdClient({ ...none, endpoints: ['http://a:2379'], maxReceiveBytes: 1024 }).options.grpcOptions).toEqual({ 'grpc.max_receive_message_length': 1024 });
  });
});
