// Account operations the CLI and the admin API share: local overrides of
// role and grade on synced accounts (rule 11, as in Apple School Manager),
// and the merge that repairs a first sync which made a new account for a
// person the portal already had. Each validates, writes in one transaction
// and records its audit event.
import { createdBySync, findAccount, findAccountsByKey, findAliasTarget, mergeAccountRows, setOverrides, type Overrides } from '../db/account-repairs.js';
import { recordAudit } from '../db/audit.js';
import { notifyChanges } from '../db/change-notifier.js';
import type { AccountRow } from '../db/columns.js';
import { inTransaction, type Db, type Executor, type Role } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { lockConnectedTenant } from '../db/write-statements.js';
import { auditVia, type Actor } from './actor.js';
import { ServiceError } from './errors.js';
import { localPart, personNames } from './person-keys.js';

const OVERRIDE_ROLES: readonly Role[] = ['student', 'teacher', 'staff'];
const MAX_GRADE = 512;

export function parseOverrideRole(value: unknown): Exclude<Role, 'admin'> {
  const role = typeof value === 'string' ? value.trim().toLowerCase() : '';
  if (!OVERRIDE_ROLES.includes(role as Role)) {
    throw new ServiceError('invalid', `The role must be one of ${OVERRIDE_ROLES.join(', ')} (an override never makes an admin).`);
  }
  return role as Exclude<Role, 'admin'>;
}

export function parseOverrideGrade(value: unknown): string {
  const grade = typeof value === 'string' ? value.trim() : '';
  if (grade === '' || grade.length > MAX_GRADE) throw new ServiceError('invalid', `The grade must be 1 to ${MAX_GRADE} characters.`);
  return grade;
}

function accountId(value: string, what: string): string {
  if (!isUuid(value)) throw new ServiceError('invalid', `"${String(value)}" is not ${what} id (a UUID).`);
  return value.toLowerCase();
}

/** A live account that sync manages: only those have synced values to override. */
async function syncedAccount(db: Executor, id: string, forUpdate = false): Promise<AccountRow> {
  const row = await findAccount(db, accountId(id, 'an account'), forUpdate);
  if (!row || row.deleted_at !== null) throw new ServiceError('not-found', `No account ${id}.`);
  return row;
}

/** An account's values as the CLI and the admin API show them: each overridable field with where it comes from. */
export function accountView(row: AccountRow) {
  const source = (override: unknown) => (override !== null ? 'override' : row.managed_by === 'sync' ? 'sync' : 'portal');
  return {
    id: row.id,
    tenantId: row.tenant_id,
    userName: row.user_name,
    managedBySync: row.managed_by === 'sync',
    active: row.active,
    role: row.role_override ?? row.role,
    roleSource: source(row.role_override),
    syncedRole: row.role,
    grade: row.grade_override ?? row.grade,
    gradeSource: source(row.grade_override),
    syncedGrade: row.grade,
  };
}

export interface OverrideChange extends Overrides {
  /** Clear both overrides (what Entra last sent shows again). */
  clear?: boolean;
}

/** Sets or clears role and grade overrides of a synced account; sync never writes over them. */
export async function changeOverrides(db: Db, id: string, change: OverrideChange, actor: Actor): Promise<AccountRow> {
  const overrides: Overrides = change.clear ? { role: null, grade: null } : { ...(change.role !== undefined ? { role: change.role } : {}), ...(change.grade !== undefined ? { grade: change.grade } : {}) };
  if (overrides.role === undefined && overrides.grade === undefined) throw new ServiceError('invalid', 'Nothing to change: give a role, a grade, or clear the overrides.');
  const changed = await inTransaction(db, async (trx) => {
    const before = await syncedAccount(trx, id, true);
    if (before.role === 'admin') throw new ServiceError('conflict', `Account ${before.id} is a portal admin; its role is the portal's, and sync never touches it.`);
    if (before.managed_by !== 'sync') {
      throw new ServiceError('conflict', `Account ${before.id} is not managed by sync; change its role and grade in the portal directly.`);
    }
    // An override set to what it is already changes nothing: no write, no event for the portal to follow.
    const moving: Overrides = {
      ...(overrides.role !== undefined && overrides.role !== before.role_override ? { role: overrides.role } : {}),
      ...(overrides.grade !== undefined && overrides.grade !== before.grade_override ? { grade: overrides.grade } : {}),
    };
    if (moving.role === undefined && moving.grade === undefined) return before;
    const row = await setOverrides(trx, before.tenant_id, before.id, moving);
    if (!row) throw new ServiceError('not-found', `No account ${id}.`);
    const changed = [...(moving.role !== undefined ? ['role'] : []), ...(moving.grade !== undefined ? ['grade'] : [])];
    await recordAudit(trx, {
      tenantId: row.tenant_id,
      action: 'override',
      objectType: 'user',
      objectId: row.id,
      objectRef: row.user_name,
      outcome: 'success',
      details: { changed, cleared: change.clear === true, ...auditVia(actor) },
    });
    return row;
  });
  await notifyChanges(db);
  return changed;
}

