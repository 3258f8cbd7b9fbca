import { describe, expect, it, vi } from 'vitest';
import { seededRandom } from '../../../../flanneld/runtime/random.js';
import { waitForNodeName } from '../../../../flanneld/subnet/kube/kube-subnet-manager.js';
import { ManualClock } from '../../../helpers/manual-clock.js';
import { memoryLog } from '../../../helpers/test-log.js';

const POD_ENV = { POD_NAME: 'kube-flannel-ds-x7k2p', POD_NAMESPACE: 'kube-flannel' };

describe('waitForNodeName', () => {
  it('asks again on a backoff while the API server cannot be reached, and logs each wait', async () => {
    const clock = new ManualClock();
    const { log, lines } = memoryLog();
    let calls = 0;
    const api = {
      getPodNodeName: async () => {
        calls++;
        if (calls < 3) throw new Error('connect ECONNREFUSED 192.0.2.1:6443');
        return 'worker-3';
      },
    };
    const name = waitForNodeName(POD_ENV, api, { clock, random: seededRandom(1), log }, new AbortController().signal);
    await vi.waitFor(() => expect(clock.pending).toBe(1));
    clock.advance(30_000);
    await vi.waitFor(() => expect(calls).toBe(2));
    await vi.waitFor(() => expect(clock.pending).toBe(1));
    clock.advance(30_000);
    expect(await name).toBe('worker-3');
    expect(lines.filter((l) => l.msg === 'cannot find the node name yet; retrying')).toHaveLength(2);
  });

  it('fails at once when neither NODE_NAME nor POD_NAME and POD_NAMESPACE are set', async () => {
    const clock = new ManualClock();
    const api = { getPodNodeName: async () => 'never asked' };
    await expect(waitForNodeName({}, api, { clock, random: seededRandom(1), log: memoryLog().log }, new AbortController().signal))
      .rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID' });
    expect(clock.pending).toBe(0);
  });
});
