// Until migration 0024, accounts and audit_events named their tenant through
// a foreign key, so TRUNCATE tenants CASCADE emptied them too (and, through
// the accounts' own keys, memberships and aliases). Without those keys it
// left every account and audit event behind, naming tenants that no longer
// exist: the portal would still list the accounts. A statement trigger now
// empties the two after tenants is truncated. It deletes rather than
// truncates: the truncate in progress holds the tables it has emptied, the
// class memberships among them, and a truncate of accounts would have to take
// those too. So, unlike the cascade, the change feed lists each account the
// trigger deletes as purged, and their aliases go by their own key. A delete
// sees the rows of its snapshot: at REPEATABLE READ or SERIALIZABLE an account
// committed after the transaction began would be left behind, so there the
// trigger refuses the truncate. A TRUNCATE that lists accounts and
// audit_events itself (before tenants, so it locks them first) leaves the
// trigger nothing to delete. Without CASCADE, TRUNCATE tenants is refused
// unless it lists every table with a key to tenants; the trigger then
// empties the two as well.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE FUNCTION tenant_truncate_takes_rows() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'TRUNCATE tenants deletes every account and audit event with them, which only READ COMMITTED sees whole'
          USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'Run it at READ COMMITTED: outside a transaction, or after BEGIN ISOLATION LEVEL READ COMMITTED.';
      END IF;
      DELETE FROM audit_events;
      DELETE FROM accounts;
      RETURN NULL;
    END $$`.execute(db);
  await sql`COMMENT ON FUNCTION tenant_truncate_takes_rows() IS
    'TRUNCATE tenants CASCADE empties accounts and audit_events, as their foreign keys to tenants made it do before migration 0024.'`.execute(db);
  await sql`CREATE TRIGGER tenants_truncated AFTER TRUNCATE ON tenants FOR EACH STATEMENT EXECUTE FUNCTION tenant_truncate_takes_rows()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER tenants_truncated ON tenants`.execute(db);
  await sql`DROP FUNCTION tenant_truncate_takes_rows()`.execute(db);
}
