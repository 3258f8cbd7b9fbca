/**
 * The TCP side of a BGP session: a connection to the peer's port 179 from the node's own address (routers match
 * neighbours by source address, and the next hop we announce is that address), signed with TCP-MD5 when the router
 * has a password and sent with the multihop TTL when it is further than one hop. Both must be set before the SYN,
 * which Node cannot do, so the socket comes from our addon (native/tcp/flannel_tcp.c) and Node connects it.
 */
import { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ipBytes } from '../ip/address-bytes.js';
import { formatIp, type IpAddress } from '../ip/address.js';
import { FlannelError } from '../runtime/errors.js';
import { lazyAddon } from '../runtime/native-addon.js';
import type { BgpTransport } from './bgp-connection.js';
import type { BgpConnector, BgpPeer } from './bgp-session.js';
import { BGP_PORT } from './bgp-wire.js';

const CONNECT_TIMEOUT_MS = 10_000;
/** After end(), how long the peer gets to take our last bytes before the socket is destroyed. */
const CLOSE_LINGER_MS = 1000;

interface TcpAddon {
  open(family: 4 | 6, local: Buffer | null, peer: Buffer, md5Key: Buffer | null, ttl: number): number;
  close(fd: number): void;
}

// dist/flanneld/bgp/ in the build, flanneld/bgp/ under vitest: the addon is built into dist/native/ either way.
const ADDON_CANDIDATES = ['../../native/flannel_tcp.node', '../../dist/native/flannel_tcp.node'].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
const loadAddon = lazyAddon<TcpAddon>(ADDON_CANDIDATES, 'the BGP TCP socket addon flannel_tcp.node');

/** A socket for `peer`, bound to `local`, with its MD5 key and TTL set; the kernel's refusal is named. */
function openBgpSocket(peer: BgpPeer, local: IpAddress | undefined): Socket {
  const key = peer.password === undefined ? null : Buffer.from(peer.password, 'utf8');
  let fd: number;
  try {
    fd = loadAddon().open(peer.address.family, local ? ipBytes(local) : null, ipBytes(peer.address), key, peer.multihopTtl ?? 0);
  } catch (err) {
    const what = (err as Error).message;
    const hint = what.startsWith('TCP_MD5SIG') ? ' (this kernel cannot sign with TCP-MD5: the password cannot be used)' : '';
    throw new FlannelError('ERR_BGP_PEER', `BGP peer ${formatIp(peer.address)}: cannot prepare the socket: ${what}${hint}`);
  }
  try {
    return new Socket({ fd });
  } catch (err) {
    loadAddon().close(fd);
    throw err;
  }
}

export function tcpConnector(): BgpConnector {
  return (peer, local, signal) =>
    new Promise<BgpTransport>((resolve, reject) => {
      const socket = openBgpSocket(peer, local);
      const fail = (why: string): void => {
        socket.destroy();
        signal.removeEventListener('abort', onAbort);
        reject(new FlannelError('ERR_BGP_PEER', `BGP peer ${formatIp(peer.address)}:${BGP_PORT}: ${why}`));
      };
      const onAbort = (): void => fail('stopped');
      signal.addEventListener('abort', onAbort, { once: true });
      // A router without the same password drops signed segments without a word: the only symptom is silence.
      const silence = peer.password === undefined ? '' : ' (the SYN was signed with TCP-MD5: does the router have the same password?)';
      socket.setTimeout(CONNECT_TIMEOUT_MS);
      socket.once('timeout', () => fail(`no connection within ${CONNECT_TIMEOUT_MS / 1000} s${silence}`));
      socket.once('error', (err) => fail(err.message));
      socket.connect({ host: formatIp(peer.address), port: BGP_PORT }, () => {
        signal.removeEventListener('abort', onAbort);
        socket.removeAllListeners('timeout');
        socket.removeAllListeners('error');
        socket.setTimeout(0);
        socket.setNoDelay(true);
        resolve(socketTransport(socket));
      });
    });
}

function socketTransport(socket: Socket): BgpTransport {
  return {
    write: (bytes) => void socket.write(bytes),
    onData: (listener) => void socket.on('data', listener),
    onClose(listener) {
      let error: Error | undefined;
      socket.on('error', (err) => (error = err));
      socket.once('close', () => listener(error));
    },
    close() {
      socket.end();
      setTimeout(() => socket.destroy(), CLOSE_LINGER_MS).unref();
    },
  };
}
