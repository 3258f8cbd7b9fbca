/**
 * What of an etcd key-value under the subnets prefix is a lease: canonical keys only, values under the size cap
 * read, anything else skipped with a bounded reason and never parsed.
 */
import { describe, expect, it } from 'vitest';
import { MAX_LEASE_VALUE_BYTES } from '../../../../flanneld/subnet/store-limits.js';
import { readLeaseEntry, type RawKeyValue } from '../../../../flanneld/subnet/etcd/lease-entry.js';

const PREFIX = '/coreos.com/network';
const VALUE = '{"PublicIP":"192.0.2.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:02"}}';
const kv = (key: string, value: string | Buffer = VALUE, lease = '7'): RawKeyValue => ({
  key: Buffer.from(`${PREFIX}/subnets/${key}`),
  value: Buffer.from(value),
  mod_revision: '12',
  create_revision: '10',
  lease,
});

describe('readLeaseEntry', () => {
  it.each([
    ['10.244.3.0-24', '10.244.3.0-24'],
    ['10.244.3.0-24&2001:db8:a:3::-64', '10.244.3.0-24&2001:db8:a:3::-64'],
    ['0.0.0.0-0&2001:db8:a:3::-64', '0.0.0.0-0&2001:db8:a:3::-64'],
  ])('reads the canonical key %s as the lease %s, with its versions', (key, expected) => {
    const entry = readLeaseEntry(PREFIX, kv(key));
    expect(entry.kind).toBe('lease');
    if (entry.kind !== 'lease') return;
    expect(entry.stored).toMatchObject({ key: expected, modRevision: 12n, createRevision: 10n, storeLeaseId: '7' });
    expect(entry.stored.lease.reservation).toBe(false);
  });

  it('reads a key without an etcd lease as a reservation', () => {
    const entry = readLeaseEntry(PREFIX, kv('10.244.3.0-24', VALUE, '0'));
    expect(entry.kind === 'lease' && entry.stored.lease.reservation).toBe(true);
  });

  it.each(['10.244.3.7-24', 'junk10.244.3.0-24', 'a/b/10.244.3.0-24', '10.244.3.0-24&2001:db8:a:3::1-64', 'garbage'])(
    'skips the key %s: not a lease key, whatever its value',
    (key) => {
      const entry = readLeaseEntry(PREFIX, kv(key));
      expect(entry.kind).toBe('not-a-lease-key');
      if (entry.kind === 'not-a-lease-key') expect(entry.skipped).toMatchObject({ path: `${PREFIX}/subnets/${key}`, kind: 'non-canonical-key' });
    },
  );

  it.each([
    [MAX_LEASE_VALUE_BYTES, 'lease'],
    [MAX_LEASE_VALUE_BYTES + 1, 'unreadable'],
    [1024 * 1024, 'unreadable'],
  ])('a value of %i bytes is %s', (size, kind) => {
    const padded = VALUE.slice(0, -1) + `,"Pad":"${'x'.repeat(size - VALUE.length - 9)}"}`;
    expect(Buffer.byteLength(padded)).toBe(size);
    expect(readLeaseEntry(PREFIX, kv('10.244.3.0-24', padded)).kind).toBe(kind);
  });

  it('refuses an oversized value by its size alone, naming the size and not the content', () => {
    // Not JSON at all: were it parsed, the reason would be a parse error.
    const entry = readLeaseEntry(PREFIX, kv('10.244.3.0-24', Buffer.alloc(MAX_LEASE_VALUE_BYTES + 1, '{')));
    expect(entry).toMatchObject({ kind: 'unreadable', unreadable: { kind: 'oversized-value', modRevision: 12n, createRevision: 10n } });
    if (entry.kind === 'unreadable') {
      expect(entry.unreadable.reason).toBe(`lease value of ${MAX_LEASE_VALUE_BYTES + 1} bytes is over the ${MAX_LEASE_VALUE_BYTES}-byte cap; not read`);
    }
  });

  it.each([
    ['{not json', 'malformed-value'],
    ['[]', 'malformed-value'],
    [`{"PublicIP":"${'9'.repeat(8000)}"}`, 'malformed-value'],
  ])('skips the value %#: %s, with a reason bounded in length', (value, kind) => {
    const entry = readLeaseEntry(PREFIX, kv('10.244.3.0-24', value));
    expect(entry).toMatchObject({ kind: 'unreadable', unreadable: { kind } });
    if (entry.kind === 'unreadable') expect(entry.unreadable.reason.length).toBeLessThan(300);
  });
});
