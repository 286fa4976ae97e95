// The change feed the portal follows (rule 12): every change to an account,
// a class or a membership appends a row in the same transaction, written by
// triggers so no writer (SCIM, the CLI, the purge, the portal's own writes)
// can forget it. Deleted accounts stay visible as tombstones until purged.
//
// Positions: a sequence number is handed out when a row is written, not when
// its transaction commits, so a reader polling by sequence number could pass
// a row that commits later with a smaller one. A position here leads with
// the id of the writing transaction (xid8), and portal_changes() returns only
// rows of transactions older than every transaction still running
// (pg_snapshot_xmin): those have all ended, and any row written later
// belongs to a newer transaction, so it sorts after every position already
// returned. A reader never skips a row; a long transaction delays the feed
// (but loses nothing) until it ends.
//
// The triggers send no NOTIFY: a notifying commit holds a lock that every
// other notifying commit waits for, through its WAL flush, so Entra's writes
// would commit one at a time. The server notifies after its writes commit,
// at most a few times a second (db/change-notifier.ts). Frozen once merged.
import { type Kysely, sql } from 'kysely';

/** Positions: the transaction id times this, plus a sequence number (unique within it). */
const SPREAD = '10000000000000000000';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE SEQUENCE change_events_seq`.execute(db);
  // No foreign key to tenants: each row would lock the tenant's row, and
  // every write of a tenant would queue on it.
  await sql.raw(`CREATE TABLE change_events (
    tenant_id uuid NOT NULL,
    position numeric NOT NULL DEFAULT (pg_current_xact_id()::text::numeric * ${SPREAD} + nextval('change_events_seq')),
    at timestamptz NOT NULL DEFAULT now(),
    object_type text NOT NULL CHECK (object_type IN ('account', 'class', 'membership')),
    object_id uuid NOT NULL,
    related_id uuid,
    action text NOT NULL CHECK (action IN ('created', 'updated', 'adopted', 'deactivated', 'reactivated', 'deleted', 'purged', 'disconnected', 'merged')),
    changed text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, position)
  )`).execute(db);
  await sql`CREATE UNIQUE INDEX change_events_position_key ON change_events (position)`.execute(db);
  await sql`CREATE INDEX change_events_at_idx ON change_events (at)`.execute(db);

  // Accounts: the action a change stands for, and the contract's columns it changed.
  await sql`CREATE FUNCTION change_feed_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
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

  await sql`CREATE FUNCTION change_feed_classes() RETURNS trigger LANGUAGE plpgsql AS $$
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

  // A membership is named by its class (object_id) and its account (related_id).
  await sql`CREATE FUNCTION change_feed_memberships() RETURNS trigger LANGUAGE plpgsql AS $$
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
          FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.class_id = n.class_id AND o.account_id = n.account_id;
      END IF;
      RETURN NULL;
    END $$`.execute(db);

  // A trigger with transition tables serves one event; three per table.
  for (const [table, fn] of [
    ['accounts', 'change_feed_accounts'],
    ['classes', 'change_feed_classes'],
    ['class_memberships', 'change_feed_memberships'],
  ] as const) {
    await sql.raw(`CREATE TRIGGER ${table}_feed_insert AFTER INSERT ON ${table} REFERENCING NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`).execute(db);
    await sql.raw(`CREATE TRIGGER ${table}_feed_update AFTER UPDATE ON ${table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`).execute(db);
    await sql.raw(`CREATE TRIGGER ${table}_feed_delete AFTER DELETE ON ${table} REFERENCING OLD TABLE AS old_rows
      FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`).execute(db);
  }

  // The reader: changes after a position, in order, in pages, never past a
  // transaction that is still running (see above).
  await sql.raw(`CREATE FUNCTION portal_changes(after numeric, max_rows integer DEFAULT 1000)
    RETURNS TABLE ("position" numeric, tenant_id uuid, object_type text, object_id uuid, related_id uuid, action text, changed text[], at timestamptz)
    LANGUAGE sql STABLE AS $$
      SELECT c.position, c.tenant_id, c.object_type, c.object_id, c.related_id, c.action, c.changed, c.at
        FROM change_events c
       WHERE c.position > after
         AND c.position < pg_snapshot_xmin(pg_current_snapshot())::text::numeric * ${SPREAD}
       ORDER BY c.position
       LIMIT greatest(max_rows, 0)
    $$`).execute(db);

  await sql`CREATE VIEW portal_account_tombstones AS
    SELECT tenant_id, id, deleted_at FROM accounts WHERE deleted_at IS NOT NULL`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP VIEW portal_account_tombstones`.execute(db);
  await sql`DROP FUNCTION portal_changes(numeric, integer)`.execute(db);
  for (const table of ['accounts', 'classes', 'class_memberships']) {
    for (const event of ['insert', 'update', 'delete']) await sql.raw(`DROP TRIGGER ${table}_feed_${event} ON ${table}`).execute(db);
  }
  await sql`DROP FUNCTION change_feed_memberships()`.execute(db);
  await sql`DROP FUNCTION change_feed_classes()`.execute(db);
  await sql`DROP FUNCTION change_feed_accounts()`.execute(db);
  await sql`DROP TABLE change_events`.execute(db);
  await sql`DROP SEQUENCE change_events_seq`.execute(db);
}
