/**
 * Who reads the health port: the probes answer everyone, /metrics and /status only this host and
 * --metrics-allow-from. The policy is pure; the request listener is driven with the peer addresses a real
 * listener would report, which a unit test cannot make the kernel produce (every local client is loopback).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { parseNetList } from '../../../flanneld/config/option-specs.js';
import { formatIp, parseIp } from '../../../flanneld/ip/address.js';
import type { IpNet } from '../../../flanneld/ip/cidr.js';
import { classifyClient, describeAudience, refusalText, socketAddress } from '../../../flanneld/health/client-policy.js';
import { healthRequestListener } from '../../../flanneld/health/health-server.js';
import { DaemonStatus } from '../../../flanneld/health/daemon-status.js';
import { memoryLog, testLog } from '../../helpers/test-log.js';

const allow = (text: string): IpNet[] => parseNetList(text) ?? [];

describe('client policy for /metrics and /status', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['127.3.4.5', '127.0.0.1'],
    ['::1', '::1'],
    ['::ffff:127.0.0.1', '::ffff:127.0.0.1'],
  ])('counts loopback %s as this host', (remote, local) => {
    expect(classifyClient(remote, local, [])).toBe('this-host');
  });

  it.each([
    ['192.0.2.1', '192.0.2.1'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['2001:db8:2::1', '2001:db8:2::1'],
    ['fe80::1%eth0', 'fe80::1%eth0'],
  ])('counts %s connecting to its own address as this host', (remote, local) => {
    expect(classifyClient(remote, local, [])).toBe('this-host');
  });

  it.each([
    ['another node on the underlay', '192.0.2.2', '192.0.2.1'],
    ['a pod on this node', '10.244.1.2', '192.0.2.1'],
    ['a mapped IPv4 client of a dual-stack listener', '::ffff:192.0.2.2', '::ffff:192.0.2.1'],
    ['an IPv6 neighbour', '2001:db8:2::2', '2001:db8:2::1'],
    ['a connection whose peer is gone', undefined, '192.0.2.1'],
  ])('refuses %s by default', (_what, remote, local) => {
    expect(classifyClient(remote, local, [])).toBe('refused');
  });

  it('allows exactly the clients --metrics-allow-from lists, in either family and through mapped addresses', () => {
    const list = allow('10.244.0.0/16,192.0.2.9,2001:db8:2::/64');
    expect(classifyClient('10.244.7.3', '192.0.2.1', list)).toBe('allowed');
    expect(classifyClient('::ffff:10.244.7.3', '::ffff:192.0.2.1', list)).toBe('allowed');
    expect(classifyClient('192.0.2.9', '192.0.2.1', list)).toBe('allowed');
    expect(classifyClient('192.0.2.8', '192.0.2.1', list)).toBe('refused');
    expect(classifyClient('2001:db8:2::2', '2001:db8:2::1', list)).toBe('allowed');
    expect(classifyClient('2001:db8:3::2', '2001:db8:2::1', list)).toBe('refused');
    expect(classifyClient('203.0.113.5', '192.0.2.1', allow('0.0.0.0/0'))).toBe('allowed');
    expect(classifyClient('2001:db8:3::2', '2001:db8:2::1', allow('0.0.0.0/0'))).toBe('refused');
    expect(classifyClient('2001:db8:3::2', '2001:db8:2::1', allow('0.0.0.0/0,::/0'))).toBe('allowed');
  });

  it('parses --metrics-allow-from entries: CIDRs with host bits masked, bare addresses as one host, nothing else', () => {
    expect(allow(' 10.1.2.3/8 , 192.0.2.9,::1 ').map((n) => [formatIp({ family: n.family, value: n.ip }), n.prefixLen])).toEqual([
      ['10.0.0.0', 8], ['192.0.2.9', 32], ['::1', 128],
    ]);
    for (const bad of ['', ' , ', '10.0.0.0/33', '::/129', 'localhost', '10.0.0.0/8,x', '10.0.0.0/-1', '10.0.0.0/']) {
      expect(parseNetList(bad), bad).toBeUndefined();
    }
    // A blank between commas is dropped, as in every other FLANNELD_* list.
    expect(parseNetList('10.0.0.0/8,')).toHaveLength(1);
  });

  it('turns socket addresses into one family per client', () => {
    expect(socketAddress('::ffff:10.0.0.1')).toEqual(parseIp('10.0.0.1'));
    expect(socketAddress('fe80::1%cni0')).toEqual(parseIp('fe80::1'));
    expect(socketAddress('::ffff:0:10.0.0.1')).toEqual(parseIp('::ffff:0:10.0.0.1'));
    expect(socketAddress(undefined)).toBeUndefined();
    expect(socketAddress('')).toBeUndefined();
  });

  it('explains a refusal in one line naming the client and the option', () => {
    const body = refusalText('/metrics', '::ffff:192.0.2.2');
    expect(body).toBe('/metrics is not served to 192.0.2.2: only to this host and to clients in --metrics-allow-from (FLANNELD_METRICS_ALLOW_FROM)\n');
    expect(body.trimEnd()).not.toContain('\n');
  });

  it('describes the audience for the start-up line', () => {
    expect(describeAudience([])).toBe('this host only');
    expect(describeAudience(allow('10.244.0.0/16,192.0.2.9,::/0'))).toBe('this host and 10.244.0.0/16, 192.0.2.9, ::/0');
  });
});

interface Answer {
  code: number;
  body: string;
}

/** One request through the listener as a socket with these two ends would make it. */
function request(listener: ReturnType<typeof healthRequestListener>, path: string, remote: string, local: string, method = 'GET'): Promise<Answer> {
  return new Promise((resolve) => {
    const answer: Answer = { code: 0, body: '' };
    const req = { url: path, method, socket: { remoteAddress: remote, localAddress: local } };
    const res = {
      writeHead(code: number) {
        answer.code = code;
        return res;
      },
      end(body?: string) {
        answer.body = body ?? '';
        resolve(answer);
        return res;
      },
    };
    listener(req as unknown as IncomingMessage, res as unknown as ServerResponse);
  });
}

