import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  decodeWgKey,
  DEFAULT_KEY_FILE,
  keyFilePath,
  loadOrCreateKey,
  wgPublicKey,
  type KeyFileSystem,
} from '../../../../backends/wireguard/wg-key.js';
import { FlannelError } from '../../../../flanneld/runtime/errors.js';
import { thrownConfigError } from '../../../helpers/thrown-config-error.js';

// RFC 7748 section 6.1, Alice's key pair.
const RFC_PRIVATE = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
const RFC_PUBLIC = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex');

let dir: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(join(tmpdir(), 'flannel-ts-wg-key-'));
});

afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function mode(path: string): Promise<number> {
  return (await fs.stat(path)).mode & 0o777;
}

describe('wgPublicKey', () => {
  it('derives the RFC 7748 public key from its private key', () => {
    expect(wgPublicKey(RFC_PRIVATE).toString('hex')).toBe(RFC_PUBLIC.toString('hex'));
  });
});

describe('decodeWgKey', () => {
  const text = RFC_PRIVATE.toString('base64');

  it('reads standard base64 of 32 bytes, skipping CR and LF as Go does', () => {
    expect(decodeWgKey(text)).toEqual(RFC_PRIVATE);
    expect(decodeWgKey(`${text}\r\n`)).toEqual(RFC_PRIVATE);
    expect(decodeWgKey(`${text.slice(0, 20)}\n${text.slice(20)}`)).toEqual(RFC_PRIVATE);
  });

  it.each([
    ['empty', ''],
    ['31 bytes', Buffer.alloc(31).toString('base64')],
    ['33 bytes', Buffer.alloc(33).toString('base64')],
    ['no padding', text.slice(0, -1)],
    ['url alphabet', Buffer.alloc(32, 0xff).toString('base64url')],
    ['a space', ` ${text}`],
    ['a stray character', `${text.slice(0, 10)}*${text.slice(11)}`],
  ])('refuses %s', (_label, bad) => {
    expect(decodeWgKey(bad)).toBeUndefined();
  });
});

describe('keyFilePath', () => {
  it('takes WIREGUARD_KEY_FILE, else /run/flannel/wgkey', () => {
    expect(keyFilePath({})).toBe(DEFAULT_KEY_FILE);
    expect(DEFAULT_KEY_FILE).toBe('/run/flannel/wgkey');
    expect(keyFilePath({ WIREGUARD_KEY_FILE: '/etc/wg/key' })).toBe('/etc/wg/key');
  });

  it('refuses an empty WIREGUARD_KEY_FILE', () => {
    expect(thrownConfigError(() => keyFilePath({ WIREGUARD_KEY_FILE: '' })).key).toBe('WIREGUARD_KEY_FILE');
  });
});

describe('loadOrCreateKey', () => {
  it('reads an existing key file and derives its public key', async () => {
    const path = join(dir, 'wgkey');
    await fs.writeFile(path, `${RFC_PRIVATE.toString('base64')}\n`);
    expect(await loadOrCreateKey(path)).toEqual({
      privateKey: RFC_PRIVATE.toString('base64'),
      publicKey: RFC_PUBLIC.toString('base64'),
    });
  });

  it('creates a missing key as 0400 in new 0755 directories, whatever the umask', async () => {
    const path = join(dir, 'run', 'flannel', 'wgkey');
    const before = process.umask(0o077);
    let pair: Awaited<ReturnType<typeof loadOrCreateKey>>;
    try {
      pair = await loadOrCreateKey(path);
    } finally {
      process.umask(before);
    }
    expect(await fs.readFile(path, 'utf8')).toBe(`${pair.privateKey}\n`);
    expect(await mode(path)).toBe(0o400);
    expect(await mode(join(dir, 'run', 'flannel'))).toBe(0o755);
    expect(await mode(join(dir, 'run'))).toBe(0o755);
    expect(await fs.readdir(join(dir, 'run', 'flannel'))).toEqual(['wgkey']);
    const key = decodeWgKey(pair.privateKey);
    expect(key).toBeDefined();
    expect(pair.publicKey).toBe(wgPublicKey(key as Buffer).toString('base64'));
    expect(await loadOrCreateKey(path)).toEqual(pair);
  });

  it('leaves the mode of a directory that already exists alone', async () => {
    await fs.chmod(dir, 0o700);
    await loadOrCreateKey(join(dir, 'wgkey'));
    expect(await mode(dir)).toBe(0o700);
  });

  it('gives two concurrent first starts the same key', async () => {
    const path = join(dir, 'wgkey');
    const [a, b] = await Promise.all([loadOrCreateKey(path), loadOrCreateKey(path)]);
    expect(a).toEqual(b);
    expect(await fs.readdir(dir)).toEqual(['wgkey']);
  });

  it.each([
    ['empty', ''],
    ['a 31-byte key', Buffer.alloc(31, 7).toString('base64')],
    ['a hex key', RFC_PRIVATE.toString('hex')],
  ])('refuses a file holding %s, naming the file and not its content', async (_label, content) => {
    const path = join(dir, 'wgkey');
    await fs.writeFile(path, content);
    const err = await loadOrCreateKey(path).catch((e: unknown) => e);
    const configError = thrownConfigError(() => {
      throw err;
    });
    expect(configError.message).toContain(path);
    if (content !== '') expect(configError.message).not.toContain(content);
    expect(configError.message).toContain(`${content.length} bytes, not shown`);
  });

  it('reports a file it cannot read as an I/O error', async () => {
    const failing: KeyFileSystem = {
      ...fs,
      readFile: () => Promise.reject(Object.assign(new Error('permission denied'), { code: 'EACCES' })),
    };
    const err = await loadOrCreateKey(join(dir, 'wgkey'), failing).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FlannelError);
    expect((err as FlannelError).code).toBe('ERR_IO');
    expect((err as FlannelError).message).toContain(join(dir, 'wgkey'));
  });

  it('removes its temporary file when the key cannot be linked into place', async () => {
    const failing: KeyFileSystem = {
      ...fs,
      link: () => Promise.reject(Object.assign(new Error('read-only file system'), { code: 'EROFS' })),
    };
    const err = await loadOrCreateKey(join(dir, 'wgkey'), failing).catch((e: unknown) => e);
    expect((err as FlannelError).code).toBe('ERR_IO');
    expect(await fs.readdir(dir)).toEqual([]);
  });
});
