/**
 * A failed ADD is undone with the delegate's DEL; when that fails too, the runtime still gets the ADD's error, and
 * the failed cleanup is named in its details instead of vanishing. The delegate is a small shell script.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseNetConf } from '../../../cni-plugin/netconf.js';
import { CniError, parseCniEnv } from '../../../cni-plugin/protocol.js';
import { cmdAdd } from '../../../cni-plugin/verbs/add.js';

const SUBNET_ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'flannel-ts-add-rollback-'));
  writeFileSync(join(dir, 'subnet.env'), SUBNET_ENV);
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A `bridge` in dir/bin that answers VERSION, fails ADD with code 11, and exits with `delExit` on DEL. */
function fakeBridge(delExit: number): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const path = join(bin, 'bridge');
  writeFileSync(path, [
    '#!/bin/sh',
    'case "$CNI_COMMAND" in',
    `  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}' ;;`,
    `  ADD) echo '{"cniVersion":"1.0.0","code":11,"msg":"no room on cni0"}'; exit 1 ;;`,
    `  DEL) echo 'veth busy'; exit ${delExit} ;;`,
    'esac',
    '',
  ].join('\n'));
  chmodSync(path, 0o755);
  return bin;
}

async function addWith(bin: string): Promise<CniError> {
  const env = parseCniEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'pod1', CNI_NETNS: '/var/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: bin });
  const conf = parseNetConf(JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', type: 'flannel', subnetFile: join(dir, 'subnet.env'), dataDir: join(dir, 'data') }));
  const error = await cmdAdd(env, conf).then(() => undefined, (err: unknown) => err);
  if (!(error instanceof CniError)) throw new Error(`expected a CniError, got ${String(error)}`);
  return error;
}

describe('ADD that fails in the delegate', () => {
  it('is rolled back: the error is the delegate\'s and the saved config is gone', async () => {
    const error = await addWith(fakeBridge(0));
    expect(error).toMatchObject({ code: 11, message: 'failed to delegate add: no room on cni0', details: '' });
    expect(existsSync(join(dir, 'data', 'pod1'))).toBe(false);
  });

  it('names a rollback that failed too in the details, keeping the ADD\'s code and message', async () => {
    const error = await addWith(fakeBridge(3));
    expect(error.code).toBe(11);
    expect(error.message).toBe('failed to delegate add: no room on cni0');
    expect(error.details).toMatch(/^cleanup after the failed ADD also failed: .*bridge exited with 3: veth busy$/);
    // The saved config stays, so the runtime's DEL can still undo exactly this ADD.
    expect(existsSync(join(dir, 'data', 'pod1'))).toBe(true);
  });
});
