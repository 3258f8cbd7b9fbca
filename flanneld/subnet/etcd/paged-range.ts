/**
 * Reads every key under a prefix in pages (etcd's range `limit`, continuing after the last key), all at the first
 * page's revision, so thousands of leases arrive as one consistent snapshot without one response holding them all:
 * 25,000 leases are ~5 MB, past gRPC's default 4 MiB receive limit. A compaction under the pinned revision restarts
 * the read at a fresh one; a page over the receive limit (values of hundreds of KiB, which only junk has) makes the
 * pages ten times smaller for this and every later read.
 */
import { FlannelError } from '../../runtime/errors.js';
import type { RawKeyValue } from './lease-entry.js';

/**
 * Keys per page. A page of real leases is ~300 KB, so 25,000 leases take 25 requests; values up to the 8 KiB cap keep
 * a full page under 8 MiB, well inside the client's receive limit (etcd-client.ts).
 */
export const DEFAULT_PAGE_SIZE = 1000;
/** Compactions in a row under one read before giving up (the caller retries with backoff). */
const MAX_RESTARTS = 3;

export interface PageRequest {
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  readonly limit: number;
  /** Undefined for the first page (the store's current revision), then the first page's revision. */
  readonly revision: bigint | undefined;
}

export interface Page {
  readonly kvs: readonly RawKeyValue[];
  readonly more: boolean;
  readonly revision: bigint;
}

/** 'compacted': the pinned revision is gone; 'too-large': the response was over the receive limit. */
export type PageFailure = 'compacted' | 'too-large' | 'other';

export interface PagedReaderDeps {
  readonly fetch: (request: PageRequest) => Promise<Page>;
  readonly classify: (err: unknown) => PageFailure;
  readonly pageSize?: number;
  /** Pages just became smaller because one was over the receive limit. */
  readonly onShrink?: (pageSize: number) => void;
}

export class PagedReader {
  private size: number;

  constructor(private readonly deps: PagedReaderDeps) {
    this.size = deps.pageSize ?? DEFAULT_PAGE_SIZE;
  }

  get pageSize(): number {
    return this.size;
  }

  /** Every key-value under `prefix`, each turned into a T by `read` as its page arrives, and the revision of them all. */
  async readAll<T>(prefix: string, read: (kv: RawKeyValue) => T): Promise<{ items: T[]; revision: bigint }> {
    const start = Buffer.from(prefix);
    const rangeEnd = prefixEnd(start);
    for (let restarts = 0; ; restarts++) {
      const items: T[] = [];
      let revision: bigint | undefined;
      let key = start;
      try {
        for (;;) {
          const page = await this.fetchPage({ key, rangeEnd, limit: this.size, revision });
          revision ??= page.revision;
          for (const kv of page.kvs) items.push(read(kv));
          const last = page.kvs.at(-1);
          if (!page.more || !last) return { items, revision };
          key = Buffer.concat([last.key, Buffer.from([0])]);
        }
      } catch (err) {
        if (this.deps.classify(err) !== 'compacted' || restarts >= MAX_RESTARTS) throw err;
      }
    }
  }

  private async fetchPage(request: PageRequest): Promise<Page> {
    for (;;) {
      try {
        return await this.deps.fetch({ ...request, limit: this.size });
      } catch (err) {
        if (this.deps.classify(err) !== 'too-large') throw err;
        if (this.size === 1) {
          throw new FlannelError('ERR_STORE_UNAVAILABLE', `one key after ${request.key.toString().slice(0, 80)} is larger than the etcd client's receive limit`, { cause: err });
        }
        this.size = Math.max(1, Math.floor(this.size / 10));
        this.deps.onShrink?.(this.size);
      }
    }
  }
}

/** The end of the range holding every key that starts with `prefix` (etcd's prefix convention). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}
