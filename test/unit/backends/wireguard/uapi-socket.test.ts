import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { UapiClient, uapiSocketPath } from '../../../../backends/wireguard/uapi-socket.js';
import { systemClock, type Clock } from '../../../../flanneld/runtime/clock.js';
import { ManualClock } from '../../../helpers/manual-clock.js';

const KEY = Buffer.alloc(32, 0xaa).toString('base64');
const HEX = 'aa'.repeat(32);
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface FakeDevice {
  readonly path: string;
  /** Every complete request the device read, in order. */
  readonly requests: string[];
}

/** A unix-socket server that, like wireguard-go, reads a request up to its blank line and then answers. */
async function fakeDevice(answer: (request: string, socket: Socket) => void): Promise<FakeDevice> {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-uapi-'));
  const path = uapiSocketPath('wg0', dir);
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString('utf8');
      const end = text.indexOf('\n\n');
      if (end < 0) return;
      requests.push(text.slice(0, end + 2));
      answer(text.slice(0, end + 2), socket);
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, requests };
}

const client = (path: string, clock: Clock = systemClock, maxReplyBytes?: number): UapiClient =>
  new UapiClient({ socketPath: path, clock, timeoutMs: 5_000, maxReplyBytes });

async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string; errno?: number }> {
  try {
    await promise;
  } catch (err) {
    return err as Error & { code?: string; errno?: number };
  }
  throw new Error('expected a rejection');
}

describe('UapiClient', () => {
  it('gets the device state, the reply arriving a byte at a time', async () => {
    const reply = `listen_port=51820\npublic_key=${HEX}\nallowed_ip=10.244.1.0/24\nerrno=0\n\n`;
    const device = await fakeDevice((_, socket) => {
      for (const byte of Buffer.from(reply)) socket.write(Buffer.of(byte));
    });
    const state = await client(device.path).get();
    expect(device.requests).toEqual(['get=1\n\n']);
    expect(state.listenPort).toBe(51820);
    expect(state.peers.map((peer) => peer.publicKey)).toEqual([KEY]);
  });

  it('sends the rendered set request and resolves on errno=0', async () => {
    const device = await fakeDevice((_, socket) => socket.write('errno=0\n\n'));
    await client(device.path).set({ privateKey: KEY, peers: [] });
    expect(device.requests).toEqual([`set=1\nprivate_key=${HEX}\nreplace_peers=true\n\n`]);
  });

  it('fails with ERR_DEVICE naming errno=-22', async () => {
    const device = await fakeDevice((_, socket) => socket.write('errno=-22\n\n'));
    const err = await rejection(client(device.path).set({ privateKey: KEY, peers: [] }));
    expect(err).toMatchObject({ code: 'ERR_DEVICE', errno: -22 });
    expect(err.message).toBe(`${device.path} set=1 failed with errno=-22 (EINVAL)`);
  });

  it('fails when the device closes the connection before the reply ends', async () => {
    const device = await fakeDevice((_, socket) => socket.end('listen_port=51820\n'));
    const err = await rejection(client(device.path).get());
    expect(err.code).toBe('ERR_DEVICE');
    expect(err.message).toContain('closed the connection after 18 bytes');
  });

  it('gives up at the deadline on a reply that never ends', async () => {
    const clock = new ManualClock();
    const device = await fakeDevice((_, socket) => socket.write('listen_port=51820\n'));
    const pending = rejection(client(device.path, clock).get());
    await expect.poll(() => device.requests.length).toBe(1);
    expect(clock.pending).toBe(1);
    clock.advance(4_999);
    expect(clock.pending).toBe(1);
    clock.advance(1);
    const err = await pending;
    expect(err.code).toBe('ERR_DEVICE');
    expect(err.message).toContain('no complete reply within 5000 ms');
  });

  it('cuts off a reply larger than the limit', async () => {
    const device = await fakeDevice((_, socket) => socket.write('protocol_version=1\n'.repeat(100)));
    const err = await rejection(client(device.path, systemClock, 1024).get());
    expect(err.code).toBe('ERR_DEVICE');
    expect(err.message).toContain('the reply exceeds 1024 bytes');
  });

  it('fails with ERR_DEVICE when no device listens', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flannel-uapi-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const err = await rejection(client(uapiSocketPath('wg0', dir)).get());
    expect(err.code).toBe('ERR_DEVICE');
    expect(err.message).toContain('ENOENT');
  });
});
