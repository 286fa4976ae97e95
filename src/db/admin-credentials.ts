// Credentials of the admin API (/admin), separate from tenants' SCIM credentials.
import type { Selectable } from 'kysely';
import type { AdminCredentialsTable, Db } from './database.js';

export type AdminCredentialRow = Selectable<AdminCredentialsTable>;

export async function createAdminCredential(db: Db, label: string | null, expiresAt: Date | null): Promise<AdminCredentialRow> {
  return db.insertInto('admin_credentials').values({ label, expires_at: expiresAt }).returningAll().executeTakeFirstOrThrow();
}

export async function findActiveAdminCredential(db: Db, id: string): Promise<AdminCredentialRow | undefined> {
  return db
    .selectFrom('admin_credentials')
    .selectAll()
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', new Date())]))
    .executeTakeFirst();
}

export async function revokeAdminCredential(db: Db, id: string): Promise<AdminCredentialRow | undefined> {
  return db
    .updateTable('admin_credentials')
    .set((eb) => ({ revoked_at: eb.fn.coalesce('revoked_at', eb.val(new Date())) }))
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
}

export async function listAdminCredentials(db: Db): Promise<AdminCredentialRow[]> {
  return db.selectFrom('admin_credentials').selectAll().orderBy('created_at').execute();
}

export async function findAdminCredential(db: Db, id: string): Promise<AdminCredentialRow | undefined> {
  return db.selectFrom('admin_credentials').selectAll().where('id', '=', id).executeTakeFirst();
}
