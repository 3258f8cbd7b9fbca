/**
 * The text side of WireGuard's cross-platform userspace API (UAPI), the line protocol wireguard-go speaks on
 * /var/run/wireguard/<dev>.sock: `set=1` or `get=1`, key=value lines, a blank line; every reply ends with
 * `errno=<n>` and a blank line. Keys travel as hex there, while flannel (and wg(8)) show them as base64, so
 * conversion happens at this boundary and nothing past it sees hex.
 *
 * Pure functions only; uapi-socket.ts carries the text over the socket.
 */
import { constants as osConstants } from 'node:os';
import { formatIp, parseIp, type IpAddress } from '../../flanneld/ip/address.js';
import { formatCidr, parseCidr, type IpNet } from '../../flanneld/ip/cidr.js';
import { FlannelError } from '../../flanneld/runtime/errors.js';

export const KEY_BYTES = 32;
/** What the protocol sends for "no preshared key": 32 zero bytes. */
const NO_KEY_HEX = '0'.repeat(KEY_BYTES * 2);
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=$/;
const HEX_KEY = /^[0-9a-f]{64}$/;
const MAX_U16 = 0xffff;
const MAX_U32 = 0xffffffff;

export interface WgEndpoint {
  readonly ip: IpAddress;
  readonly port: number;
}

export interface WgPeerConfig {
  /** base64, as wg(8) prints it. */
  readonly publicKey: string;
  readonly presharedKey?: string | undefined;
  /** Left as the device has it when absent: the protocol has no way to clear an endpoint. */
  readonly endpoint?: WgEndpoint | undefined;
  /** Seconds; absent or 0 turns keepalives off. */
  readonly persistentKeepalive?: number | undefined;
  readonly allowedIps: readonly IpNet[];
}

export interface WgDeviceConfig {
  readonly privateKey: string;
  readonly listenPort?: number | undefined;
  readonly fwmark?: number | undefined;
  readonly peers: readonly WgPeerConfig[];
}

export interface WgPeerState {
  readonly publicKey: string;
  readonly presharedKey: string | undefined;
  readonly endpoint: WgEndpoint | undefined;
  readonly persistentKeepalive: number;
  readonly allowedIps: readonly IpNet[];
  /** Milliseconds since the epoch; undefined before the first handshake. */
  readonly lastHandshakeMs: number | undefined;
  /** Plain numbers: a counter past 2^53 bytes (9 PB) is not a case this daemon meets. */
  readonly rxBytes: number;
  readonly txBytes: number;
}

export interface WgDeviceState {
  readonly privateKey: string | undefined;
  readonly listenPort: number | undefined;
  readonly fwmark: number;
  readonly peers: readonly WgPeerState[];
}

/** What an incremental set needs to know of the device: which peers it has now. */
export interface WgCurrentPeers {
  readonly peers: readonly { readonly publicKey: string }[];
}

/** A device's non-zero errno reply; the code is ERR_DEVICE like any other failure of the device. */
export class UapiErrnoError extends FlannelError {
  override readonly name = 'UapiErrnoError';
  constructor(
    readonly errno: number,
    what: string,
  ) {
    super('ERR_DEVICE', `${what} failed with errno=${errno}${errnoSuffix(errno)}`);
  }
}

function errnoSuffix(errno: number): string {
  const name = Object.entries(osConstants.errno).find(([, value]) => value === Math.abs(errno))?.[0];
  return name ? ` (${name})` : '';
}

/** Keys are secrets or identities; the messages never echo them, only what is wrong with them. */
export function keyToHex(base64: string): string {
  if (!BASE64_KEY.test(base64)) throw new FlannelError('ERR_CONFIG_INVALID', `a WireGuard key must be ${KEY_BYTES} bytes in base64 (44 characters)`);
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.length !== KEY_BYTES || bytes.toString('base64') !== base64) {
    throw new FlannelError('ERR_CONFIG_INVALID', `a WireGuard key must be ${KEY_BYTES} bytes in base64 (non-canonical encoding)`);
  }
  return bytes.toString('hex');
}

export function hexToKey(hex: string): string {
  if (!HEX_KEY.test(hex)) throw new FlannelError('ERR_CONFIG_INVALID', `a WireGuard key must be ${KEY_BYTES} bytes in lower-case hex (64 characters)`);
  return Buffer.from(hex, 'hex').toString('base64');
}

export function formatEndpoint(endpoint: WgEndpoint): string {
  const ip = formatIp(endpoint.ip);
  return endpoint.ip.family === 6 ? `[${ip}]:${endpoint.port}` : `${ip}:${endpoint.port}`;
}

export function parseEndpoint(text: string): WgEndpoint | undefined {
  const match = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([0-9.]+):(\d{1,5})$/.exec(text);
  if (!match) return undefined;
  const ip = parseIp(match[1]!);
  const port = Number(match[2]);
  if (!ip || port > MAX_U16 || (ip.family === 6) !== text.startsWith('[')) return undefined;
  return { ip, port };
}

