// A disconnect (rule 8) makes the memberships Entra made the portal's, so the
// classes keep them; which of them the portal had not added by hand is
// recorded, so that once the tenant is connected again and Entra adds such a
// member again, the membership is Entra's again (synced, not manual) and
// Entra can later remove it. Without the mark every such membership stayed
// manual for good: Entra's removal left the pupil in the class. Rows from
// before keep false, as they were. A column with a constant default is added
// without rewriting the table.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE class_memberships ADD COLUMN manual_by_disconnect boolean NOT NULL DEFAULT false`.execute(db);
  await sql`COMMENT ON COLUMN class_memberships.manual_by_disconnect IS
    'true: manual only because a tenant disconnect kept a membership Entra made; Entra adding the member again makes it synced, not manual'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE class_memberships DROP COLUMN manual_by_disconnect`.execute(db);
}
