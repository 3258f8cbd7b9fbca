/**
 * `--healthz-ip`/`--healthz-port` (0 disables): the endpoints of the DaemonSet's probes and of monitoring.
 * `/healthz`: 200 while every loop makes progress, 503 naming the loop that stalled. `/readyz`: 200 once traffic
 * rules are in and subnet.env is written (upstream's meaning), 503 with the reason before that and whenever the
 * lease is lost or the datapath cannot be programmed. `/metrics`: Prometheus text. `/status`: JSON for
 * `flanneld status`. The probes answer every client; /metrics and /status only this host and
 * --metrics-allow-from, the others get a 403 naming that option (client-policy.ts says why).
 */
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { formatIp } from '../ip/address.js';
import type { IpNet } from '../ip/cidr.js';
import { RESTRICTED_PATHS, classifyClient, describeAudience, refusalText, socketAddress } from './client-policy.js';
import type { StatusReport } from './daemon-status.js';

export interface HealthView {
  readonly ready: boolean;
  readonly notReady: readonly string[];
  readonly stalled: readonly string[];
}

export interface HealthServerOptions {
  readonly host: string;
  readonly port: number;
  readonly health: () => HealthView;
  readonly metrics?: () => Promise<{ readonly contentType: string; readonly body: string }>;
  readonly status?: () => StatusReport;
  /** --metrics-allow-from: clients besides this host that may read /metrics and /status (default none). */
  readonly metricsAllowFrom?: readonly IpNet[];
  readonly log: Logger;
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

function text(res: ServerResponse, code: number, body: string): void {
  res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8' }).end(body);
}

/** Distinct refused clients logged; beyond this a scan or a misconfigured scraper fleet is not logged further. */
const REFUSALS_LOGGED = 100;

/** The request handler on its own, so the policy can be exercised with any peer address a test needs. */
export function healthRequestListener(opts: HealthServerOptions): RequestListener {
  const allowFrom = opts.metricsAllowFrom ?? [];
  const refusedClients = new Set<string>();
  // A scraper refused every 15 s would otherwise write the same line forever: once per client is enough to act on.
  const noteRefusal = (req: IncomingMessage, path: string): void => {
    const client = socketAddress(req.socket.remoteAddress);
    const key = client ? `${client.family}:${client.value}` : '?';
    if (refusedClients.has(key) || refusedClients.size >= REFUSALS_LOGGED) return;
    refusedClients.add(key);
    opts.log.warn(
      { path, client: client ? formatIp(client) : req.socket.remoteAddress },
      `refused ${path} to a client that is neither this host nor in --metrics-allow-from (logged once per client)`,
    );
  };
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (RESTRICTED_PATHS.includes(path) && classifyClient(req.socket.remoteAddress, req.socket.localAddress, allowFrom) === 'refused') {
      noteRefusal(req, path);
      text(res, 403, refusalText(path, req.socket.remoteAddress));
      return;
    }
    if (path === '/healthz') {
      const { stalled } = opts.health();
      text(res, stalled.length === 0 ? 200 : 503, stalled.length === 0 ? 'ok\n' : `${stalled.join('\n')}\n`);
    } else if (path === '/readyz') {
      const { ready, notReady } = opts.health();
      text(res, ready ? 200 : 503, ready ? 'ok\n' : `not ready: ${notReady.join('; ')}\n`);
    } else if (path === '/metrics' && opts.metrics) {
      opts.metrics().then(
        (m) => res.writeHead(200, { 'Content-Type': m.contentType }).end(m.body),
        (err: unknown) => text(res, 500, `cannot collect metrics: ${String(err)}\n`),
      );
    } else if (path === '/status' && opts.status) {
      // A view that cannot be rendered is a 500 for this request, never an exception that ends the daemon.
      let body: string;
      try {
        body = JSON.stringify(opts.status());
      } catch (err) {
        text(res, 500, `cannot render status: ${String(err)}\n`);
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
    } else {
      text(res, 404, 'not found\n');
    }
  };
}

/**
 * Where to listen for `--healthz-ip`. Upstream (Go's net.Listen) takes 0.0.0.0 as every address of both families,
 * one dual-stack socket, so the kubelet of an IPv6-only node can probe it; Node binds 0.0.0.0 to IPv4 alone. So
 * 0.0.0.0 listens on :: (dual-stack: IPv4 clients arrive as ::ffff:a.b.c.d), and on 0.0.0.0 where the kernel has no
 * IPv6.
 */
export const listenHosts = (host: string): string[] => (host === '0.0.0.0' ? ['::', '0.0.0.0'] : [host]);

const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL']);

function listenOn(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, ipv6Only: false }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const server: Server = createServer(healthRequestListener(opts));
  const [first, fallback] = listenHosts(opts.host);
  await listenOn(server, opts.port, first as string).catch((err: NodeJS.ErrnoException) => {
    if (fallback === undefined || !NO_IPV6.has(err.code ?? '')) throw err;
    return listenOn(server, opts.port, fallback);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  opts.log.info(
    { host: opts.host, port },
    `serving /healthz and /readyz to every client, /metrics and /status to ${describeAudience(opts.metricsAllowFrom ?? [])}`,
  );
  return {
    port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
