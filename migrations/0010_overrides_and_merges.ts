// Local decisions and repairs (rules 11 and 12):
// - Role and grade overrides on synced accounts. Sync keeps writing what
//   Entra sends into role and grade; an override beside them wins in the
//   portal's view until it is cleared, and then the value Entra last sent
//   shows again. The view says where each value comes from.
// - Merges: when an existing portal account (kept) takes over an account
//   Entra created for the same person (absorbed), Entra keeps using the
//   absorbed account's SCIM id. An alias sends that id to the kept account,
//   for as long as the kept account lives.
// - The change feed compares what the portal sees (role and grade with their
//   overrides), so an override is a change of role and a sync of a value an
//   override hides is not.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE accounts
    ADD COLUMN role_override text CHECK (role_override IN ('student', 'teacher', 'staff')),
    ADD COLUMN grade_override text CHECK (length(grade_override) <= 512)`.execute(db);

  await sql`CREATE TABLE account_aliases (
    tenant_id uuid NOT NULL,
    alias_id uuid NOT NULL,
    account_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, alias_id),
    FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id) ON DELETE CASCADE
  )`.execute(db);
  await sql`CREATE INDEX account_aliases_account_idx ON account_aliases (tenant_id, account_id)`.execute(db);

  // New columns go at the end: a view keeps the columns it had, in order.
  await sql`CREATE OR REPLACE VIEW portal_accounts AS
    SELECT tenant_id, id, coalesce(role_override, role) AS role, user_name, email, given_name, family_name, display_name,
           external_id, school_id, coalesce(grade_override, grade) AS grade, active, managed_by = 'sync' AS managed_by_sync,
           created_at, updated_at, deleted_at,
           CASE WHEN role_override IS NOT NULL THEN 'override' WHEN managed_by = 'sync' THEN 'sync' ELSE 'portal' END AS role_source,
           CASE WHEN grade_override IS NOT NULL THEN 'override' WHEN managed_by = 'sync' THEN 'sync' ELSE 'portal' END AS grade_source,
           role AS synced_role, grade AS synced_grade
      FROM accounts
     WHERE deleted_at IS NULL`.execute(db);

  await sql`CREATE OR REPLACE FUNCTION change_feed_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, action)
        SELECT tenant_id, 'account', id, CASE WHEN deleted_at IS NULL THEN 'created' ELSE 'deleted' END FROM new_rows;
      ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, action)
        SELECT tenant_id, 'account', id, 'purged' FROM old_rows;
      ELSE
        INSERT INTO change_events (tenant_id, object_type, object_id, action, changed)
        SELECT n.tenant_id, 'account', n.id,
               CASE WHEN o.deleted_at IS NULL AND n.deleted_at IS NOT NULL THEN 'deleted'
                    WHEN o.managed_by = 'manual' AND n.managed_by = 'sync' THEN 'adopted'
                    WHEN o.managed_by = 'sync' AND n.managed_by = 'manual' THEN 'disconnected'
                    WHEN o.active AND NOT n.active THEN 'deactivated'
                    WHEN NOT o.active AND n.active THEN 'reactivated'
                    ELSE 'updated' END,
               array_remove(ARRAY[
                 CASE WHEN coalesce(o.role_override, o.role) IS DISTINCT FROM coalesce(n.role_override, n.role) THEN 'role' END,
                 CASE WHEN o.user_name IS DISTINCT FROM n.user_name THEN 'user_name' END,
                 CASE WHEN o.email IS DISTINCT FROM n.email THEN 'email' END,
                 CASE WHEN o.given_name IS DISTINCT FROM n.given_name THEN 'given_name' END,
                 CASE WHEN o.family_name IS DISTINCT FROM n.family_name THEN 'family_name' END,
                 CASE WHEN o.display_name IS DISTINCT FROM n.display_name THEN 'display_name' END,
                 CASE WHEN o.external_id IS DISTINCT FROM n.external_id THEN 'external_id' END,
                 CASE WHEN o.school_id IS DISTINCT FROM n.school_id THEN 'school_id' END,
                 CASE WHEN coalesce(o.grade_override, o.grade) IS DISTINCT FROM coalesce(n.grade_override, n.grade) THEN 'grade' END,
                 CASE WHEN o.active IS DISTINCT FROM n.active THEN 'active' END,
                 CASE WHEN o.managed_by IS DISTINCT FROM n.managed_by THEN 'managed_by_sync' END,
                 CASE WHEN o.deleted_at IS DISTINCT FROM n.deleted_at THEN 'deleted_at' END,
                 CASE WHEN (o.role_override IS NULL) <> (n.role_override IS NULL) THEN 'role_source' END,
                 CASE WHEN (o.grade_override IS NULL) <> (n.grade_override IS NULL) THEN 'grade_source' END,
                 CASE WHEN o.role IS DISTINCT FROM n.role THEN 'synced_role' END,
                 CASE WHEN o.grade IS DISTINCT FROM n.grade THEN 'synced_grade' END
               ]::text[], NULL)
          FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP VIEW portal_accounts`.execute(db);
  await sql`CREATE VIEW portal_accounts AS
    SELECT tenant_id, id, role, user_name, email, given_name, family_name, display_name,
           external_id, school_id, grade, active, managed_by = 'sync' AS managed_by_sync,
           created_at, updated_at, deleted_at
      FROM accounts
     WHERE deleted_at IS NULL`.execute(db);
  await sql`DROP TABLE account_aliases`.execute(db);
  await sql`ALTER TABLE accounts DROP COLUMN role_override, DROP COLUMN grade_override`.execute(db);
  // The feed's function as migration 0007 wrote it.
  await sql`CREATE OR REPLACE FUNCTION change_feed_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, action)
        SELECT tenant_id, 'account', id, CASE WHEN deleted_at IS NULL THEN 'created' ELSE 'deleted' END FROM new_rows;
      ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, action)
        SELECT tenant_id, 'account', id, 'purged' FROM old_rows;
      ELSE
        INSERT INTO change_events (tenant_id, object_type, object_id, action, changed)
        SELECT n.tenant_id, 'account', n.id,
               CASE WHEN o.deleted_at IS NULL AND n.deleted_at IS NOT NULL THEN 'deleted'
                    WHEN o.managed_by = 'manual' AND n.managed_by = 'sync' THEN 'adopted'
                    WHEN o.managed_by = 'sync' AND n.managed_by = 'manual' THEN 'disconnected'
                    WHEN o.active AND NOT n.active THEN 'deactivated'
                    WHEN NOT o.active AND n.active THEN 'reactivated'
                    ELSE 'updated' END,
               array_remove(ARRAY[
                 CASE WHEN o.role IS DISTINCT FROM n.role THEN 'role' END,
                 CASE WHEN o.user_name IS DISTINCT FROM n.user_name THEN 'user_name' END,
                 CASE WHEN o.email IS DISTINCT FROM n.email THEN 'email' END,
                 CASE WHEN o.given_name IS DISTINCT FROM n.given_name THEN 'given_name' END,
                 CASE WHEN o.family_name IS DISTINCT FROM n.family_name THEN 'family_name' END,
                 CASE WHEN o.display_name IS DISTINCT FROM n.display_name THEN 'display_name' END,
                 CASE WHEN o.external_id IS DISTINCT FROM n.external_id THEN 'external_id' END,
                 CASE WHEN o.school_id IS DISTINCT FROM n.school_id THEN 'school_id' END,
                 CASE WHEN o.grade IS DISTINCT FROM n.grade THEN 'grade' END,
                 CASE WHEN o.active IS DISTINCT FROM n.active THEN 'active' END,
                 CASE WHEN o.managed_by IS DISTINCT FROM n.managed_by THEN 'managed_by_sync' END,
                 CASE WHEN o.deleted_at IS DISTINCT FROM n.deleted_at THEN 'deleted_at' END
               ]::text[], NULL)
          FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
}
