// Until migration 0024, accounts and audit_events named their tenant through
// a foreign key, so TRUNCATE tenants CASCADE emptied them too (and, through
// the accounts' own keys, memberships and aliases). Without those keys it
// left every account and audit event behind, naming tenants that no longer
// exist: the portal would still list the accounts. A statement trigger now
// empties the two after tenants is truncated. It deletes rather than
// truncates: the truncate in progress holds the tables that reference
// accounts (memberships, aliases), which it has already emptied, and a
// truncate of accounts would have to take them too. So, unlike the cascade,
// the portal's change feed lists each account as purged. TRUNCATE tenants
// without CASCADE is still refused, as the other tables keep their keys to
// tenants, and then empties nothing.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE FUNCTION tenant_truncate_takes_rows() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
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
