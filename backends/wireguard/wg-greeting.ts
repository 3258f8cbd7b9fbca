/**
 * Which side of a pair of WireGuard peers starts the first handshake. Greeting a peer as soon as it is known makes
 * the tunnel at once, but two nodes that learn of each other in the same moment (a cluster starting, a lease
 * event reaching both) greet each other at the same time, and simultaneous initiations cancel out in WireGuard:
 * each side consumes the other's initiation as responder, which discards its own, so both responses are refused
 * and nothing moves until a retry after REKEY_TIMEOUT (5 s; seen as a 2 s ping matrix failing with each side's
 * counters at one initiation and one response sent, one initiation received, no handshake). So the side with the
 * lower public key greets at once, and the other only if no handshake has happened a moment later, which still
 * covers a lower side that greeted us before we knew it (its initiation was dropped) and a restart of either side.
 */
import type { WgPeerConfig, WgPeerState } from './uapi.js';

/** How long the higher side waits for the lower side's greeting before greeting itself. */
export const SECOND_GREETING_DELAY_MS = 1_000;

/** Base64 keys compare the same way on both sides, so exactly one side of every pair is "lower". */
export function greetingOrder(ourPublicKey: string, peers: readonly WgPeerConfig[]): { now: WgPeerConfig[]; later: WgPeerConfig[] } {
  const now = peers.filter((p) => ourPublicKey < p.publicKey);
  const later = peers.filter((p) => !(ourPublicKey < p.publicKey));
  return { now, later };
}

/** Of `waiting`, those still wanted and without a handshake on the device. */
export function stillUngreeted(waiting: readonly WgPeerConfig[], wanted: readonly WgPeerConfig[], state: readonly WgPeerState[]): WgPeerConfig[] {
  const shook = new Set(state.filter((p) => p.lastHandshakeMs !== undefined).map((p) => p.publicKey));
  const current = new Map(wanted.map((p) => [p.publicKey, p]));
  return waiting.flatMap((p) => {
    const peer = current.get(p.publicKey);
    return peer && !shook.has(p.publicKey) ? [peer] : [];
  });
}
