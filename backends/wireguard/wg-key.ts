/**
 * WireGuard keys as text (the base64 form `wg genkey` prints and upstream's wgtypes.ParseKey reads) and this node's
 * private key file: read from `WIREGUARD_KEY_FILE` (default /run/flannel/wgkey), or generated and written there on
 * first start, as upstream does. The key itself never appears in an error message.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import * as nodeFs from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ConfigError, FlannelError } from '../../flanneld/runtime/errors.js';

export const DEFAULT_KEY_FILE = '/run/flannel/wgkey';
export const KEY_FILE_ENV = 'WIREGUARD_KEY_FILE';
export const WG_KEY_BYTES = 32;

export interface WireguardKeyPair {
  /** base64, standard alphabet with padding. */
  readonly privateKey: string;
  readonly publicKey: string;
}

/** The part of node:fs/promises the key file needs; tests hand in node:fs itself on a temp dir, or a fake. */
export interface KeyFileSystem {
  readFile(path: string, encoding: 'utf8'): Promise<string>;
  /** Resolves to the topmost directory it created, undefined when `path` existed. */
  mkdir(path: string, options: { recursive: true; mode: number }): Promise<string | undefined>;
  chmod(path: string, mode: number): Promise<void>;
  writeFile(path: string, data: string, options: { mode: number; flag: 'wx' }): Promise<void>;
  link(existingPath: string, newPath: string): Promise<void>;
  unlink(path: string): Promise<void>;
}

// Go's base64.StdEncoding skips \r and \n anywhere in its input, so a key file ending in a newline (as ours does and
// as `wg genkey > file` writes) or a wrapped value parses there; every other stray character is an error.
const KEY_TEXT_RE = /^[A-Za-z0-9+/]{43}=$/;

/** The 32 key bytes of `text`, or undefined when it is not standard base64 of exactly 32 bytes. */
export function decodeWgKey(text: string): Buffer | undefined {
  const compact = text.replace(/[\r\n]/g, '');
  return KEY_TEXT_RE.test(compact) ? Buffer.from(compact, 'base64') : undefined;
}

export function encodeWgKey(key: Buffer): string {
  return key.toString('base64');
}

// A PKCS#8 PrivateKeyInfo for X25519 (OID 1.3.101.110) is this fixed prefix followed by the 32 raw key bytes.
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** The X25519 public key of a raw private key; X25519 clamps the scalar itself, so any 32 bytes are a valid key. */
export function wgPublicKey(privateKey: Buffer): Buffer {
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, privateKey]), format: 'der', type: 'pkcs8' });
  return jwkBytes(createPublicKey(key), 'x');
}

/** A fresh private key; OpenSSL clamps it as `wg genkey` does. */
export function generateWgPrivateKey(): Buffer {
  return jwkBytes(generateKeyPairSync('x25519').privateKey, 'd');
}

function jwkBytes(key: KeyObject, member: 'd' | 'x'): Buffer {
  const value = key.export({ format: 'jwk' })[member];
  if (typeof value !== 'string') throw new Error(`x25519 JWK export has no "${member}"`);
  return Buffer.from(value, 'base64url');
}

/** The key file named by the environment; set but empty is refused rather than read as "the current directory". */
export function keyFilePath(env: NodeJS.ProcessEnv = process.env): string {
  const value = env[KEY_FILE_ENV];
  if (value === undefined) return DEFAULT_KEY_FILE;
  if (value === '') throw new ConfigError(KEY_FILE_ENV, value, 'must name a file');
  return value;
}

/** This node's key pair: the key in `path`, or a new one written there when the file does not exist. */
export async function loadOrCreateKey(path: string, fs: KeyFileSystem = nodeFs): Promise<WireguardKeyPair> {
  const text = await readKeyFile(path, fs);
  const privateKey = text === undefined ? await createKeyFile(path, fs) : parseKeyFile(path, text);
  return { privateKey: encodeWgKey(privateKey), publicKey: encodeWgKey(wgPublicKey(privateKey)) };
}

/** The file's text, or undefined when there is no such file. */
async function readKeyFile(path: string, fs: KeyFileSystem): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw ioError(`reading the wireguard key file ${path}`, err);
  }
}

function parseKeyFile(path: string, text: string): Buffer {
  const key = decodeWgKey(text);
  if (key) return key;
  // The content may be a real key with a typo in it, so only its size is shown.
  throw new ConfigError(
    `wireguard key file ${path}`,
    `${Buffer.byteLength(text)} bytes, not shown`,
    `must hold the base64 of a ${WG_KEY_BYTES}-byte key, as \`wg genkey\` prints it`,
  );
}

/**
 * Writes a new key to a temporary file and links it into place, so the key file never exists half-written and two
 * starts racing on it agree on one key (the loser of the link reads the winner's). Modes are set with chmod, after
 * the umask has had its say.
 */
async function createKeyFile(path: string, fs: KeyFileSystem): Promise<Buffer> {
  const key = generateWgPrivateKey();
  const dir = dirname(path);
  await makeDirectory(dir, fs);
  const temp = join(dir, `.wgkey-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    await fs.writeFile(temp, `${encodeWgKey(key)}\n`, { mode: 0o400, flag: 'wx' });
    await fs.chmod(temp, 0o400);
    await fs.link(temp, path);
    return key;
  } catch (err) {
    if (errorCode(err) !== 'EEXIST') throw ioError(`writing the wireguard key file ${path}`, err);
    return parseKeyFile(path, (await readKeyFile(path, fs)) ?? '');
  } finally {
    await fs.unlink(temp).catch(() => undefined);
  }
}

/** Creates `dir` and any missing parents as 0755; directories that already exist keep their mode. */
async function makeDirectory(dir: string, fs: KeyFileSystem): Promise<void> {
  let first: string | undefined;
  try {
    first = await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw ioError(`creating ${dir} for the wireguard key file`, err);
  }
  // mkdir reports the topmost directory it made; each one from there down to `dir` was made by us.
  for (let made = dir; first !== undefined; made = dirname(made)) {
    await fs.chmod(made, 0o755);
    if (made === first || made === dirname(made)) break;
  }
}

function errorCode(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}

function ioError(doing: string, err: unknown): FlannelError {
  return new FlannelError('ERR_IO', `${doing}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
