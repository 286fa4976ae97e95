// Queries on tenants and their settings.
import { sql, type Selectable } from 'kysely';
import { notifyChanges } from './change-notifier.js';
import { inTransaction, type ClassNames, type Db, type Executor, type Role, type TenantsTable } from './database.js';

export type TenantRow = Selectable<TenantsTable>;

export interface NewTenant {
  name: string;
  verifiedDomains?: readonly string[];
}

export async function createTenant(db: Db, tenant: NewTenant): Promise<TenantRow> {
  return db
    .insertInto('tenants')
    .values({
      name: tenant.name,
      verified_domains: [...new Set((tenant.verifiedDomains ?? []).map((d) => d.toLowerCase()))],
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function listTenants(db: Db): Promise<TenantRow[]> {
  return db.selectFrom('tenants').selectAll().orderBy('created_at').orderBy('id').execute();
}

export async function findTenant(db: Db, id: string): Promise<TenantRow | undefined> {
  return db.selectFrom('tenants').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function countTenants(db: Db): Promise<number> {
  const row = await db
    .selectFrom('tenants')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * A tenant's settings as the SCIM rules read them, from the credential check
 * (credentials.ts) to the handlers: one value per tenant and credential
 * check, shared by its requests.
 */
export interface TenantSettings {
  readonly id: string;
  readonly roleMapping: Readonly<Record<string, string>>;
  /** Verified e-mail domains (lower-case), for adoption (rule 2). */
  readonly verifiedDomains: readonly string[];
  readonly classNames: ClassNames;
}

/** A change of settings; what is left out stays. */
export interface TenantSettingsChange {
  verifiedDomains?: readonly string[];
  roleMapping?: Readonly<Record<string, Role>>;
  retentionDays?: number;
  name?: string;
  classNames?: ClassNames;
  /** The Entra tenant id to bind to; null unbinds (and stops accepting Entra's own token). */
  entraTenantId?: string | null;
  acceptEntraToken?: boolean;
}

export async function updateTenantSettings(db: Db, id: string, settings: TenantSettingsChange): Promise<TenantRow | undefined> {
  return db
    .updateTable('tenants')
    .set({
      ...(settings.name !== undefined ? { name: settings.name } : {}),
      ...(settings.verifiedDomains !== undefined
        ? { verified_domains: [...new Set(settings.verifiedDomains.map((d) => d.toLowerCase()))] }
        : {}),
      ...(settings.roleMapping !== undefined ? { role_mapping: JSON.stringify(settings.roleMapping) } : {}),
      ...(settings.retentionDays !== undefined ? { retention_days: settings.retentionDays } : {}),
      ...(settings.classNames !== undefined ? { class_names: settings.classNames } : {}),
      ...(settings.entraTenantId !== undefined ? { entra_tenant_id: settings.entraTenantId?.toLowerCase() ?? null } : {}),
      ...(settings.acceptEntraToken !== undefined ? { accept_entra_token: settings.acceptEntraToken } : {}),
      // Without a binding there is no Entra tenant whose token could be accepted.
      ...(settings.entraTenantId === null ? { accept_entra_token: false } : {}),
      updated_at: new Date(),
    })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
}

/**
 * Rule 8: revokes every credential of the tenant and turns its synced accounts
 * and classes into manual, editable ones. Nothing is deleted.
 */
export async function disconnectTenant(db: Db, id: string): Promise<{ accounts: number; classes: number; credentials: number } | undefined> {
  return inTransaction(db, async (trx) => {
    // First the tenant's turn (migration 0015): it waits for the SCIM writes
    // in flight, so the rows turned manual below include every write that
    // got in first, and later writes wait for this one to end.
    await sql`SELECT tenant_disconnect_turn(${id}::uuid)`.execute(trx);
    const tenant = await trx.updateTable('tenants').set({ disconnected_at: new Date(), updated_at: new Date() }).where('id', '=', id).returning('id').executeTakeFirst();
    if (!tenant) return undefined;
    const credentials = await trx
      .updateTable('credentials')
      .set({ revoked_at: new Date() })
      .where('tenant_id', '=', id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    const accounts = await trx
      .updateTable('accounts')
      .set((eb) => ({ managed_by: 'manual', version: eb('version', '+', 1), updated_at: new Date() }))
      .where('tenant_id', '=', id)
      .where('managed_by', '=', 'sync')
      // A deleted account stays as it was deleted: it is in no view, and nothing adopts it.
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    const classes = await trx
      .updateTable('classes')
      .set((eb) => ({ managed_by: 'manual', version: eb('version', '+', 1), updated_at: new Date() }))
      .where('tenant_id', '=', id)
      .where('managed_by', '=', 'sync')
      .executeTakeFirst();
    // Memberships Entra made become the portal's own, so the classes keep them;
    // those no portal user added are marked, so that Entra adding the member
    // again after a reconnect makes the membership Entra's again.
    await trx
      .updateTable('class_memberships')
      .set({ manual: true, synced: false, manual_by_disconnect: sql<boolean>`NOT manual` })
      .where('tenant_id', '=', id)
      .where('synced', '=', true)
      .execute();
    // Delivered when the transaction commits.
    await notifyChanges(trx);
    return {
      accounts: Number(accounts.numUpdatedRows),
      classes: Number(classes.numUpdatedRows),
      credentials: Number(credentials.numUpdatedRows),
    };
  });
}

export async function connectTenant(db: Db, id: string): Promise<TenantRow | undefined> {
  return db.updateTable('tenants').set({ disconnected_at: null, updated_at: new Date() }).where('id', '=', id).returningAll().executeTakeFirst();
}

export interface DomainOwner {
  domain: string;
  tenantId: string;
  name: string;
}

/** Which tenants (other than exceptTenantId) hold any of these verified domains. */
export async function findDomainOwners(db: Executor, domains: readonly string[], exceptTenantId?: string): Promise<DomainOwner[]> {
  if (domains.length === 0) return [];
  const wanted = [...new Set(domains.map((d) => d.toLowerCase()))];
  const rows = await db
    .selectFrom('tenants')
    .select(['id', 'name', 'verified_domains'])
    .where(sql<boolean>`verified_domains && ${sql.val(wanted)}::text[]`)
    .$if(exceptTenantId !== undefined, (qb) => qb.where('id', '<>', exceptTenantId ?? ''))
    .orderBy('created_at')
    .execute();
  return rows.flatMap((row) => row.verified_domains.filter((d) => wanted.includes(d)).map((domain) => ({ domain, tenantId: row.id, name: row.name })));
}

/** The trigger of migration 0006 refused a domain another tenant holds. */
export const DOMAIN_OWNER_CONSTRAINT = 'tenants_verified_domain_owner';

/** The unique index of migration 0009: an Entra tenant belongs to one tenant at most. */
export const ENTRA_TENANT_CONSTRAINT = 'tenants_entra_tenant_id_key';

/** The tenant (other than exceptTenantId) bound to this Entra tenant id, if any. */
export async function findEntraTenantOwner(db: Executor, entraTenantId: string, exceptTenantId?: string): Promise<{ tenantId: string; name: string } | undefined> {
  const row = await db
    .selectFrom('tenants')
    .select(['id', 'name'])
    .where('entra_tenant_id', '=', entraTenantId.toLowerCase())
    .$if(exceptTenantId !== undefined, (qb) => qb.where('id', '<>', exceptTenantId ?? ''))
    .executeTakeFirst();
  return row ? { tenantId: row.id, name: row.name } : undefined;
}