export interface Merged {
  kept: AccountRow;
  absorbedId: string;
  /** The absorbed account as it was before the merge (undefined when the pair was merged before). */
  absorbed?: AccountRow;
  /** The pair was merged before: nothing was written. */
  alreadyMerged: boolean;
  /** Only checked and shown: the merge was made and rolled back. */
  dryRun: boolean;
  /** What suggests the two accounts may be two people, for whoever merges them to check. */
  cautions: string[];
}

interface MergeResult {
  row: AccountRow;
  /** Both accounts as they were before the merge; none when the pair was merged before. */
  before?: { kept: AccountRow; absorbed: AccountRow };
  alreadyMerged: boolean;
}

/** The rolled-back result of a dry run, carried out of its transaction. */
class DryRun extends Error {
  constructor(readonly result: MergeResult) {
    super('dry run');
  }
}


/**
 * Why two accounts to merge may be two people: a merge cannot be undone, and
 * a wrong id gives one pupil another's history. Neither blocks a merge (a
 * pupil may change both name and address); whoever merges is told.
 */
export function mergeCautions(keep: AccountRow, absorb: AccountRow): string[] {
  const cautions: string[] = [];
  const names = (row: AccountRow) => new Set(personNames(row.given_name, row.family_name, row.display_name));
  const parts = (row: AccountRow) => new Set([row.user_name, row.email].flatMap((a) => (a === null ? [] : [localPart(a.toLowerCase())])));
  const shared = <T>(a: Set<T>, b: Set<T>) => [...a].some((x) => b.has(x));
  if (!shared(names(keep), names(absorb)) && !shared(parts(keep), parts(absorb))) {
    cautions.push(`The two accounts share no name and no address: ${describe(keep)} and ${describe(absorb)}. Check that they are one person.`);
  }
  if (keep.role !== absorb.role) {
    cautions.push(`Account ${keep.id} is a ${keep.role} and ${absorb.id} a ${absorb.role}: the kept account takes Entra's role, ${absorb.role}.`);
  }
  return cautions;
}

const describe = (row: AccountRow): string => `${row.user_name}${row.display_name !== null ? ` "${row.display_name}"` : ''}`;

/**
 * Merges `absorb` (the account Entra created at the first sync) into `keep`
 * (the portal's existing account): see mergeAccountRows. Refused for admins,
 * accounts of two tenants, a manual `absorb` (nothing of Entra's to take
 * over), an `absorb` the sync adopted rather than made (its own history
 * would pass to `keep`), and a `keep` linked to another Entra object.
 */
export async function mergeAccounts(db: Db, keepId: string, absorbId: string, actor: Actor, options: { dryRun?: boolean } = {}): Promise<Merged> {
  const keep = accountId(keepId, 'an account');
  const absorb = accountId(absorbId, 'an account');
  if (keep === absorb) throw new ServiceError('invalid', 'An account cannot be merged into itself.');
  const dryRun = options.dryRun === true;
  const run = inTransaction(db, async (trx): Promise<MergeResult> => {
    // The tenant's turn first, before any row lock, as a SCIM write takes it
    // (rule 8): a disconnect waits for this merge and then turns the kept
    // account manual, or this merge waits for the disconnect and finds no
    // synced account to take over. Without it, a kept account made synced
    // here could outlive the disconnect.
    const tenantId = (await findAccount(trx, absorb))?.tenant_id;
    if (tenantId !== undefined) await lockConnectedTenant(trx, tenantId);
    // Both rows locked, in one order, so two merges of one pair take turns.
    const [first, second] = [keep, absorb].sort();
    const rows = new Map<string, AccountRow>();
    for (const id of [first, second]) {
      const row = id === undefined ? undefined : await findAccount(trx, id, true);
      if (row) rows.set(row.id, row);
    }
    const old = rows.get(keep);
    const added = rows.get(absorb);
    if (!old || old.deleted_at !== null) throw new ServiceError('not-found', `No account ${keep} to keep.`);
    if (!added || added.deleted_at !== null) {
      // Doing again what is done is no error: the absorbed id already stands for the kept account.
      if ((await findAliasTarget(trx, old.tenant_id, absorb)) === keep) return { row: old, alreadyMerged: true };
      throw new ServiceError('not-found', `No account ${absorb} to merge.`);
    }
    if (old.tenant_id !== added.tenant_id) throw new ServiceError('conflict', 'The two accounts belong to different tenants; only accounts of one tenant can be merged.');
    for (const row of [old, added]) {
      if (row.role === 'admin') throw new ServiceError('conflict', `Account ${row.id} is a portal admin; sync never touches admins, and neither does a merge.`);
    }
    if (added.managed_by !== 'sync') {
      throw new ServiceError('conflict', `Account ${added.id} is not managed by sync: there is no Entra account to take over. Merge the account Entra created into the one to keep.`);
    }
    if (!(await createdBySync(trx, added))) {
      throw new ServiceError(
        'conflict',
        `Account ${added.id} was the portal's before the sync took it over (rules 2 and 8): it has history of its own, which a merge would hand to account ${old.id}. Absorb only an account the sync created.`,
      );
    }
    if (old.external_id !== null && old.external_id !== added.external_id) {
      throw new ServiceError('conflict', `Account ${old.id} is linked to another Entra object (${old.external_id}); it cannot take over a second one.`);
    }
    const row = await mergeAccountRows(trx, old.tenant_id, old.id, added.id);
    // Everything a merge does, then undone: what it would leave, exactly.
    if (dryRun) throw new DryRun({ row, before: { kept: old, absorbed: added }, alreadyMerged: false });
    await recordAudit(trx, {
      tenantId: row.tenant_id,
      action: 'merge',
      objectType: 'user',
      objectId: row.id,
      objectRef: row.user_name,
      outcome: 'success',
      details: { kept: { id: old.id, userName: old.user_name }, absorbed: { id: added.id, userName: added.user_name }, ...auditVia(actor) },
    });
    return { row, before: { kept: old, absorbed: added }, alreadyMerged: false };
  });
  let merged: MergeResult;
  try {
    merged = await run;
  } catch (error) {
    if (!(error instanceof DryRun)) throw error;
    merged = error.result;
  }
  if (!merged.alreadyMerged && !dryRun) await notifyChanges(db);
  const { before } = merged;
  return {
    kept: merged.row,
    absorbedId: absorb,
    ...(before ? { absorbed: before.absorbed } : {}),
    alreadyMerged: merged.alreadyMerged,
    dryRun,
    // Of the accounts as they were: the kept one before it took anything over.
    cautions: before ? mergeCautions(before.kept, before.absorbed) : [],
  };
}

