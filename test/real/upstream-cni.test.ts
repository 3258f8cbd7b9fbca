/**
 * Our `flannel` CNI plugin and upstream's on one node, as a node changing DaemonSet meets them: a pod added by one
 * plugin is deleted by the other, both ways, and nothing is left (host-local reservation, the saved delegate config,
 * the pod's veth). Upstream's plugin is its last release inside containernetworking/plugins (v0.9.1,
 * plugins/meta/flannel, built by tools/build.sh cni-flannel): its own module, github.com/flannel-io/cni-plugin, is
 * refused by the module proxy at every version. The node is driven as a runtime drives it (test/helpers/cni-runtime.ts).
 */
import { renameSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CniNode, SEA_FORM, upstreamForm, type CniOutcome, type NodeForm } from '../helpers/cni-runtime.js';
import { NetnsRun, removeStaleNamespaces } from '../helpers/netns.js';
import { killStaleTrackedProcesses } from '../helpers/processes.js';

const run = new NetnsRun('uc');
const nodes: CniNode[] = [];

beforeAll(async () => {
  killStaleTrackedProcesses();
  await removeStaleNamespaces();
});

afterAll(async () => {
  for (const node of nodes.splice(0)) await node.cleanup();
  await run.cleanup();
});

const UPSTREAM = upstreamForm();

/** Points the node's `flannel` at another plugin, as an init container copying a new one over it does. */
function install(node: CniNode, form: NodeForm): void {
  const link = join(node.binDir, 'flannel');
  symlinkSync(form.executable, `${link}.new`);
  renameSync(`${link}.new`, link);
}

/** Saved attachments in flannel's dataDir; dot files are our plugin's cache of the delegate's CNI versions. */
const saved = (node: CniNode): string[] => node.savedConfigs().filter((f) => !f.startsWith('.'));

function ok(outcome: CniOutcome, what: string): void {
  expect(outcome.code, `${what}: exit ${outcome.code}, stdout ${outcome.stdout}, stderr ${outcome.stderr}`).toBe(0);
}

describe.each([
  { name: 'added by upstream\'s plugin, deleted by ours', first: UPSTREAM, second: SEA_FORM },
  { name: 'added by ours, deleted by upstream\'s plugin', first: SEA_FORM, second: UPSTREAM },
])('a pod $name', ({ first, second }) => {
  it('is deleted cleanly: no reservation, no saved config, no veth left', async () => {
    const node = await CniNode.create(run, { name: `n${nodes.length + 1}`, form: first });
    nodes.push(node);
    const pod = await node.pod(`p${nodes.length}`);
    const added = await node.add(pod);
    ok(added, 'ADD');
    expect(node.reservations()).toHaveLength(1);
    expect(saved(node)).toContain(pod.containerId);
    install(node, second);
    ok(await node.del(pod), 'DEL');
    expect(node.reservations()).toEqual([]);
    expect(await node.host.ip('-o', 'link', 'show', 'type', 'veth')).toBe('');
    // A second DEL, as runtimes send, is still a success.
    ok(await node.del(pod), 'second DEL');
    if (second === UPSTREAM) {
      // Upstream's plugin removes the saved config it knows; our interface-name sidecar waits for our next DEL.
      expect(saved(node)).toEqual([`${pod.containerId}.ifname`]);
      install(node, SEA_FORM);
      const other = await node.pod(`q${nodes.length}`);
      ok(await node.add(other), 'ADD after moving back');
      ok(await node.del(other), 'DEL after moving back');
    }
    expect(saved(node)).toEqual([]);
  });
});
