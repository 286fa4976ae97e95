// A SCIM write and a tenant's disconnect (rule 8) take turns on the tenant,
// so a write in flight never leaves a synced row behind a disconnect. Every
// write's guard waits for the tenant's transaction-scoped advisory lock in
// shared mode and then reads whether the tenant is connected with a snapshot
// of its own, taken after the wait; a disconnect takes the lock exclusively
// before it marks the tenant and turns its rows manual. Writes share the
// lock and never wait on each other. Advisory locks queue in order: a
// disconnect waits only for the writes already in flight, and writes that
// come after it wait for it, then read the tenant as it left it. The lock is
// no row lock of tenants, so foreign keys, settings changes and activity
// stamps, which lock the tenant's row, neither wait for it nor make it wait.
// The key has a prefix of its own beside the class names' (migration 0014).
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  // VOLATILE: the query after the wait takes a new snapshot (READ COMMITTED).
  await sql`CREATE FUNCTION tenant_is_connected(p_tenant uuid) RETURNS boolean
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
      PERFORM pg_advisory_xact_lock_shared(hashtextextended('tenant ' || p_tenant::text, 0));
      RETURN EXISTS (SELECT 1 FROM tenants WHERE id = p_tenant AND disconnected_at IS NULL);
    END $$`.execute(db);
  await sql`COMMENT ON FUNCTION tenant_is_connected(uuid) IS
    'Whether the tenant is connected, after waiting for a disconnect in progress; holds the tenant''s turn until the transaction ends. For the server''s SCIM writes.'`.execute(db);
  await sql`CREATE FUNCTION tenant_disconnect_turn(p_tenant uuid) RETURNS void
    LANGUAGE sql VOLATILE AS $$
      SELECT pg_advisory_xact_lock(hashtextextended('tenant ' || p_tenant::text, 0))
    $$`.execute(db);
  await sql`COMMENT ON FUNCTION tenant_disconnect_turn(uuid) IS
    'Waits for the SCIM writes of the tenant in flight and holds later ones until the transaction ends. For a disconnect.'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION tenant_disconnect_turn(uuid)`.execute(db);
  await sql`DROP FUNCTION tenant_is_connected(uuid)`.execute(db);
}
