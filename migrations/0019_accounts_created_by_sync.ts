// Which accounts the sync created, as against accounts the portal made that
// the sync adopted (rules 2 and 8): a merge may absorb only the former, since
// an adopted account has history of its own from before the sync, which the
// merge would hand to the kept account. The sync's create sets it from this
// release on. Rows from before, and rows an instance of the previous release
// creates during a rolling deploy, have none (NULL): for them the merge asks
// the audit log, where each create by the sync wrote a `create` event naming
// the new row in its own transaction. No backfill: on a large table it would
// hold the table for its whole run.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE accounts ADD COLUMN created_by_sync boolean`.execute(db);
  await sql`COMMENT ON COLUMN accounts.created_by_sync IS
    'true: the sync created this account, so a merge may absorb it. NULL: not recorded (a row from before this column, or one the portal made); the audit log''s create events say.'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE accounts DROP COLUMN created_by_sync`.execute(db);
}
