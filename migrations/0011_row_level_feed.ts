// The change feed of accounts and classes is written per row on insert and
// update. Entra writes these one row per statement, and a statement trigger
// with transition tables costs a row about twice what a row trigger does
// (the two tuplestores, and a join of old and new for one row). Deletes
// (the purge, a tenant's removal) and memberships (Entra's member batches)
// change many rows at once and keep their statement triggers; the few bulk
// updates (a tenant's disconnect and connect) pay a row trigger per row. The
// feed's rows are the same either way; a class write that also changes
// members writes its memberships before the class row (write-statements.ts),
// so their events come first, as they did.
//
// Row triggers of an event fire in the order of their names. A deleted
// account leaves its classes (migration 0005) before the feed records the
// deletion, so the feed has the memberships' deletions first, as the
// statement trigger had them: that trigger is renamed to sort first.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // Accounts: the action a change stands for, and the contract's columns it
  // changed, comparing what the portal sees (role and grade with overrides).
  await sql`CREATE FUNCTION change_feed_account_row() RETURNS trigger LANGUAGE plpgsql AS $$
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
                 CASE WHEN (OLD.role_override IS NULL) <> (NEW.role_override IS NULL) THEN 'role_source' END,
                 CASE WHEN (OLD.grade_override IS NULL) <> (NEW.grade_override IS NULL) THEN 'grade_source' END,
                 CASE WHEN OLD.role IS DISTINCT FROM NEW.role THEN 'synced_role' END,
                 CASE WHEN OLD.grade IS DISTINCT FROM NEW.grade THEN 'synced_grade' END
               ]::text[], NULL));
      END IF;
      RETURN NULL;
    END $$`.execute(db);

  await sql`CREATE FUNCTION change_feed_class_row() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, action)
        VALUES (NEW.tenant_id, 'class', NEW.id, 'created');
      ELSE
        INSERT INTO change_events (tenant_id, object_type, object_id, action, changed)
        VALUES (NEW.tenant_id, 'class', NEW.id,
               CASE WHEN OLD.managed_by = 'manual' AND NEW.managed_by = 'sync' THEN 'adopted'
                    WHEN OLD.managed_by = 'sync' AND NEW.managed_by = 'manual' THEN 'disconnected'
                    ELSE 'updated' END,
               array_remove(ARRAY[
                 CASE WHEN OLD.display_name IS DISTINCT FROM NEW.display_name THEN 'display_name' END,
                 CASE WHEN OLD.external_id IS DISTINCT FROM NEW.external_id THEN 'external_id' END,
                 CASE WHEN OLD.school_id IS DISTINCT FROM NEW.school_id THEN 'school_id' END,
                 CASE WHEN OLD.managed_by IS DISTINCT FROM NEW.managed_by THEN 'managed_by_sync' END
               ]::text[], NULL));
      END IF;
      RETURN NULL;
    END $$`.execute(db);

  await sql`ALTER TRIGGER accounts_leave_classes ON accounts RENAME TO accounts_deleted_leave_classes`.execute(db);
  for (const [table, fn] of [
    ['accounts', 'change_feed_account_row'],
    ['classes', 'change_feed_class_row'],
  ] as const) {
    for (const event of ['insert', 'update']) {
      await sql.raw(`DROP TRIGGER ${table}_feed_${event} ON ${table}`).execute(db);
      await sql.raw(`CREATE TRIGGER ${table}_feed_${event} AFTER ${event.toUpperCase()} ON ${table} FOR EACH ROW EXECUTE FUNCTION ${fn}()`).execute(db);
    }
  }

  // The statement functions now serve deletes only.
  await sql`CREATE OR REPLACE FUNCTION change_feed_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO change_events (tenant_id, object_type, object_id, action)
      SELECT tenant_id, 'account', id, 'purged' FROM old_rows;
      RETURN NULL;
    END $$`.execute(db);
  await sql`CREATE OR REPLACE FUNCTION change_feed_classes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO change_events (tenant_id, object_type, object_id, action)
      SELECT tenant_id, 'class', id, 'deleted' FROM old_rows;
      RETURN NULL;
    END $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE OR REPLACE FUNCTION change_feed_classes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, action)
        SELECT tenant_id, 'class', id, 'created' FROM new_rows;
      ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO change_events (tenant_id, object_type, object_id, action)
        SELECT tenant_id, 'class', id, 'deleted' FROM old_rows;
      ELSE
        INSERT INTO change_events (tenant_id, object_type, object_id, action, changed)
        SELECT n.tenant_id, 'class', n.id,
               CASE WHEN o.managed_by = 'manual' AND n.managed_by = 'sync' THEN 'adopted'
                    WHEN o.managed_by = 'sync' AND n.managed_by = 'manual' THEN 'disconnected'
                    ELSE 'updated' END,
               array_remove(ARRAY[
                 CASE WHEN o.display_name IS DISTINCT FROM n.display_name THEN 'display_name' END,
                 CASE WHEN o.external_id IS DISTINCT FROM n.external_id THEN 'external_id' END,
                 CASE WHEN o.school_id IS DISTINCT FROM n.school_id THEN 'school_id' END,
                 CASE WHEN o.managed_by IS DISTINCT FROM n.managed_by THEN 'managed_by_sync' END
               ]::text[], NULL)
          FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
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
  for (const [table, fn] of [
    ['accounts', 'change_feed_accounts'],
    ['classes', 'change_feed_classes'],
  ] as const) {
    await sql.raw(`DROP TRIGGER ${table}_feed_insert ON ${table}`).execute(db);
    await sql.raw(`DROP TRIGGER ${table}_feed_update ON ${table}`).execute(db);
    await sql.raw(`CREATE TRIGGER ${table}_feed_insert AFTER INSERT ON ${table} REFERENCING NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`).execute(db);
    await sql.raw(`CREATE TRIGGER ${table}_feed_update AFTER UPDATE ON ${table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`).execute(db);
  }
  await sql`ALTER TRIGGER accounts_deleted_leave_classes ON accounts RENAME TO accounts_leave_classes`.execute(db);
  await sql`DROP FUNCTION change_feed_class_row()`.execute(db);
  await sql`DROP FUNCTION change_feed_account_row()`.execute(db);
}
