// What the portal reads follows what it sees. A sign-in answers the role
// portal_accounts shows, with its override (rule 11), not the one Entra last
// sent: an account overridden to student must not sign in as a teacher. The
// feed no longer writes rows for a deleted account's row changing again (a
// disconnect turning it manual, an override cleared on it): the account is
// not in the view, and the portal had its `deleted` row. And `changed` lists
// role_source and grade_source whenever they change, an adoption or a
// disconnect included, as the contract says.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

/** The feed's row function; `sources` decides when role_source and grade_source are listed. */
function accountRowFunction(sources: 'all' | 'override only') {
  const source = (column: 'role_override' | 'grade_override', name: string) =>
    sources === 'all'
      ? sql.raw(
          `CASE WHEN (OLD.${column} IS NULL) <> (NEW.${column} IS NULL) OR (NEW.${column} IS NULL AND OLD.managed_by IS DISTINCT FROM NEW.managed_by) THEN '${name}' END`,
        )
      : sql.raw(`CASE WHEN (OLD.${column} IS NULL) <> (NEW.${column} IS NULL) THEN '${name}' END`);
  return sql`CREATE OR REPLACE FUNCTION change_feed_account_row() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, action)
        VALUES (NEW.tenant_id, 'account', NEW.id, CASE WHEN NEW.deleted_at IS NULL THEN 'created' ELSE 'deleted' END);
      ELSE
        INSERT INTO change_events (tenant_id, object_type, object_id, action, changed)
        VALUES (NEW.tenant_id, 'account', NEW.id,
               CASE WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN 'deleted'
                    WHEN OLD.managed_by = 'manual' AND NEW.managed_by = 'sync' THEN 'adopted'
                    WHEN OLD.managed_by = 'sync' AND NEW.managed_by = 'manual' THEN 'disconnected'
                    WHEN OLD.active AND NOT NEW.active THEN 'deactivated'
                    WHEN NOT OLD.active AND NEW.active THEN 'reactivated'
                    ELSE 'updated' END,
               array_remove(ARRAY[
                 CASE WHEN coalesce(OLD.role_override, OLD.role) IS DISTINCT FROM coalesce(NEW.role_override, NEW.role) THEN 'role' END,
                 CASE WHEN OLD.user_name IS DISTINCT FROM NEW.user_name THEN 'user_name' END,
                 CASE WHEN OLD.email IS DISTINCT FROM NEW.email THEN 'email' END,
                 CASE WHEN OLD.given_name IS DISTINCT FROM NEW.given_name THEN 'given_name' END,
                 CASE WHEN OLD.family_name IS DISTINCT FROM NEW.family_name THEN 'family_name' END,
                 CASE WHEN OLD.display_name IS DISTINCT FROM NEW.display_name THEN 'display_name' END,
                 CASE WHEN OLD.external_id IS DISTINCT FROM NEW.external_id THEN 'external_id' END,
                 CASE WHEN OLD.school_id IS DISTINCT FROM NEW.school_id THEN 'school_id' END,
                 CASE WHEN coalesce(OLD.grade_override, OLD.grade) IS DISTINCT FROM coalesce(NEW.grade_override, NEW.grade) THEN 'grade' END,
                 CASE WHEN OLD.active IS DISTINCT FROM NEW.active THEN 'active' END,
                 CASE WHEN OLD.managed_by IS DISTINCT FROM NEW.managed_by THEN 'managed_by_sync' END,
                 CASE WHEN OLD.deleted_at IS DISTINCT FROM NEW.deleted_at THEN 'deleted_at' END,
                 ${source('role_override', 'role_source')},
                 ${source('grade_override', 'grade_source')},
                 CASE WHEN OLD.role IS DISTINCT FROM NEW.role THEN 'synced_role' END,
                 CASE WHEN OLD.grade IS DISTINCT FROM NEW.grade THEN 'synced_grade' END
               ]::text[], NULL));
      END IF;
      RETURN NULL;
    END $$`;
}

function signInFunction(role: 'shown' | 'synced') {
  const column = role === 'shown' ? sql.raw('coalesce(a.role_override, a.role) AS role') : sql.raw('a.role');
  return sql`CREATE OR REPLACE FUNCTION portal_sign_in_account(tid uuid, oid text)
    RETURNS TABLE (tenant_id uuid, id uuid, role text)
    LANGUAGE sql STABLE AS $$
      SELECT m.tenant_id, m.id, m.role
        FROM (SELECT a.tenant_id, a.id, ${column}, count(*) OVER () AS matches
                FROM tenants t
                JOIN accounts a ON a.tenant_id = t.id
               WHERE t.entra_tenant_id = portal_sign_in_account.tid
                 AND t.disconnected_at IS NULL
                 AND a.external_id = portal_sign_in_account.oid
                 AND a.deleted_at IS NULL
                 AND a.active) m
       WHERE m.matches = 1
    $$`;
}

export async function up(db: Kysely<unknown>): Promise<void> {
  await signInFunction('shown').execute(db);
  await accountRowFunction('all').execute(db);
  // A trigger's WHEN is checked before the function is called: a deleted
  // account's later changes cost no call.
  await sql`DROP TRIGGER accounts_feed_update ON accounts`.execute(db);
  await sql`CREATE TRIGGER accounts_feed_update AFTER UPDATE ON accounts FOR EACH ROW WHEN (OLD.deleted_at IS NULL)
    EXECUTE FUNCTION change_feed_account_row()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER accounts_feed_update ON accounts`.execute(db);
  await sql`CREATE TRIGGER accounts_feed_update AFTER UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION change_feed_account_row()`.execute(db);
  await accountRowFunction('override only').execute(db);
  await signInFunction('synced').execute(db);
}
