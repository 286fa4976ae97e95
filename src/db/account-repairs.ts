// What the portal team does to accounts beside Entra's sync: local overrides
// of role and grade (rule 11), and merges that repair a first sync which
// made a new account for a person the portal already had. Both keep the
// kept account's id, so licences and history stay attached.
import { sql, type Selectable } from 'kysely';
import type { AccountRow } from './columns.js';
import type { AccountAliasesTable, Executor, Role } from './database.js';

export type AliasRow = Selectable<AccountAliasesTable>;

/** An account by id alone (the portal team names accounts by id), with its tenant. */
export async function findAccount(db: Executor, id: string, forUpdate = false): Promise<AccountRow | undefined> {
  let query = db.selectFrom('accounts').selectAll().where('id', '=', id);
  if (forUpdate) query = query.forUpdate();
  return query.executeTakeFirst();
}

/**
 * A tenant's live accounts with this userName or e-mail (in any case) or
 * this Entra object id as external id, oldest first: what an operator looks
 * up to find the ids of a merge.
 */
export async function findAccountsByKey(db: Executor, tenantId: string, key: string, limit: number): Promise<AccountRow[]> {
  return db
    .selectFrom('accounts')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('deleted_at', 'is', null)
    .where((eb) =>
      eb.or([
        eb(sql`lower(user_name)`, '=', sql`lower(${key})`),
        eb(sql`lower(email)`, '=', sql`lower(${key})`),
        eb('external_id', '=', key),
      ]),
    )
    .orderBy('created_at')
    .orderBy('id')
    .limit(limit)
    .execute();
}

/**
 * Whether the sync created this account, rather than adopting one the portal
 * made (rules 2 and 8), which has history of its own from before the sync.
 * The row says so when the sync created it after migration 0019; of a row
 * that does not say, the audit log does: the sync's create wrote a `create`
 * event naming it, in the transaction that made the row, so it is looked for
 * at the row's creation, on the log's (tenant, time) index.
 */
export async function createdBySync(db: Executor, account: Pick<AccountRow, 'tenant_id' | 'id' | 'created_at' | 'created_by_sync'>): Promise<boolean> {
  if (account.created_by_sync !== null) return account.created_by_sync;
  const found = await db
    .selectFrom('audit_events')
    .select('id')
    .where('tenant_id', '=', account.tenant_id)
    .where('at', '>=', account.created_at)
    .where('at', '<', sql<Date>`${account.created_at}::timestamptz + interval '1 minute'`)
    .where('object_type', '=', 'user')
    .where('object_id', '=', account.id)
    .where('action', '=', 'create')
    .where('outcome', '=', 'success')
    .limit(1)
    .executeTakeFirst();
  return found !== undefined;
}

export interface Overrides {
  /** undefined: leave as it is; null: clear. */
  role?: Exclude<Role, 'admin'> | null;
  grade?: string | null;
}

/** Sets or clears an account's overrides; moves its version so a remembered copy is not written over them. */
export async function setOverrides(db: Executor, tenantId: string, id: string, overrides: Overrides): Promise<AccountRow | undefined> {
  return db
    .updateTable('accounts')
    .set((eb) => ({
      ...(overrides.role !== undefined ? { role_override: overrides.role } : {}),
      ...(overrides.grade !== undefined ? { grade_override: overrides.grade } : {}),
      version: eb('version', '+', 1),
      updated_at: sql<Date>`clock_timestamp()`,
    }))
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
}

/** The account an id Entra uses stands for after a merge, if it is an alias. */
export async function findAliasTarget(db: Executor, tenantId: string, id: string): Promise<string | undefined> {
  const row = await db.selectFrom('account_aliases').select('account_id').where('tenant_id', '=', tenantId).where('alias_id', '=', id).executeTakeFirst();
  return row?.account_id;
}

/** Of these ids, the ones that are aliases, with the account each stands for. */
export async function findAliasTargets(db: Executor, tenantId: string, ids: readonly string[]): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  const rows = await db.selectFrom('account_aliases').select(['alias_id', 'account_id']).where('tenant_id', '=', tenantId).where('alias_id', 'in', ids).execute();
  return new Map(rows.map((r) => [r.alias_id, r.account_id]));
}

/**
 * The kept account takes over the absorbed one: its Entra link and synced
 * attributes (the SCIM write columns and document), its memberships (united
 * with the kept account's; a manual flag on either side stays), and its SCIM
 * id as an alias (with the aliases that already pointed to it). The absorbed
 * account is marked deleted: it leaves the portal's view, and a deleted
 * account is never adopted. The feed gets a `merged` row naming both, first. Runs in
 * the caller's transaction, with both rows locked by the caller.
 */
