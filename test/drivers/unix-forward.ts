#!/usr/bin/env node
/**
 * Usage: unix-forward <listenHost> <listenPort> <unixSocketPath>
 *
 * Listens on TCP in whatever network namespace it was started in and pipes every connection to a unix socket. A
 * unix socket is a file path, so this is how a server living in the test runner (the fake kube API) becomes
 * reachable at an address inside a test namespace, with nothing added to the root namespace. Prints `listening`
 * once bound.
 */
import { createConnection, createServer, type Socket } from 'node:net';

const [host, portText, socketPath] = process.argv.slice(2);
const port = Number(portText);
if (!host || !socketPath || !Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write('usage: unix-forward <listenHost> <listenPort> <unixSocketPath>\n');
  process.exit(2);
}

const server = createServer((client: Socket) => {
  const upstream = createConnection(socketPath);
  client.pipe(upstream);
  upstream.pipe(client);
  // The upstream being unreachable should look like a dead server to the client, so it gets a reset, not a clean end.
  upstream.on('error', () => {
    if (!client.destroyed) client.resetAndDestroy();
  });
  client.on('error', () => upstream.destroy());
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
});

server.on('error', (err) => {
  process.stderr.write(`unix-forward: ${err.message}\n`);
  process.exit(1);
});
server.listen({ host, port }, () => {
  process.stdout.write('listening\n');
});
process.on('SIGTERM', () => process.exit(0));
