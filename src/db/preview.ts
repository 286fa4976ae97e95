// The reads of the first-sync preview: for a whole Entra export at once, the
// accounts the server's per-create reads (accounts.ts: findAdminCollision,
// findByExternalId, findAdoptableByAddress) and Entra's userName
// lookup would find, each as one set-based statement under the same
// conditions. They run in one read-only snapshot and write nothing.
import { sql } from 'kysely';
import type { AccountRow } from './columns.js';
import type { Executor } from './database.js';

/** An account with its userName and e-mail as PostgreSQL's lower() has them, the form the server's reads compare. */
export type KeyedAccount = AccountRow & { user_name_key: string; email_key: string | null };

export interface PreviewTenant {
  id: string;
  name: string;
  verifiedDomains: string[];
  roleMapping: Record<string, string>;
}

export interface PreviewAccounts {
  tenant: PreviewTenant;
  /** Synced, live accounts Entra would find for a user: by its object id (externalId) or its userName. */
  syncedByExternalId: KeyedAccount[];
  /** With the userName as the file has it, which Entra's lookup compares in lower case on both sides. */
  syncedByUserName: (KeyedAccount & { input: string })[];
  /** Rule 3: the tenant's live admins; few, and each create checks its addresses against all of them. */
  admins: KeyedAccount[];
  /** Rule 8: manual, live, non-admin accounts with one of the object ids, oldest first. */
  adoptableByExternalId: KeyedAccount[];
  /** Rule 2's candidates: manual, live, non-admin accounts linked to no Entra object (in no order). */
  unlinked: KeyedAccount[];
  /** Each address of the export as lower() folds it: the form of the keys above (ASCII letters only where the ctype is C). */
  folded: Map<string, string>;
}

const KEYS = sql`lower(a.user_name) AS user_name_key, lower(a.email) AS email_key`;

/**
 * Everything the preview decides on, read in one repeatable-read, read-only
 * transaction so the answers agree with each other and nothing is written.
 * Undefined when there is no such tenant.
 */
export async function readPreviewAccounts(
  db: Executor,
  tenantId: string,
  users: { externalIds: readonly string[]; userNames: readonly string[]; addresses: readonly string[] },
): Promise<PreviewAccounts | undefined> {
  const read = async (trx: Executor): Promise<PreviewAccounts | undefined> => {
    const tenant = await trx
      .selectFrom('tenants')
      .select(['id', 'name', 'verified_domains', 'role_mapping'])
      .where('id', '=', tenantId)
      .executeTakeFirst();
    if (!tenant) return undefined;
    // Arrays of 100,000 values make the planner expect huge joins and compile
    // them to machine code first, which costs more than running them.
    await sql`SET LOCAL jit = off`.execute(trx);
    const externalIds = sql.val([...new Set(users.externalIds)]);
    const userNames = sql.val([...new Set(users.userNames)]);
    const [syncedByExternalId, syncedByUserName, admins, adoptableByExternalId, unlinked, folded] = [
      await sql<KeyedAccount>`
        SELECT a.*, ${KEYS} FROM accounts a
         WHERE a.tenant_id = ${tenantId}::uuid AND a.managed_by = 'sync' AND a.deleted_at IS NULL
           AND a.external_id = ANY(${externalIds}::text[])`.execute(trx),
      await sql<KeyedAccount & { input: string }>`
        SELECT u.input, a.*, ${KEYS} FROM unnest(${userNames}::text[]) AS u(input)
          JOIN accounts a ON lower(a.user_name) = lower(u.input)
         WHERE a.tenant_id = ${tenantId}::uuid AND a.managed_by = 'sync' AND a.deleted_at IS NULL`.execute(trx),
      await sql<KeyedAccount>`
        SELECT a.*, ${KEYS} FROM accounts a
         WHERE a.tenant_id = ${tenantId}::uuid AND a.role = 'admin' AND a.deleted_at IS NULL`.execute(trx),
      await sql<KeyedAccount>`
        SELECT a.*, ${KEYS} FROM accounts a
         WHERE a.tenant_id = ${tenantId}::uuid AND a.managed_by = 'manual' AND a.role <> 'admin' AND a.deleted_at IS NULL
           AND a.external_id = ANY(${externalIds}::text[])
         ORDER BY a.created_at, a.id`.execute(trx),
      await sql<KeyedAccount>`
        SELECT a.*, ${KEYS} FROM accounts a
         WHERE a.tenant_id = ${tenantId}::uuid AND a.managed_by = 'manual' AND a.role <> 'admin' AND a.deleted_at IS NULL
           AND a.external_id IS NULL`.execute(trx),
      await sql<{ input: string; key: string }>`
        SELECT u.input, lower(u.input) AS key FROM unnest(${sql.val([...new Set(users.addresses)])}::text[]) AS u(input)`.execute(trx),
    ];
    return {
      tenant: { id: tenant.id, name: tenant.name, verifiedDomains: tenant.verified_domains, roleMapping: tenant.role_mapping },
      syncedByExternalId: syncedByExternalId.rows,
      syncedByUserName: syncedByUserName.rows,
      admins: admins.rows,
      adoptableByExternalId: adoptableByExternalId.rows,
      unlinked: unlinked.rows,
      folded: new Map(folded.rows.map((r) => [r.input, r.key])),
    };
  };
  if (db.isTransaction) return read(db);
  return db.transaction().setIsolationLevel('repeatable read').setAccessMode('read only').execute(read);
}

