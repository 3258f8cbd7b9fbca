/**
 * The TCP side of a BGP session: a connection to the peer's port 179 from the node's own address (routers match
 * neighbours by source address, and the next hop we announce is that address).
 */
import { createConnection, type Socket } from 'node:net';
import { formatIp } from '../ip/address.js';
import { FlannelError } from '../runtime/errors.js';
import type { BgpTransport } from './bgp-connection.js';
import type { BgpConnector } from './bgp-session.js';
import { BGP_PORT } from './bgp-wire.js';

const CONNECT_TIMEOUT_MS = 10_000;
/** After end(), how long the peer gets to take our last bytes before the socket is destroyed. */
const CLOSE_LINGER_MS = 1000;

/** Connects from `local`, the node's address of the peer's family, when it has one. */
export function tcpConnector(): BgpConnector {
  return (peer, local, signal) =>
    new Promise<BgpTransport>((resolve, reject) => {
      const socket = createConnection({
        host: formatIp(peer.address),
        port: BGP_PORT,
        ...(local ? { localAddress: formatIp(local) } : {}),
        timeout: CONNECT_TIMEOUT_MS,
      });
      const fail = (why: string): void => {
        socket.destroy();
        signal.removeEventListener('abort', onAbort);
        reject(new FlannelError('ERR_BGP_PEER', `BGP peer ${formatIp(peer.address)}:${BGP_PORT}: ${why}`));
      };
      const onAbort = (): void => fail('stopped');
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('timeout', () => fail(`no connection within ${CONNECT_TIMEOUT_MS / 1000} s`));
      socket.once('error', (err) => fail(err.message));
      socket.once('connect', () => {
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
