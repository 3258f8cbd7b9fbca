/**
 * Vitest hooks for files that start a fresh cluster in each test: leftovers of crashed runs are swept before the
 * first, and each test's daemons, etcd and namespaces are removed after it, also when it failed half-way.
 */
import { afterEach, beforeAll } from 'vitest';
import { startCluster, type Cluster, type ClusterOptions } from './cluster.js';
import { NetnsRun, removeStaleNamespaces } from './netns.js';
import { killStaleTrackedProcesses } from './processes.js';

/** Registers the hooks; the returned function starts this test's cluster in namespaces tagged `tag`. */
export function clusterPerTest(): (tag: string, opts: ClusterOptions) => Promise<Cluster> {
  let cluster: Cluster | undefined;
  let run: NetnsRun | undefined;
  beforeAll(async () => {
    killStaleTrackedProcesses();
    await removeStaleNamespaces();
  });
  afterEach(async () => {
    await cluster?.stop();
    cluster = undefined;
    await run?.cleanup();
    run = undefined;
  });
  return async (tag, opts) => {
    run = new NetnsRun(tag);
    cluster = await startCluster(run, opts);
    return cluster;
  };
}
