// Compiles flanneld's N-API addons (native/udp: the udp backend's data path; native/netlink: the rtnetlink
// sockets) with the C compiler Debian provides, against the headers of the node that runs this script. N-API needs
// no linking against node, so one `cc` call per addon is the whole build.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

const headers = [process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include/node'), join(dirname(process.execPath), '../include/node')]
  .filter(Boolean)
  .find((dir) => existsSync(join(dir, 'node_api.h')));
if (!headers) {
  process.stderr.write(`build-native: node_api.h not found next to ${process.execPath} (install the nodejs headers)\n`);
  process.exit(1);
}
const addons = [
  { name: 'flannel_udp', source: 'native/udp/flannel_udp.c' },
  { name: 'flannel_netlink', source: 'native/netlink/flannel_netlink.c' },
  { name: 'flannel_tcp', source: 'native/tcp/flannel_tcp.c' },
];
// Warnings fail the build only in CI (CI set, as .ci/run's environment has it): a newer compiler's new warning must
// not break a developer's or an image's `npm run build`, and it is still printed there.
const ci = process.env.CI;
const warningsAreErrors = ci !== undefined && ci !== '' && ci !== 'false' && ci !== '0';
mkdirSync('dist/native', { recursive: true });
for (const { name, source } of addons) {
  const out = `dist/native/${name}.node`;
  const started = Date.now();
  execFileSync(process.env.CC ?? 'cc', [
    '-O2', '-g', '-std=gnu11', '-Wall', '-Wextra', ...(warningsAreErrors ? ['-Werror'] : []), '-fPIC', '-shared', '-pthread',
    `-DNODE_GYP_MODULE_NAME=${name}`, '-DNAPI_VERSION=8', `-I${headers}`,
    '-o', out, source,
  ], { stdio: 'inherit' });
  process.stdout.write(`build-native: ${out} (${Date.now() - started} ms)\n`);
}
