// A disconnect (rule 8) makes the memberships Entra made the portal's, so the
// classes keep them; which of them the portal had not added by hand is
// recorded, so that once the tenant is connected again and Entra adds such a
// member again, the membership is Entra's again (synced, not manual) and
// Entra can later remove it. Without the mark every such membership stayed
// manual for good: Entra's removal left the pupil in the class. Rows from
// before keep false, as they were. A column with a constant default is added
// without rewriting the table. The portal's hand-add clears the mark (the
// contract's statement), which changes neither `synced` nor `manual`: the
// feed now writes a membership's update only when one of those changed.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

/** The feed's membership rows; `only changes` leaves out updates that change neither mark. */
function membershipFeed(updates: 'only changes' | 'all') {
  const changed = updates === 'only changes' ? sql.raw(' WHERE o.synced IS DISTINCT FROM n.synced OR o.manual IS DISTINCT FROM n.manual') : sql.raw('');
  return sql`CREATE OR REPLACE FUNCTION change_feed_memberships() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, related_id, action)
        SELECT tenant_id, 'membership', class_id, account_id, 'created' FROM new_rows;
      ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, related_id, action)
        SELECT tenant_id, 'membership', class_id, account_id, 'deleted' FROM old_rows;
      ELSE
        INSERT INTO change_events (tenant_id, object_type, object_id, related_id, action, changed)
        SELECT n.tenant_id, 'membership', n.class_id, n.account_id, 'updated',
               array_remove(ARRAY[
                 CASE WHEN o.synced IS DISTINCT FROM n.synced THEN 'synced' END,
                 CASE WHEN o.manual IS DISTINCT FROM n.manual THEN 'manual' END
               ]::text[], NULL)
          FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.class_id = n.class_id AND o.account_id = n.account_id${changed};
      END IF;
      RETURN NULL;
    END $$`;
}

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE class_memberships ADD COLUMN manual_by_disconnect boolean NOT NULL DEFAULT false`.execute(db);
  await sql`COMMENT ON COLUMN class_memberships.manual_by_disconnect IS
    'true: manual only because a tenant disconnect kept a membership Entra made; Entra adding the member again makes it synced, not manual'`.execute(db);
  await membershipFeed('only changes').execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await membershipFeed('all').execute(db);
  await sql`ALTER TABLE class_memberships DROP COLUMN manual_by_disconnect`.execute(db);
}
