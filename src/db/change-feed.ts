// The change feed's upkeep: rows older than the retention period leave it.
// The portal reads the feed through portal_changes() (migration 0007).
import { sql } from 'kysely';
import type { Executor } from './database.js';

/** Rows one statement removes: short transactions, since a running one holds the whole feed back. */
const PRUNE_BATCH = 5000;

/**
 * Deletes the changes older than retentionDays, in batches, and returns how
 * many this call deleted. Each batch takes only rows no other prune holds
 * (SKIP LOCKED), so instances pruning at once split the rows between them:
 * none waits on another, none deadlocks, and every row is deleted once.
 * Each batch commits on its own, because portal_changes() returns nothing
 * past a transaction that is still running.
 */
export async function pruneChangeEvents(db: Executor, retentionDays: number, batch = PRUNE_BATCH): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await sql`
      WITH doomed AS (
        SELECT tenant_id, position FROM change_events
         WHERE at < now() - make_interval(days => ${retentionDays}::int)
         ORDER BY at
         LIMIT ${batch}::int
           FOR UPDATE SKIP LOCKED)
      DELETE FROM change_events c USING doomed d
       WHERE c.tenant_id = d.tenant_id AND c.position = d.position`.execute(db);
    const deleted = Number(result.numAffectedRows ?? 0n);
    total += deleted;
    if (deleted < batch) return total;
  }
}
