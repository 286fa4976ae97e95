// Queries on tenants and their settings.
import type { Selectable } from 'kysely';
import type { Db, Role, TenantsTable } from './database.js';

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

export interface TenantSettings {
  verifiedDomains?: readonly string[];
  roleMapping?: Readonly<Record<string, Role>>;
  retentionDays?: number;
  name?: string;
}

export async function updateTenantSettings(db: Db, id: string, settings: TenantSettings): Promise<TenantRow | undefined> {
  return db
    .updateTable('tenants')
    .set({
      ...(settings.name !== undefined ? { name: settings.name } : {}),
      ...(settings.verifiedDomains !== undefined
        ? { verified_domains: [...new Set(settings.verifiedDomains.map((d) => d.toLowerCase()))] }
        : {}),
      ...(settings.roleMapping !== undefined ? { role_mapping: JSON.stringify(settings.roleMapping) } : {}),
      ...(settings.retentionDays !== undefined ? { retention_days: settings.retentionDays } : {}),
      updated_at: new Date(),
    })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
}
