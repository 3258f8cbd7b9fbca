/**
 * The routers to announce to, as operators write them (--bgp-peers, docs/operations.md#announcing-pod-subnets-over-bgp):
 * `ADDRESS;as=AS[;password=KEY][;ttl=N]`, one entry per router, comma-separated or repeated. A bad entry is not fatal: it is named (never its
 * password) and left out, and the other routers are still used.
 */
import { formatIp, parseIp } from '../ip/address.js';
import type { BgpPeer } from './bgp-session.js';

/** RFC 6793: AS numbers are 32 bits; 0 is reserved (RFC 7607). */
const MAX_AS = 0xffffffff;
/** TCP_MD5SIG_MAXKEYLEN in the kernel. */
const MAX_PASSWORD = 80;

export interface ParsedPeers {
  readonly peers: readonly BgpPeer[];
  /** One sentence per entry left out. */
  readonly problems: readonly string[];
}

export function parseBgpPeers(entries: readonly string[]): ParsedPeers {
  const peers: BgpPeer[] = [];
  const problems: string[] = [];
  // The flag is repeated or takes a comma list, like --metrics-allow-from; so a password holds neither ',' nor ';'.
  for (const entry of entries.flatMap((e) => e.split(',')).map((e) => e.trim()).filter((e) => e !== '')) {
    const parsed = parseEntry(entry);
    if (typeof parsed === 'string') problems.push(`--bgp-peers entry ${JSON.stringify(redact(entry))}: ${parsed}; this router is left out`);
    else if (peers.some((p) => p.address.value === parsed.address.value && p.address.family === parsed.address.family)) problems.push(`--bgp-peers: ${formatIp(parsed.address)} is listed twice; the first entry is used`);
    else peers.push(parsed);
  }
  return { peers, problems };
}

function parseEntry(entry: string): BgpPeer | string {
  const [addressText = '', ...options] = entry.split(';').map((s) => s.trim());
  const address = parseIp(addressText);
  if (!address) return `${JSON.stringify(addressText)} is not an IPv4 or IPv6 address`;
  const fields = new Map<string, string>();
  for (const option of options) {
    const eq = option.indexOf('=');
    const key = (eq < 0 ? option : option.slice(0, eq)).toLowerCase();
    if (!['as', 'password', 'ttl'].includes(key)) return `unknown option ${JSON.stringify(key)} (known: as, password, ttl)`;
    fields.set(key, eq < 0 ? '' : option.slice(eq + 1));
  }
  const remoteAs = integer(fields.get('as'), 1, MAX_AS);
  if (remoteAs === undefined) return `as=${fields.get('as') ?? '(missing)'} is not an AS number (1..${MAX_AS})`;
  const password = fields.get('password');
  if (password !== undefined && (password.length === 0 || password.length > MAX_PASSWORD)) return `the password must be 1..${MAX_PASSWORD} characters (got ${password.length})`;
  const ttlText = fields.get('ttl');
  const multihopTtl = ttlText === undefined ? undefined : integer(ttlText, 1, 255);
  if (ttlText !== undefined && multihopTtl === undefined) return `ttl=${ttlText} is not a TTL (1..255)`;
  return { address, remoteAs, ...(password !== undefined ? { password } : {}), ...(multihopTtl !== undefined ? { multihopTtl } : {}) };
}

function integer(text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined || !/^\d{1,10}$/.test(text)) return undefined;
  const n = Number(text);
  return n >= min && n <= max ? n : undefined;
}

/** Entries are logged, passwords never. */
export function redact(entry: string): string {
  return entry.replace(/(;\s*password=)[^;]*/gi, '$1…');
}
