/**
 * Bounds on what the shared store (etcd keys and values, Node annotations) may cost this daemon. Every node can
 * write there, so a value is read only when it is small enough to be a lease, and whatever of it reaches a log line
 * is cut short: a megabyte of junk must cost a skipped entry and one bounded line, not a megabyte of heap and log.
 */

/**
 * The largest lease value (etcd) or flannel annotation value (kube) that is parsed. Real ones are ~150 bytes (a
 * dual-stack vxlan lease ~300); 8 KiB leaves backends room to publish 25 times more while keeping a page of 1000
 * readable leases under 8 MiB and a refused value's cost to its size check.
 */
export const MAX_LEASE_VALUE_BYTES = 8 * 1024;

/** What of a key or name goes into a log line. */
export const LOGGED_KEY_CHARS = 80;
/** What of a reason (which may quote a value) goes into a log line. */
export const LOGGED_REASON_CHARS = 200;

/** `text` cut to `limit` characters, saying how long it was, so a log line stays bounded whatever the store holds. */
export function clip(text: string, limit: number): string {
  return text.length <= limit ? text : `${text.slice(0, limit)}… (${text.length} characters)`;
}

/** Why a value of `bytes` bytes is not read, or undefined when it may be. Never looks at the content. */
export function oversizeProblem(what: string, bytes: number): string | undefined {
  return bytes > MAX_LEASE_VALUE_BYTES ? `${what} of ${bytes} bytes is over the ${MAX_LEASE_VALUE_BYTES}-byte cap; not read` : undefined;
}
