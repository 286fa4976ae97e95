// A class write that keeps a tenant's class names unique (Microsoft's SCIM
// guidance) takes its turn on the name inside its own statement: the
// function waits for the name's transaction-scoped advisory lock, then looks
// for the name with a snapshot of its own, taken after the wait, so it sees
// a class of that name that a writer ahead of it has just committed. The
// statement's snapshot, taken before the wait, would not. A class create is
// then one statement, as a user create is, instead of a transaction of four
// round trips (begin, lock, write, commit).
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // VOLATILE: each query in it takes a new snapshot (READ COMMITTED).
  // Parameters with a prefix of their own, so no column of classes can make a name ambiguous.
  await sql`CREATE FUNCTION class_name_is_free(p_tenant uuid, p_name text, p_except uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
      PERFORM pg_advisory_xact_lock(hashtextextended('class name ' || p_tenant::text || ' ' || lower(p_name), 0));
      RETURN NOT EXISTS (
        SELECT 1 FROM classes
         WHERE tenant_id = p_tenant AND lower(display_name) = lower(p_name) AND managed_by = 'sync'
           AND id IS DISTINCT FROM p_except);
    END $$`.execute(db);
  await sql`COMMENT ON FUNCTION class_name_is_free(uuid, text, uuid) IS
    'Whether no other synced class of the tenant has this name, in any case; waits for the name''s turn first. For the server''s class writes.'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION class_name_is_free(uuid, text, uuid)`.execute(db);
}
