// Queries on credentials: Secret Tokens and OAuth clients of a tenant.
import { sql, type Selectable } from 'kysely';
import type { CredentialsTable, Db, Executor } from './database.js';
import type { TenantSettings } from './tenants.js';

export type CredentialRow = Selectable<CredentialsTable>;

export interface NewCredential {
  tenantId: string;
  kind: 'token' | 'client';
  label?: string | null;
  secretHash?: string | null;
  expiresAt?: Date | null;
}

export async function createCredential(db: Db, credential: NewCredential): Promise<CredentialRow> {
  return db
    .insertInto('credentials')
    .values({
      tenant_id: credential.tenantId,
      kind: credential.kind,
      label: credential.label ?? null,
      secret_hash: credential.secretHash ?? null,
      expires_at: credential.expiresAt ?? null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function listCredentials(db: Db, tenantId: string): Promise<CredentialRow[]> {
  return db
    .selectFrom('credentials')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
}

export interface ActiveCredential {
  id: string;
  kind: 'token' | 'client';
  tenant: TenantSettings;
}

/** The credential with its tenant's settings, as the request authenticator needs it. */
export async function findActiveCredential(
  db: Db,
  tenantId: string,
  id: string,
): Promise<ActiveCredential | undefined> {
  const row = await db
    .selectFrom('credentials as c')
    .innerJoin('tenants as t', 't.id', 'c.tenant_id')
    .select(['c.id', 'c.tenant_id', 'c.kind', 't.role_mapping', 't.verified_domains', 't.class_names'])
    .where('c.tenant_id', '=', tenantId)
    .where('c.id', '=', id)
    .where('c.revoked_at', 'is', null)
    .where('t.disconnected_at', 'is', null)
    .where((eb) => eb.or([eb('c.expires_at', 'is', null), eb('c.expires_at', '>', new Date())]))
    .executeTakeFirst();
  if (!row) return undefined;
  const tenant = { id: row.tenant_id, roleMapping: row.role_mapping, verifiedDomains: row.verified_domains, classNames: row.class_names };
  return { id: row.id, kind: row.kind, tenant: Object.freeze(tenant) };
}

export interface EntraTokenTenant {
  tenant: TenantSettings;
  /** The tenant allows Entra's own token. */
  accepts: boolean;
  connected: boolean;
}

/**
 * Every tenant bound to an Entra tenant, by that Entra tenant id, with whether
 * it accepts Entra's own token, as the request authenticator needs them: read
 * whole, so a token naming an Entra tenant no tenant is bound to costs no
 * query (one per school, a few hundred rows at most).
 */
export async function listEntraTokenTenants(db: Db): Promise<Map<string, EntraTokenTenant>> {
  const rows = await db
    .selectFrom('tenants')
    .select(['id', 'entra_tenant_id', 'role_mapping', 'verified_domains', 'class_names', 'accept_entra_token', 'disconnected_at'])
    .where('entra_tenant_id', 'is not', null)
    .execute();
  const bound = new Map<string, EntraTokenTenant>();
  for (const row of rows) {
    if (row.entra_tenant_id === null) continue;
    const tenant = { id: row.id, roleMapping: row.role_mapping, verifiedDomains: row.verified_domains, classNames: row.class_names };
    bound.set(row.entra_tenant_id, { tenant: Object.freeze(tenant), accepts: row.accept_entra_token, connected: row.disconnected_at === null });
  }
  return bound;
}

/** Revokes a credential by id (of the given kind); returns it, or undefined when no such credential exists. */
export async function revokeCredential(db: Db, id: string, kind?: 'token' | 'client'): Promise<CredentialRow | undefined> {
  return db
    .updateTable('credentials')
    .set((eb) => ({ revoked_at: eb.fn.coalesce('revoked_at', eb.val(new Date())) }))
    .where('id', '=', id)
    .$if(kind !== undefined, (qb) => qb.where('kind', '=', kind ?? 'token'))
    .returningAll()
    .executeTakeFirst();
}

export interface ClientCredential {
  id: string;
  tenantId: string;
  secretHash: string | null;
}

/** A live OAuth client by its client id (the credential id), with the hash to verify its secret against. */
export async function findActiveClient(db: Db, id: string): Promise<ClientCredential | undefined> {
  const row = await db
    .selectFrom('credentials as c')
    .innerJoin('tenants as t', 't.id', 'c.tenant_id')
    .select(['c.id', 'c.tenant_id', 'c.secret_hash'])
    .where('c.id', '=', id)
    .where('c.kind', '=', 'client')
    .where('c.revoked_at', 'is', null)
    .where('t.disconnected_at', 'is', null)
    .where((eb) => eb.or([eb('c.expires_at', 'is', null), eb('c.expires_at', '>', new Date())]))
    .executeTakeFirst();
  return row ? { id: row.id, tenantId: row.tenant_id, secretHash: row.secret_hash } : undefined;
}

/** Records when a client last obtained a token. */
export async function markCredentialUsed(db: Db, tenantId: string, id: string): Promise<void> {
  await db
    .updateTable('credentials')
    .set({ last_used_at: new Date() })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .execute();
}

export async function findCredential(db: Executor, id: string): Promise<CredentialRow | undefined> {
  return db.selectFrom('credentials').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Revokes a live credential; undefined when there is none of that id (and kind) that is not revoked yet. */
export async function revokeLiveCredential(db: Executor, id: string, kind?: 'token' | 'client'): Promise<CredentialRow | undefined> {
  return db
    .updateTable('credentials')
    .set({ revoked_at: new Date() })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .$if(kind !== undefined, (qb) => qb.where('kind', '=', kind ?? 'token'))
    .returningAll()
    .executeTakeFirst();
}

/**
 * Records that a credential was used, unless another request (on any
 * instance) already did within the last minute: the statement then changes
 * nothing, so a fleet writes each credential's last use about once a minute.
 */
export async function recordCredentialUse(db: Executor, tenantId: string, id: string): Promise<void> {
  await db
    .updateTable('credentials')
    .set({ last_used_at: sql<Date>`now()` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', sql<Date>`now() - interval '1 minute'`)]))
    .execute();
}