function objectBody(body: unknown, fields: readonly string[]): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ServiceError('invalid', 'The body must be a JSON object.');
  const unknown = Object.keys(body).filter((k) => !fields.includes(k));
  if (unknown.length > 0) throw new ServiceError('invalid', `Unknown field ${unknown.join(', ')}; give ${fields.join(' and ')}.`);
  return body as Record<string, unknown>;
}

/** The admin API's body of an override change: role and grade, each a value to set or null to clear. */
export function parseOverrideChange(body: unknown): OverrideChange {
  const fields = objectBody(body, ['role', 'grade']);
  return {
    ...(fields.role !== undefined ? { role: fields.role === null ? null : parseOverrideRole(fields.role) } : {}),
    ...(fields.grade !== undefined ? { grade: fields.grade === null ? null : parseOverrideGrade(fields.grade) } : {}),
  };
}

/** The admin API's body of a merge: the account to keep and the one to absorb. */
export function parseMerge(body: unknown): { keep: string; absorb: string; dryRun: boolean } {
  const fields = objectBody(body, ['keep', 'absorb', 'dryRun']);
  if (typeof fields.keep !== 'string' || typeof fields.absorb !== 'string') throw new ServiceError('invalid', 'Give keep and absorb, the ids of the two accounts.');
  if (fields.dryRun !== undefined && typeof fields.dryRun !== 'boolean') throw new ServiceError('invalid', 'dryRun must be true or false.');
  return { keep: fields.keep, absorb: fields.absorb, dryRun: fields.dryRun === true };
}

/** Accounts one lookup lists at most. */
const FOUND_AT_MOST = 20;

/**
 * A tenant's live accounts by userName, e-mail or Entra object id, oldest
 * first, with what tells a merge's two sides apart: which the sync created
 * (it can be absorbed) and which the portal had (it can be kept).
 */
export async function findAccounts(db: Db, tenantId: string, key: string) {
  const tenant = accountId(tenantId, 'a tenant');
  const wanted = key.trim();
  if (wanted === '' || wanted.length > 512) throw new ServiceError('invalid', 'Give a userName, an e-mail address or an Entra object id, up to 512 characters.');
  const rows = await findAccountsByKey(db, tenant, wanted, FOUND_AT_MOST);
  return Promise.all(
    rows.map(async (row) => ({
      ...accountView(row),
      email: row.email,
      displayName: row.display_name,
      externalId: row.external_id,
      createdAt: row.created_at,
      createdBySync: row.managed_by === 'sync' ? await createdBySync(db, row) : false,
    })),
  );
}

/** An account by id, as the admin API shows it. */
export async function showAccount(db: Db, id: string): Promise<AccountRow> {
  const row = await findAccount(db, accountId(id, 'an account'));
  if (!row) throw new ServiceError('not-found', `No account ${id}.`);
  return row;
}
