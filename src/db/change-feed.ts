// The change feed's upkeep: rows older than the retention period leave it.
// The portal reads the feed through portal_changes() (migration 0007).
import { sql } from 'kysely';
import type { Executor } from './database.js';

/** Rows one statement removes: short transactions, since a running one holds the whole feed back. */
const PRUNE_BATCH = 5000;

/**
 * Deletes the changes older than retentionDays, in batches, and returns how
 * many this call deleted. Each batch takes only rows no other prune holds
 * (SKIP LOCKED), so instances pruning at once split the rows between them
 * and every row is deleted once; they wait on each other only for the one
 * row per tenant that records how far the prune went, a batch at a time.
 * Each batch commits on its own, because portal_changes() returns nothing
 * past a transaction that is still running.
 */
export async function pruneChangeEvents(db: Executor, retentionDays: number, batch = PRUNE_BATCH): Promise<number> {
  let total = 0;
  for (;;) {
    // The highest position removed is kept per tenant (portal_changes_pruned):
    // a reader below it may have missed changes, and can tell.
    const result = await sql<{ deleted: number }>`
      WITH doomed AS (
        SELECT tenant_id, position FROM change_events
         WHERE at < now() - make_interval(days => ${retentionDays}::int)
         ORDER BY at
         LIMIT ${batch}::int
           FOR UPDATE SKIP LOCKED),
      gone AS (
        DELETE FROM change_events c USING doomed d
         WHERE c.tenant_id = d.tenant_id AND c.position = d.position
        RETURNING c.tenant_id, c.position),
      marked AS (
        INSERT INTO change_feed_pruned (tenant_id, upto)
        SELECT tenant_id, max(position) FROM gone GROUP BY tenant_id
        -- One order for every instance's batch: two batches spanning the same tenants never lock them crosswise.
        ORDER BY tenant_id
        ON CONFLICT (tenant_id) DO UPDATE SET upto = greatest(change_feed_pruned.upto, EXCLUDED.upto))
      SELECT count(*)::int AS deleted FROM gone`.execute(db);
    const deleted = result.rows[0]?.deleted ?? 0;
    total += deleted;
    if (deleted < batch) return total;
  }
}
