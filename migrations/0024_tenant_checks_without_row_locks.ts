// Every SCIM write of a user inserts an audit event, and a create inserts an
// account, and each of those rows named its tenant through a foreign key. A
// foreign key's check locks the referenced row FOR KEY SHARE, so all of a
// tenant's writes locked its one tenants row together: PostgreSQL then
// records a multixact of the transactions holding it and writes the row's
// new lock to the WAL, on nearly every write. That was about a tenth of a
// user change's cost in PostgreSQL.
//
// The server's writes already check their tenant in the statement that
// writes: tenant_is_connected (migration 0015) reads the tenant after waiting
// for its turn, and an account or audit event is written only when it found
// it. So the two keys become:
// - for the rows the portal writes (manual accounts) and a change of an
//   account's tenant, a trigger that locks the tenant's row as the key did
//   (these writes are few), with the key's error: SQLSTATE 23503 and the
//   key's name;
// - a standalone audit event (recordAudit, src/db/audit.ts) likewise locks
//   its tenant's row and is written only when it exists; the other events
//   come from a row of the same statement whose tenant was checked;
// - deleting a tenant deletes its accounts (and through their own keys
//   their memberships) and audit events, as ON DELETE CASCADE did: after the
//   row is deleted, so the writes that locked it have finished, and after
//   the tenant's turn, so the SCIM writes in flight have too; later writes
//   wait for the turn and then find no tenant. TRUNCATE tenants CASCADE no
//   longer reaches the two tables. The server never deletes a tenant; the
//   portal team may, by hand.
// - a tenant's id does not change while either table holds its rows.
// The other tables keep their foreign keys: none of them is written by
// Entra's user writes.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE accounts DROP CONSTRAINT accounts_tenant_id_fkey`.execute(db);
  await sql`ALTER TABLE audit_events DROP CONSTRAINT audit_events_tenant_id_fkey`.execute(db);

  await sql`CREATE FUNCTION tenant_must_exist() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM 1 FROM tenants WHERE id = NEW.tenant_id FOR KEY SHARE;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"', TG_TABLE_NAME, TG_TABLE_NAME || '_tenant_id_fkey'
          USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, CONSTRAINT = TG_TABLE_NAME || '_tenant_id_fkey',
                DETAIL = format('Key (tenant_id)=(%s) is not present in table "tenants".', NEW.tenant_id);
      END IF;
      RETURN NEW;
    END $$`.execute(db);
  await sql`COMMENT ON FUNCTION tenant_must_exist() IS
    'The foreign key of accounts to tenants for the rows the portal writes: the row''s tenant exists, locked as a foreign key locks it.'`.execute(db);
  await sql`CREATE TRIGGER accounts_tenant_exists BEFORE INSERT ON accounts
    FOR EACH ROW WHEN (NEW.managed_by IS DISTINCT FROM 'sync') EXECUTE FUNCTION tenant_must_exist()`.execute(db);
  await sql`CREATE TRIGGER accounts_tenant_changed BEFORE UPDATE OF tenant_id ON accounts
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id) EXECUTE FUNCTION tenant_must_exist()`.execute(db);

  await sql`CREATE FUNCTION tenant_rows_go_with_it() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' THEN
        IF EXISTS (SELECT 1 FROM accounts WHERE tenant_id = OLD.id) OR EXISTS (SELECT 1 FROM audit_events WHERE tenant_id = OLD.id) THEN
          RAISE EXCEPTION 'update on table "tenants" violates foreign key constraint "%"',
                CASE WHEN EXISTS (SELECT 1 FROM accounts WHERE tenant_id = OLD.id) THEN 'accounts_tenant_id_fkey' ELSE 'audit_events_tenant_id_fkey' END
            USING ERRCODE = 'foreign_key_violation', TABLE = 'tenants',
                  DETAIL = format('Key (id)=(%s) is still referenced.', OLD.id);
        END IF;
        RETURN NEW;
      END IF;
      PERFORM tenant_disconnect_turn(OLD.id);
      DELETE FROM audit_events WHERE tenant_id = OLD.id;
      DELETE FROM accounts WHERE tenant_id = OLD.id;
      RETURN OLD;
    END $$`.execute(db);
  await sql`COMMENT ON FUNCTION tenant_rows_go_with_it() IS
    'ON DELETE CASCADE of accounts and audit_events to tenants, after the writes in flight (AFTER DELETE, and the tenant''s turn); a tenant''s id stays while they hold its rows.'`.execute(db);
  await sql`CREATE TRIGGER tenants_rows_go_with_it AFTER DELETE ON tenants FOR EACH ROW EXECUTE FUNCTION tenant_rows_go_with_it()`.execute(db);
  await sql`CREATE TRIGGER tenants_id_stays BEFORE UPDATE OF id ON tenants
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION tenant_rows_go_with_it()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER tenants_id_stays ON tenants`.execute(db);
  await sql`DROP TRIGGER tenants_rows_go_with_it ON tenants`.execute(db);
  await sql`DROP FUNCTION tenant_rows_go_with_it()`.execute(db);
  await sql`DROP TRIGGER accounts_tenant_changed ON accounts`.execute(db);
  await sql`DROP TRIGGER accounts_tenant_exists ON accounts`.execute(db);
  await sql`DROP FUNCTION tenant_must_exist()`.execute(db);
  await sql`ALTER TABLE audit_events ADD CONSTRAINT audit_events_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE`.execute(db);
  await sql`ALTER TABLE accounts ADD CONSTRAINT accounts_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE`.execute(db);
}