describe('health request listener', () => {
  const views = (allowFrom: readonly IpNet[], log = testLog()) => healthRequestListener({
    host: '0.0.0.0',
    port: 0,
    health: () => ({ ready: true, notReady: [], stalled: [] }),
    metrics: async () => ({ contentType: 'text/plain; version=0.0.4', body: 'flanneld_peers 2\n' }),
    status: () => new DaemonStatus(() => 0).report({ ready: true, notReady: [], stalled: [] }),
    metricsAllowFrom: allowFrom,
    log,
  });

  it('answers the probes to every client, as the kubelet probes from wherever it runs', async () => {
    const listener = views([]);
    for (const path of ['/healthz', '/readyz']) {
      expect(await request(listener, path, '192.0.2.2', '192.0.2.1')).toEqual({ code: 200, body: 'ok\n' });
      expect(await request(listener, path, '10.244.1.2', '192.0.2.1')).toEqual({ code: 200, body: 'ok\n' });
    }
  });

  it('refuses /metrics and /status to other clients with 403 naming the option, and serves them on this host', async () => {
    const listener = views([]);
    for (const path of ['/metrics', '/status', '/metrics?name[]=flanneld_peers']) {
      const refused = await request(listener, path, '192.0.2.2', '192.0.2.1');
      expect(refused.code).toBe(403);
      expect(refused.body).toMatch(/^\/(metrics|status) is not served to 192\.0\.2\.2: .*--metrics-allow-from \(FLANNELD_METRICS_ALLOW_FROM\)\n$/);
      expect((await request(listener, path, '192.0.2.2', '192.0.2.1', 'HEAD')).code).toBe(403);
    }
    expect(await request(listener, '/metrics', '127.0.0.1', '127.0.0.1')).toEqual({ code: 200, body: 'flanneld_peers 2\n' });
    expect(await request(listener, '/metrics', '192.0.2.1', '192.0.2.1')).toEqual({ code: 200, body: 'flanneld_peers 2\n' });
    expect((await request(listener, '/status', '::1', '::1')).code).toBe(200);
    // Unknown paths and methods say the same to everyone, so a refusal tells nothing about what else exists.
    expect(await request(listener, '/nope', '192.0.2.2', '192.0.2.1')).toEqual({ code: 404, body: 'not found\n' });
    expect((await request(listener, '/metrics', '192.0.2.2', '192.0.2.1', 'POST')).code).toBe(405);
  });

  it('serves /metrics and /status to the clients --metrics-allow-from lists', async () => {
    const listener = views(allow('192.0.2.0/24'));
    expect(await request(listener, '/metrics', '192.0.2.2', '192.0.2.1')).toEqual({ code: 200, body: 'flanneld_peers 2\n' });
    expect((await request(listener, '/status', '::ffff:192.0.2.2', '::ffff:192.0.2.1')).code).toBe(200);
    expect((await request(listener, '/metrics', '198.51.100.7', '192.0.2.1')).code).toBe(403);
  });

  it('logs a refused client once, not on every scrape', async () => {
    const { log, lines } = memoryLog();
    const listener = views([], log);
    for (let i = 0; i < 3; i++) await request(listener, '/metrics', '192.0.2.2', '192.0.2.1');
    await request(listener, '/status', '::ffff:192.0.2.2', '::ffff:192.0.2.1');
    await request(listener, '/metrics', '192.0.2.3', '192.0.2.1');
    const refusals = lines.filter((l) => l.msg.startsWith('refused '));
    expect(refusals.map((l) => l['client'])).toEqual(['192.0.2.2', '192.0.2.3']);
    expect(refusals[0]?.msg).toContain('--metrics-allow-from');
  });
});