/**
 * The `set=1` request that makes the device match `config`. Without `current` every peer is replaced in one go
 * (replace_peers=true); with it only the difference is sent: peers the device has and config lacks are removed,
 * the rest are written whole, so traffic to unchanged peers never sees them vanish.
 */
export function renderSet(config: WgDeviceConfig, current?: WgCurrentPeers): string {
  if (current) return renderPeerChanges(config, staleKeys(config, current));
  return request([...interfaceLines(config), 'replace_peers=true', ...uniquePeers(config.peers).flatMap(peerLines)]);
}

/**
 * The `set=1` request that removes the peers named in `remove` and writes `config.peers` whole; the device's other
 * peers are left alone. Each written peer gets its preshared key and keepalive even when unset (zero) and
 * replace_allowed_ips, so a stale value cannot survive.
 */
export function renderPeerChanges(config: WgDeviceConfig, remove: readonly string[]): string {
  const removals = remove.flatMap((key) => [`public_key=${keyToHex(key)}`, 'remove=true']);
  return request([...interfaceLines(config), ...removals, ...uniquePeers(config.peers).flatMap(peerLines)]);
}

/**
 * The two `set=1` requests that make the device send each of `peers` a keepalive now, which starts a handshake when
 * it holds no session with the peer: wireguard-go sends one whenever a peer's keepalive interval goes from 0 to
 * non-zero, so the interval goes to 1 and straight back to 0. update_only keeps a peer removed meanwhile removed.
 * Only peers without keepalives need it: writing a non-zero interval to a new peer already sends one.
 */
export function renderHandshakeKick(peers: readonly WgPeerConfig[]): readonly [string, string] | undefined {
  const quiet = peers.filter((peer) => !peer.persistentKeepalive);
  if (quiet.length === 0) return undefined;
  const lines = (interval: number): string[] =>
    quiet.flatMap((peer) => [`public_key=${keyToHex(peer.publicKey)}`, 'update_only=true', `persistent_keepalive_interval=${interval}`]);
  return [request(lines(1)), request(lines(0))];
}

function request(lines: readonly string[]): string {
  return `set=1\n${lines.join('\n')}\n\n`;
}

function interfaceLines(config: WgDeviceConfig): string[] {
  const lines = [`private_key=${keyToHex(config.privateKey)}`];
  if (config.listenPort !== undefined) lines.push(`listen_port=${checkedInt(config.listenPort, MAX_U16, 'listen port')}`);
  if (config.fwmark !== undefined) lines.push(`fwmark=${checkedInt(config.fwmark, MAX_U32, 'fwmark')}`);
  return lines;
}

function staleKeys(config: WgDeviceConfig, current: WgCurrentPeers): string[] {
  const wanted = new Set(config.peers.map((peer) => peer.publicKey));
  return current.peers.filter((peer) => !wanted.has(peer.publicKey)).map((peer) => peer.publicKey);
}

/** Two entries for one key would be merged by the device, the later allowed IPs winning: a caller's bug. */
function uniquePeers(peers: readonly WgPeerConfig[]): readonly WgPeerConfig[] {
  const seen = new Set<string>();
  for (const peer of peers) {
    if (seen.has(peer.publicKey)) throw new FlannelError('ERR_CONFIG_INVALID', `WireGuard peer ${peer.publicKey} is listed twice`);
    seen.add(peer.publicKey);
  }
  return peers;
}

function peerLines(peer: WgPeerConfig): string[] {
  const lines = [
    `public_key=${keyToHex(peer.publicKey)}`,
    `preshared_key=${peer.presharedKey === undefined ? NO_KEY_HEX : keyToHex(peer.presharedKey)}`,
  ];
  if (peer.endpoint) lines.push(`endpoint=${formatEndpoint(checkedEndpoint(peer.endpoint))}`);
  lines.push(`persistent_keepalive_interval=${checkedInt(peer.persistentKeepalive ?? 0, MAX_U16, 'persistent keepalive')}`);
  lines.push('replace_allowed_ips=true');
  for (const net of peer.allowedIps) lines.push(`allowed_ip=${formatCidr(net)}`);
  return lines;
}

function checkedEndpoint(endpoint: WgEndpoint): WgEndpoint {
  checkedInt(endpoint.port, MAX_U16, 'endpoint port');
  return endpoint;
}

function checkedInt(value: number, max: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > max) throw new FlannelError('ERR_CONFIG_INVALID', `WireGuard ${what} must be an integer in 0..${max} (got ${value})`);
  return value;
}

/**
 * The key=value lines of a complete reply (ending in `errno=<n>` and a blank line), once errno is known to be 0.
 * `what` names the request in errors.
 */
export function replyLines(reply: string, what: string): string[] {
  if (!reply.endsWith('\n\n')) throw new FlannelError('ERR_DEVICE', `${what}: the reply does not end with a blank line`);
  const lines = reply.slice(0, -2).split('\n');
  const last = lines.pop() ?? '';
  const match = /^errno=(-?\d+)$/.exec(last);
  if (!match) throw new FlannelError('ERR_DEVICE', `${what}: the reply's last line is ${JSON.stringify(last)}, not errno=<n>`);
  const errno = Number(match[1]);
  if (errno !== 0) throw new UapiErrnoError(errno, what);
  return lines;
}