export async function mergeAccountRows(trx: Executor, tenantId: string, keep: string, absorb: string): Promise<AccountRow> {
  // Both accounts' memberships are locked before any is written, class by
  // class and in account order within a class: the order a class write that
  // removes members locks its class's leaving rows in (write-statements.ts,
  // leaving). Written one by one, the merge could hold the kept account's
  // row of a class while such a removal held the absorbed one's, each
  // waiting for the other. Before them, the classes themselves, as the
  // memberships' foreign key will (a key share, which class writes let
  // pass): a class delete holds its class and then deletes its memberships,
  // so a merge holding a membership must never wait for a class. No other
  // membership of the two accounts can appear meanwhile: adding one takes
  // a share of the account, which the caller holds.
  await sql`
    SELECT 1 FROM classes
     WHERE tenant_id = ${tenantId}::uuid
       AND id IN (SELECT class_id FROM class_memberships WHERE tenant_id = ${tenantId}::uuid AND account_id IN (${keep}::uuid, ${absorb}::uuid))
     ORDER BY id
       FOR KEY SHARE`.execute(trx);
  await sql`
    SELECT 1 FROM class_memberships
     WHERE tenant_id = ${tenantId}::uuid AND account_id IN (${keep}::uuid, ${absorb}::uuid)
     ORDER BY class_id, account_id
       FOR UPDATE`.execute(trx);
  // The feed's `merged` row comes before the merge's other rows, so a portal
  // applying them in order re-points its rows to the kept account before it
  // reads the absorbed one's deletion (and drops whatever is still under it).
  await trx.insertInto('change_events').values({ tenant_id: tenantId, object_type: 'account', object_id: keep, related_id: absorb, action: 'merged' }).execute();
  // A portal user added the member to the class on either row; only a disconnect kept it, and Entra has it on neither.
  const byHand = sql`((m.manual AND NOT m.manual_by_disconnect) OR (excluded.manual AND NOT excluded.manual_by_disconnect))`;
  const keptOnly = sql`((m.manual_by_disconnect OR excluded.manual_by_disconnect) AND NOT (m.synced OR excluded.synced))`;
  // Memberships first: the absorbed account's go when it is marked deleted.
  // Two rows of one class become one with both marks. A manual mark that only
  // a disconnect left (manual_by_disconnect) gives way where the other row is
  // Entra's, as when Entra adds the member again (write-statements.ts).
  await sql`
    INSERT INTO class_memberships AS m (tenant_id, class_id, account_id, synced, manual, manual_by_disconnect)
    SELECT tenant_id, class_id, ${keep}::uuid, synced, manual, manual_by_disconnect FROM class_memberships
     WHERE tenant_id = ${tenantId}::uuid AND account_id = ${absorb}::uuid
    ON CONFLICT (tenant_id, class_id, account_id) DO UPDATE
      SET synced = m.synced OR excluded.synced,
          manual = ${byHand} OR ${keptOnly},
          manual_by_disconnect = NOT ${byHand} AND ${keptOnly}`.execute(trx);
  const absorbed = await trx
    .updateTable('accounts')
    .set((eb) => ({ deleted_at: sql<Date>`clock_timestamp()`, version: eb('version', '+', 1), updated_at: sql<Date>`clock_timestamp()` }))
    .where('tenant_id', '=', tenantId)
    .where('id', '=', absorb)
    .returningAll()
    .executeTakeFirstOrThrow();
  const kept = await trx
    .updateTable('accounts')
    .set((eb) => ({
      managed_by: 'sync',
      user_name: absorbed.user_name,
      external_id: absorbed.external_id,
      email: absorbed.email,
      given_name: absorbed.given_name,
      family_name: absorbed.family_name,
      display_name: absorbed.display_name,
      school_id: absorbed.school_id,
      grade: absorbed.grade,
      active: absorbed.active,
      role: absorbed.role,
      // Rule 11: an override set on either account survives the merge; the kept account's own first.
      role_override: sql<AccountRow['role_override']>`coalesce(role_override, ${absorbed.role_override}::text)`,
      grade_override: sql<AccountRow['grade_override']>`coalesce(grade_override, ${absorbed.grade_override}::text)`,
      scim: JSON.stringify(absorbed.scim),
      version: eb('version', '+', 1),
      updated_at: sql<Date>`clock_timestamp()`,
    }))
    .where('tenant_id', '=', tenantId)
    .where('id', '=', keep)
    .returningAll()
    .executeTakeFirstOrThrow();
  await trx.updateTable('account_aliases').set({ account_id: keep }).where('tenant_id', '=', tenantId).where('account_id', '=', absorb).execute();
  await trx.insertInto('account_aliases').values({ tenant_id: tenantId, alias_id: absorb, account_id: keep }).execute();
  return kept;
}
