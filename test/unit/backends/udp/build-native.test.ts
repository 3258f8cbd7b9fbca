import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../../../scripts/build-native.mjs', import.meta.url));
const dirs: string[] = [];

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Runs the build with a stand-in compiler that records its arguments; returns each call's arguments. */
function compilerCalls(ci: string | undefined): string[][] {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-build-native-'));
  dirs.push(dir);
  const log = join(dir, 'cc.log');
  const cc = join(dir, 'cc');
  writeFileSync(cc, `#!/bin/sh\necho "$*" >> '${log}'\n`);
  chmodSync(cc, 0o755);
  const env: NodeJS.ProcessEnv = { ...process.env, CC: cc };
  delete env['CI'];
  if (ci !== undefined) env['CI'] = ci;
  execFileSync(process.execPath, [SCRIPT], { cwd: dir, env, stdio: 'pipe' });
  return readFileSync(log, 'utf8').trim().split('\n').map((line) => line.split(' '));
}

describe('build-native', () => {
  it('turns warnings into errors in CI', () => {
    const calls = compilerCalls('true');
    expect(calls).toHaveLength(3); // udp, netlink, tcp
    for (const args of calls) expect(args).toEqual(expect.arrayContaining(['-Wall', '-Wextra', '-Werror']));
  });

  it.each([undefined, '', 'false'])('keeps warnings warnings with CI=%j, so a newer compiler cannot break the build', (ci) => {
    for (const args of compilerCalls(ci)) {
      expect(args).toEqual(expect.arrayContaining(['-Wall', '-Wextra']));
      expect(args).not.toContain('-Werror');
    }
  });
});
