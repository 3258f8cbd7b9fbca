/**
 * Paged listing over a fake etcd range: pages follow each other from the last key, all at the first page's revision;
 * a compaction under that revision restarts the read; a page over the receive limit makes the pages smaller.
 */
import { describe, expect, it } from 'vitest';
import type { RawKeyValue } from '../../../../flanneld/subnet/etcd/lease-entry.js';
import { PagedReader, prefixEnd, type Page, type PageFailure, type PageRequest } from '../../../../flanneld/subnet/etcd/paged-range.js';

class CompactedError extends Error {}
class TooLargeError extends Error {}
const classify = (err: unknown): PageFailure => (err instanceof CompactedError ? 'compacted' : err instanceof TooLargeError ? 'too-large' : 'other');

/** A key space with revisions: `at(rev)` is what a range pinned to `rev` sees. */
class FakeRange {
  revision = 100n;
  compactedBelow = 0n;
  /** A request over this many keys fails as over the receive limit. */
  maxKeys = Infinity;
  readonly requests: PageRequest[] = [];
  private readonly versions: { rev: bigint; keys: string[] }[] = [];
  onRequest: (n: number) => void = () => undefined;

  constructor(keys: string[]) {
    this.versions.push({ rev: this.revision, keys: [...keys].sort() });
  }

  write(keys: string[]): void {
    this.revision++;
    this.versions.push({ rev: this.revision, keys: [...keys].sort() });
  }

  fetch = async (req: PageRequest): Promise<Page> => {
    this.requests.push(req);
    this.onRequest(this.requests.length);
    const rev = req.revision ?? this.revision;
    if (rev < this.compactedBelow) throw new CompactedError('required revision has been compacted');
    if (req.limit > this.maxKeys) throw new TooLargeError('RESOURCE_EXHAUSTED');
    const keys = [...this.versions].reverse().find((v) => v.rev <= rev)!.keys;
    const from = req.key.toString();
    const end = req.rangeEnd.toString();
    const inRange = keys.filter((k) => k >= from && k < end);
    const page = inRange.slice(0, req.limit);
    const kvs: RawKeyValue[] = page.map((k) => ({ key: Buffer.from(k), value: Buffer.from('v'), mod_revision: '1', create_revision: '1', lease: '0' }));
    return { kvs, more: inRange.length > req.limit, revision: rev };
  };
}

const keys = (n: number, prefix = '/p/subnets/'): string[] => Array.from({ length: n }, (_, i) => `${prefix}10.${i >> 8}.${i & 255}.0-24`);

describe('PagedReader', () => {
  it.each([
    [0, 10, 1],
    [9, 10, 1],
    [10, 10, 1],
    [11, 10, 2],
    [25_000, 1000, 25],
  ])('reads %i keys in pages of %i with %i request(s), all at one revision', async (count, pageSize, requests) => {
    const range = new FakeRange([...keys(count), '/p/subnets0', '/p/config', '/q/subnets/x']);
    const reader = new PagedReader({ fetch: range.fetch, classify, pageSize });
    const { items, revision } = await reader.readAll('/p/subnets/', (kv) => kv.key.toString());
    expect(items).toEqual(keys(count).sort());
    expect(revision).toBe(100n);
    expect(range.requests).toHaveLength(requests);
    expect(range.requests.slice(1).every((r) => r.revision === 100n)).toBe(true);
  });

  it('sees one snapshot even when keys change between its pages', async () => {
    const range = new FakeRange(keys(30));
    range.onRequest = (n) => {
      if (n === 2) range.write([...keys(30).slice(5), ...keys(40).slice(30)]);
    };
    const { items, revision } = await new PagedReader({ fetch: range.fetch, classify, pageSize: 10 }).readAll('/p/subnets/', (kv) => kv.key.toString());
    expect(revision).toBe(100n);
    expect(items).toEqual(keys(30).sort());
  });

  it('starts again at a fresh revision when the pinned one is compacted mid-read', async () => {
    const range = new FakeRange(keys(30));
    range.onRequest = (n) => {
      if (n === 2) {
        range.write(keys(35));
        range.compactedBelow = range.revision;
      }
    };
    const { items, revision } = await new PagedReader({ fetch: range.fetch, classify, pageSize: 10 }).readAll('/p/subnets/', (kv) => kv.key.toString());
    expect(revision).toBe(101n);
    expect(items).toEqual(keys(35).sort());
    expect(range.requests.map((r) => r.revision)).toEqual([undefined, 100n, undefined, 101n, 101n, 101n]);
  });

  it('makes pages ten times smaller, for good, when one is over the receive limit', async () => {
    const range = new FakeRange(keys(250));
    range.maxKeys = 99;
    const shrunk: number[] = [];
    const reader = new PagedReader({ fetch: range.fetch, classify, pageSize: 1000, onShrink: (n) => shrunk.push(n) });
    const { items } = await reader.readAll('/p/subnets/', (kv) => kv.key.toString());
    expect(items).toHaveLength(250);
    expect(shrunk).toEqual([100, 10]);
    expect(reader.pageSize).toBe(10);
    const before = range.requests.length;
    await reader.readAll('/p/subnets/', (kv) => kv.key.toString());
    expect(range.requests.slice(before).every((r) => r.limit === 10)).toBe(true);
  });

  it('gives up on a single key over the receive limit, and passes other errors through', async () => {
    const range = new FakeRange(keys(3));
    range.maxKeys = 0;
    await expect(new PagedReader({ fetch: range.fetch, classify, pageSize: 10 }).readAll('/p/subnets/', (kv) => kv)).rejects.toThrow(/larger than the etcd client's receive limit/);
    const failing = new PagedReader({ fetch: () => Promise.reject(new Error('unavailable')), classify });
    await expect(failing.readAll('/p/subnets/', (kv) => kv)).rejects.toThrow('unavailable');
  });

  it.each([
    ['/p/subnets/', '/p/subnets0'],
    ['a', 'b'],
    ['a\xff', 'b'],
  ])('the range of prefix %j ends at %j', (prefix, end) => {
    expect(prefixEnd(Buffer.from(prefix, 'latin1')).toString('latin1')).toBe(end);
  });
});
