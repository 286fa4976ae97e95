// Which accounts the sync created, as against accounts the portal made that
// the sync adopted (rules 2 and 8): a merge may absorb only the former, since
// an adopted account has history of its own from before the sync, which the
// merge would hand to the kept account. The audit log says it of the accounts
// there are (each create by the sync wrote a `create` event naming the new
// row in its own transaction); from now on the create sets it. The backfill
// changes no column of the portal's views, so the feed's row trigger is off
// for it: the migration's transaction holds the table meanwhile, so no other
// write runs without it.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE accounts ADD COLUMN created_by_sync boolean NOT NULL DEFAULT false`.execute(db);
  await sql`COMMENT ON COLUMN accounts.created_by_sync IS
    'The sync created this account (rather than adopting one the portal made): only such an account may be absorbed by a merge.'`.execute(db);
  await sql`ALTER TABLE accounts DISABLE TRIGGER accounts_feed_update`.execute(db);
  await sql`UPDATE accounts a SET created_by_sync = true
     WHERE EXISTS (SELECT 1 FROM audit_events e
                    WHERE e.tenant_id = a.tenant_id AND e.object_type = 'user' AND e.object_id = a.id
                      AND e.action = 'create' AND e.outcome = 'success')`.execute(db);
  await sql`ALTER TABLE accounts ENABLE TRIGGER accounts_feed_update`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE accounts DROP COLUMN created_by_sync`.execute(db);
}
