/**
 * A client for a userspace WireGuard device's UAPI socket: one connection per request, read until the blank line
 * that ends the reply. The device keeps the connection open for further requests, so the end of the reply is
 * found in the text, never by waiting for the close; a device that stalls or babbles is cut off by a deadline on
 * the injected clock and a cap on the reply's size.
 */
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { Clock } from '../../flanneld/runtime/clock.js';
import { FlannelError } from '../../flanneld/runtime/errors.js';
import {
  parseGetLines, renderHandshakeKick, renderPeerChanges, renderSet, replyLines, type WgCurrentPeers, type WgDeviceConfig, type WgDeviceState,
  type WgPeerConfig,
} from './uapi.js';

/** Where wireguard-go puts its sockets on Linux. */
export const UAPI_SOCKET_DIR = '/var/run/wireguard';
/** A get reply runs to a few hundred bytes per peer; 4 MiB holds thousands of peers. */
export const DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024;

export interface UapiClientOptions {
  readonly socketPath: string;
  readonly clock: Clock;
  /** From connecting to the reply's blank line. */
  readonly timeoutMs: number;
  readonly maxReplyBytes?: number | undefined;
}

export function uapiSocketPath(device: string, dir = UAPI_SOCKET_DIR): string {
  return join(dir, `${device}.sock`);
}

export class UapiClient {
  constructor(private readonly options: UapiClientOptions) {}

  async get(): Promise<WgDeviceState> {
    return parseGetLines(await this.request('get=1\n\n'));
  }

  /** See renderSet for what `current` changes. */
  async set(config: WgDeviceConfig, current?: WgCurrentPeers): Promise<void> {
    await this.request(renderSet(config, current));
  }

  /** See renderPeerChanges: removes the peers in `remove`, writes `config.peers`, leaves the rest. */
  async update(config: WgDeviceConfig, remove: readonly string[]): Promise<void> {
    await this.request(renderPeerChanges(config, remove));
  }

  /** See renderHandshakeKick: every given peer without keepalives is sent one now. */
  async kick(peers: readonly WgPeerConfig[]): Promise<void> {
    for (const text of renderHandshakeKick(peers) ?? []) await this.request(text);
  }

  /** Sends one complete request; resolves to the reply's key=value lines, errno=0 already checked. */
  async request(text: string): Promise<string[]> {
    const what = `${this.options.socketPath} ${text.slice(0, text.indexOf('\n'))}`;
    return replyLines(await exchange(this.options, text, what), what);
  }
}

/** The raw reply, up to and including the first blank line. */
function exchange(options: UapiClientOptions, request: string, what: string): Promise<string> {
  const maxBytes = options.maxReplyBytes ?? DEFAULT_MAX_REPLY_BYTES;
  return new Promise<string>((resolve, reject) => {
    const deadline = new AbortController();
    const socket = createConnection(options.socketPath);
    const decoder = new StringDecoder('utf8');
    let reply = '';
    let bytes = 0;
    let settled = false;
    const finish = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      deadline.abort();
      socket.destroy();
      if (err) reject(err);
      else resolve(reply);
    };
    const fail = (message: string, cause?: unknown): void => finish(new FlannelError('ERR_DEVICE', `${what}: ${message}`, { cause }));
    options.clock.sleep(options.timeoutMs, deadline.signal).then(
      () => fail(`no complete reply within ${options.timeoutMs} ms`),
      () => {},
    );
    socket.on('connect', () => socket.write(request));
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > maxBytes) return fail(`the reply exceeds ${maxBytes} bytes`);
      // The blank line may straddle two chunks, so the search starts one character back.
      const from = Math.max(0, reply.length - 1);
      reply += decoder.write(chunk);
      const end = reply.indexOf('\n\n', from);
      if (end < 0) return;
      reply = reply.slice(0, end + 2);
      finish(undefined);
    });
    socket.on('error', (err) => fail(err.message, err));
    socket.on('close', () => fail(`the device closed the connection after ${bytes} bytes, before the reply ended`));
  });
}
