// Rule 13: a tenant is bound to one Entra tenant id, and an Entra tenant to
// one of our tenants at most (a unique index, so two claims at once cannot
// both pass). The binding lets the portal link a Microsoft login by its tid
// and oid claims (portal_sign_in_account), never by an e-mail claim, and lets
// a tenant that chooses so accept the bearer token Entra signs itself.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE tenants
    ADD COLUMN entra_tenant_id uuid,
    ADD COLUMN accept_entra_token boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT tenants_entra_token_needs_binding CHECK (NOT accept_entra_token OR entra_tenant_id IS NOT NULL)`.execute(db);
  await sql`CREATE UNIQUE INDEX tenants_entra_tenant_id_key ON tenants (entra_tenant_id)`.execute(db);

  // The one account a Microsoft login stands for: in the connected tenant
  // bound to the token's tid, live, active, with the token's oid as its
  // external id (Entra's objectId). Two such accounts are no answer at all:
  // a sign-in must never have to choose.
  await sql`CREATE FUNCTION portal_sign_in_account(tid uuid, oid text)
    RETURNS TABLE (tenant_id uuid, id uuid, role text)
    LANGUAGE sql STABLE AS $$
      SELECT m.tenant_id, m.id, m.role
        FROM (SELECT a.tenant_id, a.id, a.role, count(*) OVER () AS matches
                FROM tenants t
                JOIN accounts a ON a.tenant_id = t.id
               WHERE t.entra_tenant_id = portal_sign_in_account.tid
                 AND t.disconnected_at IS NULL
                 AND a.external_id = portal_sign_in_account.oid
                 AND a.deleted_at IS NULL
                 AND a.active) m
       WHERE m.matches = 1
    $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION portal_sign_in_account(uuid, text)`.execute(db);
  await sql`DROP INDEX tenants_entra_tenant_id_key`.execute(db);
  await sql`ALTER TABLE tenants
    DROP CONSTRAINT tenants_entra_token_needs_binding,
    DROP COLUMN accept_entra_token,
    DROP COLUMN entra_tenant_id`.execute(db);
}
