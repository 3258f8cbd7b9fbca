import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { listScratch, loadScratch, removeScratch, saveScratch } from '../../../cni-plugin/scratch-store.js';

describe('the saved delegate configs (flannel dataDir)', () => {
  let dir: string | undefined;
  afterEach(() => dir && rmSync(dir, { recursive: true, force: true }));

  it('saves a config with its interface name, lists and removes both', async () => {
    dir = mkdtempSync(join(tmpdir(), 'scratch-'));
    await saveScratch(dir, 'c1', 'net1', '{"type":"bridge"}');
    expect(await loadScratch(dir, 'c1')).toBe('{"type":"bridge"}');
    expect(await listScratch(dir)).toEqual([{ containerId: 'c1', ifname: 'net1' }]);
    await removeScratch(dir, 'c1');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('reads a config of upstream\'s (no sidecar) as eth0', async () => {
    dir = mkdtempSync(join(tmpdir(), 'scratch-'));
    writeFileSync(join(dir, 'up1'), '{"type":"bridge"}');
    expect(await listScratch(dir)).toEqual([{ containerId: 'up1', ifname: 'eth0' }]);
  });

  it('sweeps sidecars whose config upstream\'s plugin removed, and keeps the others', async () => {
    dir = mkdtempSync(join(tmpdir(), 'scratch-'));
    await saveScratch(dir, 'kept', 'eth0', '{}');
    await saveScratch(dir, 'gone', 'eth0', '{}');
    rmSync(join(dir, 'gone'));
    await saveScratch(dir, 'c2', 'eth0', '{}');
    await removeScratch(dir, 'c2');
    expect(readdirSync(dir).sort()).toEqual(['kept', 'kept.ifname']);
  });
});
