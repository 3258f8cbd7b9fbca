/**
 * `--healthz-ip`/`--healthz-port` (0 disables): upstream's endpoints for the DaemonSet's probes. `/healthz` answers
 * 200 while the process serves; `/readyz` answers 200 once traffic rules are in and subnet.env is written, 503 before.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';

export interface HealthServerOptions {
  readonly host: string;
  readonly port: number;
  readonly isReady: () => boolean;
  readonly log: Logger;
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
    } else if (path === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ready = opts.isReady();
      res.writeHead(ready ? 200 : 503, { 'Content-Type': 'text/plain' }).end(ready ? 'ok\n' : 'not ready: subnet.env not written yet\n');
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  opts.log.info({ host: opts.host, port }, 'serving /healthz and /readyz');
  return {
    port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