/** A `get=1` reply as read off the socket, into typed state. */
export function parseGet(reply: string): WgDeviceState {
  return parseGetLines(replyLines(reply, 'get'));
}

interface PeerDraft {
  publicKey: string;
  presharedKey: string | undefined;
  endpoint: WgEndpoint | undefined;
  persistentKeepalive: number;
  allowedIps: IpNet[];
  handshakeSec: number;
  handshakeNsec: number;
  rxBytes: number;
  txBytes: number;
}

interface DeviceDraft {
  privateKey: string | undefined;
  listenPort: number | undefined;
  fwmark: number;
  peers: PeerDraft[];
}

/** Unknown keys are skipped (newer devices add some); a line that does not parse is an error naming it. */
export function parseGetLines(lines: readonly string[]): WgDeviceState {
  const device: DeviceDraft = { privateKey: undefined, listenPort: undefined, fwmark: 0, peers: [] };
  lines.forEach((line, index) => {
    try {
      applyLine(device, line);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new FlannelError('ERR_DEVICE', `get reply line ${index + 1} ${describeLine(line)}: ${reason}`, { cause: err });
    }
  });
  return { privateKey: device.privateKey, listenPort: device.listenPort, fwmark: device.fwmark, peers: device.peers.map(finishPeer) };
}

/** Secret values stay out of error messages. */
function describeLine(line: string): string {
  const key = line.slice(0, line.indexOf('='));
  return key === 'private_key' || key === 'preshared_key' ? `(${key}=…)` : JSON.stringify(line);
}

function applyLine(device: DeviceDraft, line: string): void {
  const eq = line.indexOf('=');
  if (eq <= 0) throw new Error('not key=value');
  const key = line.slice(0, eq);
  const value = line.slice(eq + 1);
  if (key === 'public_key') {
    device.peers.push(newPeer(hexToKey(value)));
    return;
  }
  const peer = device.peers.at(-1);
  if (INTERFACE_KEYS.has(key)) {
    if (peer) throw new Error(`${key} after the first peer`);
    applyInterfaceKey(device, key, value);
  } else if (PEER_KEYS.has(key)) {
    if (!peer) throw new Error(`${key} before any public_key`);
    applyPeerKey(peer, key, value);
  }
}

const INTERFACE_KEYS = new Set(['private_key', 'listen_port', 'fwmark']);

function applyInterfaceKey(device: DeviceDraft, key: string, value: string): void {
  if (key === 'private_key') device.privateKey = hexToKey(value);
  else if (key === 'listen_port') device.listenPort = parseUint(value, MAX_U16);
  else if (key === 'fwmark') device.fwmark = parseUint(value, MAX_U32);
}

const PEER_KEYS = new Set([
  'preshared_key', 'endpoint', 'persistent_keepalive_interval', 'allowed_ip', 'last_handshake_time_sec', 'last_handshake_time_nsec', 'rx_bytes', 'tx_bytes',
]);

function applyPeerKey(peer: PeerDraft, key: string, value: string): void {
  if (key === 'preshared_key') peer.presharedKey = value === NO_KEY_HEX ? undefined : hexToKey(value);
  else if (key === 'endpoint') peer.endpoint = required(parseEndpoint(value), 'not ip:port (IPv6 in brackets)');
  else if (key === 'persistent_keepalive_interval') peer.persistentKeepalive = parseUint(value, MAX_U16);
  else if (key === 'allowed_ip') peer.allowedIps.push(required(parseCidr(value), 'not a CIDR'));
  else if (key === 'last_handshake_time_sec') peer.handshakeSec = parseUint(value, Number.MAX_SAFE_INTEGER);
  else if (key === 'last_handshake_time_nsec') peer.handshakeNsec = parseUint(value, 999_999_999);
  else if (key === 'rx_bytes') peer.rxBytes = parseUint(value, Number.MAX_SAFE_INTEGER);
  else if (key === 'tx_bytes') peer.txBytes = parseUint(value, Number.MAX_SAFE_INTEGER);
}

function newPeer(publicKey: string): PeerDraft {
  return { publicKey, presharedKey: undefined, endpoint: undefined, persistentKeepalive: 0, allowedIps: [], handshakeSec: 0, handshakeNsec: 0, rxBytes: 0, txBytes: 0 };
}

function finishPeer(peer: PeerDraft): WgPeerState {
  const { handshakeSec, handshakeNsec, ...rest } = peer;
  // The device reports 0 seconds (and 0 ns) for a peer it has never shaken hands with.
  const lastHandshakeMs = handshakeSec === 0 && handshakeNsec === 0 ? undefined : handshakeSec * 1000 + Math.floor(handshakeNsec / 1e6);
  return { ...rest, lastHandshakeMs };
}

function parseUint(value: string, max: number): number {
  if (!/^\d{1,20}$/.test(value)) throw new Error('not an unsigned integer');
  const n = Number(value);
  if (n > max) throw new Error(`above ${max}`);
  return n;
}

function required<T>(value: T | undefined, reason: string): T {
  if (value === undefined) throw new Error(reason);
  return value;
}
