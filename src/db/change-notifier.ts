// Wakes the portal's feed readers (LISTEN portal_changes) after changes
// commit. The feed's rows are written by triggers in each write's own
// transaction; the notification is sent here, after the commit, and at most
// once per short window however many writes land in it: a NOTIFY inside
// every write transaction would make all of them commit one at a time
// (PostgreSQL serialises notifying commits through their WAL flush).
import { sql } from 'kysely';
import { preparedOn, type Executor } from './database.js';

/** The channel portal readers LISTEN on (docs/database-contract.md). */
export const CHANGES_CHANNEL = 'portal_changes';

/** How long changes gather before one notification tells of them all. */
const WINDOW_MS = 50;

/** Notifies the feed's readers now, for a write that has committed. */
export async function notifyChanges(db: Executor): Promise<void> {
  // Named, as it reads no table (preparedOn()): sent after the writes it tells of, it needs no change of the session's plan setting (database.ts).
  await sql`${preparedOn()} SELECT pg_notify(${CHANGES_CHANNEL}, '')`.execute(db);
}

export interface ChangeNotifier {
  /** A write committed: readers are told within WINDOW_MS. */
  changed(): void;
  /** Sends what is pending and stops. */
  close(): Promise<void>;
}

export function createChangeNotifier(db: Executor, onError: (error: unknown) => void): ChangeNotifier {
  let timer: NodeJS.Timeout | undefined;
  let sending: Promise<void> | undefined;
  const send = (): void => {
    timer = undefined;
    sending = notifyChanges(db)
      .catch(onError)
      .finally(() => {
        sending = undefined;
      });
  };
  return {
    changed() {
      if (timer === undefined) {
        timer = setTimeout(send, WINDOW_MS);
        timer.unref();
      }
    },
    async close() {
      if (timer !== undefined) {
        clearTimeout(timer);
        send();
      }
      await sending;
    },
  };
}
