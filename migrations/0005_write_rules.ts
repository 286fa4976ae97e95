// Rules the database holds for every writer, whatever path it takes:
// - a deleted account is in no class. A trigger removes its memberships
//   when its row is marked deleted; being a trigger (a volatile function),
//   it reads the memberships with a snapshot taken after the account's row
//   lock is held, so a member add that committed while the delete waited for
//   that lock is removed too (a statement's own snapshot would miss it);
// - the membership view shows live accounts only;
// - each tenant says whether its synced class names are unique (Microsoft's
//   SCIM guidance; the default) or may repeat across its schools. Tenants
//   that already hold repeated names keep repeating.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tenants ADD COLUMN class_names text NOT NULL DEFAULT 'unique' CHECK (class_names IN ('unique', 'repeat'))`.execute(db);
  await sql`UPDATE tenants t SET class_names = 'repeat'
     WHERE EXISTS (SELECT 1 FROM classes c WHERE c.tenant_id = t.id AND c.managed_by = 'sync'
                    GROUP BY lower(c.display_name) HAVING count(*) > 1)`.execute(db);

  await sql`CREATE FUNCTION accounts_leave_classes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      -- An account in no class is spared a DELETE that finds nothing, and
      -- the statement triggers that would fire for it.
      IF EXISTS (SELECT 1 FROM class_memberships WHERE tenant_id = NEW.tenant_id AND account_id = NEW.id) THEN
        DELETE FROM class_memberships WHERE tenant_id = NEW.tenant_id AND account_id = NEW.id;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
  await sql`CREATE TRIGGER accounts_leave_classes AFTER UPDATE OF deleted_at ON accounts
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION accounts_leave_classes()`.execute(db);

  await sql`CREATE OR REPLACE VIEW portal_class_memberships AS
    SELECT m.tenant_id, m.class_id, m.account_id, m.synced, m.manual, m.created_at
      FROM class_memberships m
      JOIN accounts a ON a.tenant_id = m.tenant_id AND a.id = m.account_id
     WHERE a.deleted_at IS NULL`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE OR REPLACE VIEW portal_class_memberships AS
    SELECT tenant_id, class_id, account_id, synced, manual, created_at
      FROM class_memberships`.execute(db);
  await sql`DROP TRIGGER accounts_leave_classes ON accounts`.execute(db);
  await sql`DROP FUNCTION accounts_leave_classes()`.execute(db);
  await sql`ALTER TABLE tenants DROP COLUMN class_names`.execute(db);
}
