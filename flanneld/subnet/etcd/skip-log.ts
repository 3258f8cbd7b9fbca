/**
 * Warns once per key about entries under the subnets prefix that are not leases, so a key rewritten with junk over
 * and over costs one bounded log line, not one per write. A key is remembered (by a digest when long, never by its
 * full text) until it is deleted or a re-list no longer finds it skipped; past MAX_REMEMBERED keys, new ones are
 * counted in one line instead of each being logged, which bounds memory whatever the store holds.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { LOGGED_KEY_CHARS, LOGGED_REASON_CHARS, clip } from '../store-limits.js';
import type { SkipKind, SkippedEntry } from './lease-store.js';

const MAX_REMEMBERED = 10_000;
/** Keys up to this length are remembered as they are; longer ones by a digest. */
const VERBATIM_KEY_CHARS = 128;

export class SkipLog {
  private readonly logged = new Map<string, SkipKind>();
  private unlogged = 0;

  constructor(private readonly log: Logger) {}

  /** Entries from a watch batch: each is logged unless its key was already logged for the same kind of problem. */
  report(entries: readonly SkippedEntry[]): void {
    for (const entry of entries) this.note(entry);
  }

  /** A full listing's skipped entries: what it no longer holds is forgotten, the rest is reported. */
  replaceAll(entries: readonly SkippedEntry[]): void {
    const present = new Set(entries.map((e) => memo(e.path)));
    for (const id of [...this.logged.keys()]) if (!present.has(id)) this.logged.delete(id);
    this.unlogged = 0;
    this.report(entries);
  }

  /** The key was deleted: should it come back broken, that is news again. */
  forget(path: string): void {
    this.logged.delete(memo(path));
  }

  /** How many keys are remembered (for tests: it must stay bounded). */
  get size(): number {
    return this.logged.size;
  }

  private note(entry: SkippedEntry): void {
    const id = memo(entry.path);
    if (this.logged.get(id) === entry.kind) return;
    if (!this.logged.has(id) && this.logged.size >= MAX_REMEMBERED) {
      if (this.unlogged++ === 0) {
        this.log.warn({ remembered: MAX_REMEMBERED }, 'more entries under subnets/ are not leases; no longer logging each one');
      }
      return;
    }
    this.logged.set(id, entry.kind);
    this.log.warn(
      { key: clip(entry.path, LOGGED_KEY_CHARS), problem: entry.kind, reason: clip(entry.reason, LOGGED_REASON_CHARS) },
      'skipping an entry under subnets/ that is not a lease',
    );
  }
}

function memo(path: string): string {
  return path.length <= VERBATIM_KEY_CHARS ? path : `sha256:${createHash('sha256').update(path).digest('base64')}`;
}
