/** `alloc`: only holds a lease, programs no datapath (for setups where something else routes the subnets). */
import type { Backend, BackendDeps, Network } from '../backend.js';
import { baseLeaseAttrs } from '../backend.js';

export function createAllocBackend(deps: BackendDeps): Backend {
  return {
    async registerNetwork(_config, signal): Promise<Network> {
      const lease = await deps.acquireLease(baseLeaseAttrs(deps.extIface, 'alloc'), signal);
      return {
        lease,
        mtu: deps.extIface.mtu,
        run: (runSignal) =>
          new Promise<void>((resolve) => {
            if (runSignal.aborted) resolve();
            else runSignal.addEventListener('abort', () => resolve(), { once: true });
          }),
      };
    },
  };
}
