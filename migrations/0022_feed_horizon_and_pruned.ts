// Two functions that let a reader of the change feed start, and know when it
// cannot go on. A reader that starts after the hourly prune has removed
// changes, or comes back after longer than the retention, cannot learn from
// portal_changes() what it missed: it gets what is left. So the prune keeps,
// per tenant, the highest position it removed, and portal_changes_pruned()
// gives the highest of them: a reader whose position is below it may have
// missed changes and reads the views again. portal_changes_horizon(), called
// in the REPEATABLE READ transaction that reads the views, is where to
// follow the feed from afterwards: every change of a transaction older than
// the snapshot's oldest running one is in what that transaction reads, and
// each later one comes after the horizon (some of them again, which a
// reader that decides from the views takes in its stride).
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

/** As in 0007: positions are the transaction id times this, plus a sequence number. */
const SPREAD = '10000000000000000000';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE change_feed_pruned (
    tenant_id uuid PRIMARY KEY,
    upto numeric NOT NULL
  )`.execute(db);
  await sql`COMMENT ON TABLE change_feed_pruned IS
    'Per tenant, the highest change-feed position the prune removed. Read it through portal_changes_pruned().'`.execute(db);
  // What earlier prunes removed is not known, only that it came before each
  // tenant's oldest change left: a reader from before that reads the views
  // again (at worst once more than it needed to), instead of missing them.
  // One index lookup per tenant, however long the feed.
  await sql`INSERT INTO change_feed_pruned (tenant_id, upto)
    SELECT t.id, o.oldest - 1
      FROM tenants t
      CROSS JOIN LATERAL (SELECT min(c.position) AS oldest FROM change_events c WHERE c.tenant_id = t.id) o
     WHERE o.oldest IS NOT NULL`.execute(db);
  await sql`CREATE FUNCTION portal_changes_pruned() RETURNS numeric LANGUAGE sql STABLE AS $$
      SELECT coalesce(max(upto), 0) FROM change_feed_pruned
    $$`.execute(db);
  await sql.raw(`CREATE FUNCTION portal_changes_horizon() RETURNS numeric LANGUAGE sql STABLE AS $$
      SELECT pg_snapshot_xmin(pg_current_snapshot())::text::numeric * ${SPREAD} - 1
    $$`).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION portal_changes_horizon()`.execute(db);
  await sql`DROP FUNCTION portal_changes_pruned()`.execute(db);
  await sql`DROP TABLE change_feed_pruned`.execute(db);
}
