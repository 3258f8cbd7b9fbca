/**
 * Node annotations are store input like etcd values: a flannel annotation over the size cap is not parsed (the peer
 * is skipped, by its length alone), and a reason quoting an annotation is bounded.
 */
import { describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../../../flanneld/config/network-config.js';
import { MAX_LEASE_VALUE_BYTES } from '../../../../flanneld/subnet/store-limits.js';
import { annotationNames } from '../../../../flanneld/subnet/kube/annotations.js';
import type { KubeNode } from '../../../../flanneld/subnet/kube/node-api.js';
import { peerLease } from '../../../../flanneld/subnet/kube/node-lease.js';

const P = 'flannel.alpha.coreos.com/';
const names = annotationNames('flannel.alpha.coreos.com');
const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}').config;
const node = (extra: Record<string, string>): KubeNode => ({
  name: 'n2',
  resourceVersion: '1',
  podCIDRs: ['10.244.2.0/24'],
  annotations: {
    [`${P}kube-subnet-manager`]: 'true',
    [`${P}backend-type`]: 'vxlan',
    [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}',
    [`${P}public-ip`]: '192.0.2.2',
    ...extra,
  },
});
const HEAD = '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3","Pad":"';
/** Backend data of exactly `bytes` bytes. */
const padded = (bytes: number): string => `${HEAD}${'x'.repeat(bytes - HEAD.length - 2)}"}`;

describe('flannel annotations over the size cap', () => {
  it.each([
    ['backend-data at the cap', () => ({ [`${P}backend-data`]: padded(MAX_LEASE_VALUE_BYTES) }), 'lease'],
    ['backend-data one byte over', () => ({ [`${P}backend-data`]: padded(MAX_LEASE_VALUE_BYTES + 1) }), 'malformed'],
    ['a megabyte of backend-type', () => ({ [`${P}backend-type`]: 'v'.repeat(1 << 20) }), 'malformed'],
    ['a megabyte of public-ip', () => ({ [`${P}public-ip`]: '1'.repeat(1 << 20) }), 'malformed'],
    ['a megabyte in an annotation flannel does not read', () => ({ 'example.com/other': 'x'.repeat(1 << 20) }), 'lease'],
  ] as const)('%s', (_what, extra, kind) => {
    if (kind === 'lease') expect(Buffer.byteLength(padded(MAX_LEASE_VALUE_BYTES))).toBe(MAX_LEASE_VALUE_BYTES);
    const found = peerLease(node(extra()), names, config);
    expect(found.kind === 'malformed' ? found.reason : found.kind).toMatch(kind === 'lease' ? /^lease$/ : / of \d+ bytes is over the 8192-byte cap; not read$/);
  });

  it.each([
    ['backend-data that is not JSON', () => ({ [`${P}backend-data`]: `{${'x'.repeat(8000)}` })],
    ['a public-ip that is no address', () => ({ [`${P}public-ip`]: 'y'.repeat(8000) })],
  ] as const)('%s gives a bounded reason', (_what, extra) => {
    const found = peerLease(node(extra()), names, config);
    expect(found.kind).toBe('malformed');
    if (found.kind === 'malformed') expect(found.reason.length).toBeLessThan(250);
  });
});
