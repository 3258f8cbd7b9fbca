import { describe, expect, it } from 'vitest';
import { greetingOrder, stillUngreeted } from '../../../../backends/wireguard/wg-greeting.js';
import type { WgPeerConfig, WgPeerState } from '../../../../backends/wireguard/uapi.js';

const peer = (publicKey: string): WgPeerConfig => ({ publicKey, allowedIps: [] });
const state = (publicKey: string, lastHandshakeMs?: number): WgPeerState =>
  ({ publicKey, presharedKey: undefined, endpoint: undefined, persistentKeepalive: 0, allowedIps: [], lastHandshakeMs, rxBytes: 0, txBytes: 0 });

describe('which side greets first', () => {
  it('gives every pair exactly one side that greets at once', () => {
    const keys = ['Mkey=', 'Akey=', 'zkey=', '+key='];
    for (const a of keys) {
      for (const b of keys.filter((k) => k !== a)) {
        const fromA = greetingOrder(a, [peer(b)]).now.length;
        const fromB = greetingOrder(b, [peer(a)]).now.length;
        expect(fromA + fromB, `${a} and ${b}`).toBe(1);
      }
    }
  });

  it('greets later only peers still wanted and without a handshake, in their current form', () => {
    const waiting = [peer('a'), peer('b'), peer('c')];
    const wanted = [{ ...peer('a'), persistentKeepalive: 25 }, peer('b')];
    expect(stillUngreeted(waiting, wanted, [state('b', 1000), state('a')])).toEqual([wanted[0]]);
  });
});
