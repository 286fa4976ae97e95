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

/** Ends a status page session: it stays refused until it would have expired. Ended sessions past their expiry go. */
export async function endAdminSession(db: Db, credentialId: string, sessionId: string, expiresAt: Date): Promise<void> {
  await db.deleteFrom('admin_session_ends').where('expires_at', '<', new Date()).execute();
  await db
    .insertInto('admin_session_ends')
    .values({ credential_id: credentialId, session_id: sessionId, expires_at: expiresAt })
    .onConflict((oc) => oc.doNothing())
    .execute();
}

/** Whether a status page session was ended by a sign-out. */
export async function adminSessionEnded(db: Db, credentialId: string, sessionId: string): Promise<boolean> {
  const row = await db.selectFrom('admin_session_ends').select('session_id').where('credential_id', '=', credentialId).where('session_id', '=', sessionId).executeTakeFirst();
  return row !== undefined;
}
