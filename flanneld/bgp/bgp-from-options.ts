/**
 * The BGP speaker as the command line asks for it (docs/operations.md#announcing-pod-subnets-over-bgp): none
 * without --bgp-as; otherwise one session per usable --bgp-peers entry, each entry left out named in one log line.
 */
import type { Logger } from 'pino';
import type { Clock } from '../runtime/clock.js';
import type { Random } from '../runtime/random.js';
import { parseBgpPeers } from './bgp-peers.js';
import type { BgpConnector, SessionStatus } from './bgp-session.js';
import { BgpSpeaker } from './bgp-speaker.js';

/** RFC 4271 suggests 90 s; routers take the lower of theirs and ours. */
const HOLD_TIME_SEC = 90;

export interface BgpOptions {
  readonly bgpAs: number;
  readonly bgpPeers: readonly string[];
  readonly bgpGracefulRestartTime: number;
}

export interface BgpSpeakerDeps {
  readonly connect: BgpConnector;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly onStatus?: (status: SessionStatus) => void;
}

export function bgpSpeakerFromOptions(options: BgpOptions, deps: BgpSpeakerDeps): BgpSpeaker | undefined {
  if (options.bgpAs === 0) return undefined;
  const { peers, problems } = parseBgpPeers(options.bgpPeers);
  for (const problem of problems) deps.log.error(problem);
  if (peers.length === 0) deps.log.warn({ as: options.bgpAs }, '--bgp-as is set but no usable --bgp-peers entry: nothing is announced');
  return new BgpSpeaker({
    localAs: options.bgpAs,
    peers,
    gracefulRestartSec: options.bgpGracefulRestartTime,
    holdTimeSec: HOLD_TIME_SEC,
    ...deps,
  });
}
