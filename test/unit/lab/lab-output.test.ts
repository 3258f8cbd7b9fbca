import { describe, expect, it } from 'vitest';
import type { MatrixResult } from '../../../lab/lab-matrix.js';
import { readableLogLine } from '../../../lab/lab-processes.js';
import { leasesTable, markdownTable, matrixTable, podsTable } from '../../../lab/lab-report.js';
import type { PodRecord } from '../../../lab/lab-state.js';
import { createProgress } from '../../../lab/progress.js';

const pod = (host: string, i: number): PodRecord => ({ name: `${host}-p${i}`, host, netns: `ftl-x-${host}-p${i}`, ip: `10.244.${host.slice(1)}.${i + 1}` });

function allOk(pods: readonly PodRecord[], failing: ReadonlySet<string> = new Set()): MatrixResult {
  const reachable = new Map<string, boolean>();
  for (const a of pods) for (const b of pods) if (a !== b) reachable.set(`${a.name}>${b.name}`, !failing.has(`${a.name}>${b.name}`));
  return { family: 4, reachable, failures: failing.size };
}

describe('lab output', () => {
  it('renders markdown tables', () => {
    expect(markdownTable(['a', 'b'], [['1', '2']])).toBe('| a | b |\n| --- | --- |\n| 1 | 2 |');
  });

  it('shows a pod-by-pod matrix with FAIL cells', () => {
    const pods = [pod('h1', 1), pod('h2', 1)];
    const table = matrixTable(pods, allOk(pods, new Set(['h2-p1>h1-p1'])));
    expect(table.split('\n')).toEqual([
      '| from \\ to | h1-p1 10.244.1.2 | h2-p1 10.244.2.2 |',
      '| --- | --- | --- |',
      '| h1-p1 | — | ok |',
      '| h2-p1 | FAIL | — |',
    ]);
  });

  it('shows the IPv6 matrix with IPv6 addresses and its family in the corner, leaving out pods without one', () => {
    const pods = [{ ...pod('h1', 1), ip6: '2001:db8:a:1::2' }, { ...pod('h2', 1), ip6: '2001:db8:a:2::2' }, pod('h3', 1)];
    const reachable = new Map([['h1-p1>h2-p1', true], ['h2-p1>h1-p1', false]]);
    expect(matrixTable(pods, { family: 6, reachable, failures: 1 }, pods, true).split('\n')).toEqual([
      '| IPv6: from \\ to | h1-p1 2001:db8:a:1::2 | h2-p1 2001:db8:a:2::2 | h3-p1 - |',
      '| --- | --- | --- | --- |',
      '| h1-p1 | — | ok | — |',
      '| h2-p1 | FAIL | — | — |',
      '| h3-p1 | — | — | — |',
    ]);
  });

  it('lists pods with one address column, or one per family in a dual-stack lab', () => {
    const dual = { ...pod('h1', 1), ip6: '2001:db8:a:1::2' };
    expect(podsTable([dual], [4, 6]).split('\n')).toEqual([
      '| pod | host | IPv4 address | IPv6 address | namespace |', '| --- | --- | --- | --- | --- |', '| h1-p1 | h1 | 10.244.1.2 | 2001:db8:a:1::2 | ftl-x-h1-p1 |',
    ]);
    const v6 = { ...dual, ip: '2001:db8:a:1::2' };
    expect(podsTable([v6], [6]).split('\n')[2]).toBe('| h1-p1 | h1 | 2001:db8:a:1::2 | ftl-x-h1-p1 |');
  });

  it('summarises by host pair once the lab has more than 12 pods', () => {
    const pods = ['h1', 'h2', 'h3', 'h4', 'h5'].flatMap((h) => [pod(h, 1), pod(h, 2), pod(h, 3)]);
    const lines = matrixTable(pods, allOk(pods, new Set(['h1-p1>h2-p3']))).split('\n');
    expect(lines[0]).toBe('| pods on \\ pods on | h1 | h2 | h3 | h4 | h5 |');
    expect(lines[2]).toBe('| h1 | ok 6/6 | FAIL 8/9 | ok 9/9 | ok 9/9 | ok 9/9 |');
  });

  it('reads leases the way etcd stores them', () => {
    const value = '{"PublicIP":"192.0.2.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"66:8e:c3:af:5e:32"}}';
    const table = leasesTable([{ key: '/coreos.com/network/subnets/10.244.33.0-24', value, ttl: 86_390 }]);
    expect(table.split('\n')[2]).toBe('| 10.244.33.0/24 | 192.0.2.3 | vxlan | 66:8e:c3:af:5e:32 | 24 h |');
  });

  it('reads dual-stack and IPv6-only leases, leaving out the no-IPv4 placeholder', () => {
    const dual = '{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8:2::1","BackendType":"vxlan","BackendData":{"VtepMAC":"22:05:ac:91:07:f7"},"BackendV6Data":{"VtepMAC":"06:82:f7:27:c6:06"}}';
    const v6 = '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:2::3","BackendType":"host-gw","BackendData":null}';
    const rows = leasesTable([
      { key: '/coreos.com/network/subnets/10.244.24.0-24&2001:db8:a:28::-64', value: dual, ttl: 86_390 },
      { key: '/coreos.com/network/subnets/0.0.0.0-0&2001:db8:a:1c::-64', value: v6 },
    ]).split('\n');
    expect(rows[2]).toBe('| 10.244.24.0/24, 2001:db8:a:28::/64 | 192.0.2.1, 2001:db8:2::1 | vxlan | 22:05:ac:91:07:f7, 06:82:f7:27:c6:06 | 24 h |');
    expect(rows[3]).toBe('| 2001:db8:a:1c::/64 | 2001:db8:2::3 | host-gw | - | - |');
  });

  it('makes a daemon log line readable', () => {
    const line = '{"level":50,"time":"2026-11-23T22:17:43.957Z","component":"daemon","err":{"message":"Backend.Type: unknown"},"msg":"fatal"}';
    expect(readableLogLine(line)).toBe('2026-11-23T22:17:43.957Z ERROR [daemon] fatal: Backend.Type: unknown');
    expect(readableLogLine('plain text')).toBe('plain text');
  });

  it('prints one plain line per step off a terminal, with its time', async () => {
    let written = '';
    let t = 1000;
    const progress = createProgress({ write: (s: string) => (written += s) }, () => t);
    await progress.step('etcd', async () => {
      t += 250;
      return 3;
    }, (n) => `${n} members`);
    await expect(progress.step('hosts', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(written).toBe('• etcd … done, 3 members (250 ms)\n• hosts … failed (0 ms)\n');
  });

  it('redraws one spinner line on a terminal', async () => {
    let written = '';
    const progress = createProgress({ write: (s: string) => (written += s), isTTY: true }, () => 0);
    await progress.step('etcd', async () => undefined);
    expect(written).toBe('\r\x1b[K⠋ etcd … 0.0 s\r\x1b[K✔ etcd … done (0 ms)\n');
  });
});
