/**
 * Why the reconciler dumps the kernel and diffs it against the desired entries. Some reasons are the job itself
 * (programming the first snapshot, a re-created device, entries the kernel refused before); the others look for
 * drift, and whatever they find is logged and counted as a repair.
 */
export type ResyncReason =
  | 'initial-snapshot'
  | 'devices-recreated'
  | 'retry-failed-entries'
  | 'retry-devices'
  | 'periodic'
  | 'notifications-overran'
  | 'notifications-reopened'
  | 'after-failure';

interface ReasonInfo {
  /** As logged in the `why` field (log queries and tests match these words). */
  readonly text: string;
  readonly findsDrift: boolean;
}

const REASONS: Readonly<Record<ResyncReason, ReasonInfo>> = {
  'initial-snapshot': { text: 'initial lease snapshot', findsDrift: false },
  'devices-recreated': { text: 'device re-created', findsDrift: false },
  'retry-failed-entries': { text: 'retrying entries that failed', findsDrift: false },
  'retry-devices': { text: 'retrying device set-up', findsDrift: true },
  periodic: { text: 'periodic', findsDrift: true },
  'notifications-overran': { text: 'netlink notifications overran', findsDrift: true },
  'notifications-reopened': { text: 'kernel notifications reopened', findsDrift: true },
  'after-failure': { text: 'after failure', findsDrift: true },
};

export const describeResync = (reason: ResyncReason): string => REASONS[reason].text;

/** Whether changes this resync finds are drift (someone else's doing) rather than the work it was started for. */
export const resyncFindsDrift = (reason: ResyncReason): boolean => REASONS[reason].findsDrift;
