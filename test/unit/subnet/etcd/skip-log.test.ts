/** Entries that are not leases are logged once per key, bounded in length, and forgotten when they go. */
import { describe, expect, it } from 'vitest';
import { SkipLog } from '../../../../flanneld/subnet/etcd/skip-log.js';
import type { SkippedEntry } from '../../../../flanneld/subnet/etcd/lease-store.js';
import { memoryLog } from '../../../helpers/test-log.js';

const entry = (path: string, kind: SkippedEntry['kind'] = 'oversized-value', reason = 'lease value of 1048576 bytes is over the 8192-byte cap; not read'): SkippedEntry => ({ path, kind, reason });

describe('SkipLog', () => {
  it('logs a key once however often it is rewritten, and again for a different problem or after a deletion', () => {
    const { log, lines } = memoryLog();
    const skips = new SkipLog(log);
    for (let i = 0; i < 40; i++) skips.report([entry('/p/subnets/10.244.9.0-24')]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ msg: 'skipping an entry under subnets/ that is not a lease', key: '/p/subnets/10.244.9.0-24', problem: 'oversized-value' });
    skips.report([entry('/p/subnets/10.244.9.0-24', 'malformed-value', 'lease value is not a lease: x')]);
    expect(lines).toHaveLength(2);
    skips.forget('/p/subnets/10.244.9.0-24');
    skips.report([entry('/p/subnets/10.244.9.0-24', 'malformed-value', 'lease value is not a lease: x')]);
    expect(lines).toHaveLength(3);
  });

  it('bounds what a line holds, and remembers a long key by a digest', () => {
    const { log, lines } = memoryLog();
    const skips = new SkipLog(log);
    const long = `/p/subnets/${'x'.repeat(100_000)}10.244.9.0-24`;
    skips.report([entry(long, 'non-canonical-key', 'y'.repeat(10_000)), entry(long, 'non-canonical-key')]);
    expect(lines).toHaveLength(1);
    expect(JSON.stringify(lines[0]).length).toBeLessThan(600);
    expect(lines[0]!['key']).toMatch(/… \(100024 characters\)$/);
  });

  it('after a re-list, forgets keys it no longer holds and does not repeat those it still does', () => {
    const { log, lines } = memoryLog();
    const skips = new SkipLog(log);
    skips.replaceAll([entry('/p/subnets/a'), entry('/p/subnets/b')]);
    expect(lines).toHaveLength(2);
    skips.replaceAll([entry('/p/subnets/b')]);
    expect(lines).toHaveLength(2);
    expect(skips.size).toBe(1);
    skips.report([entry('/p/subnets/a')]);
    expect(lines).toHaveLength(3);
  });

  it('remembers at most 10,000 keys and then says once that it stops logging each', () => {
    const { log, lines } = memoryLog();
    const skips = new SkipLog(log);
    skips.report(Array.from({ length: 10_500 }, (_, i) => entry(`/p/subnets/junk${i}`)));
    expect(skips.size).toBe(10_000);
    expect(lines).toHaveLength(10_001);
    expect(lines.at(-1)!.msg).toBe('more entries under subnets/ are not leases; no longer logging each one');
  });
});
