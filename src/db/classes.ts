// Queries on classes and class memberships. SCIM sees synced classes only;
// member changes are set operations in SQL that never read the member list.
import { sql, type Expression, type Selectable, type SqlBool } from 'kysely';
import { conflict } from '../errors.js';
import { LIVE_BY_ID, type Actor } from './accounts.js';
import { auditRecorded } from './audit.js';
import { fixedStatement, preparedOn, type ClassesTable, type Executor, type JsonObject } from './database.js';
import { isUniqueViolation } from './errors.js';
import { firstPage, lookupCondition, readPage, statementPerLookup, type ColumnLookup, type LookupParams, type Page } from './paging.js';

export type ClassRow = Selectable<ClassesTable>;

export interface ClassValues {
  display_name: string;
  external_id: string | null;
  school_id: string | null;
  scim: JsonObject;
}

export interface Member {
  classId: string;
  accountId: string;
  display: string | null;
}

function uniqueness(error: unknown, values: ClassValues): never {
  if (isUniqueViolation(error, 'classes_external_id_key')) {
    throw conflict(`A group with externalId "${values.external_id ?? ''}" already exists.`);
  }
  throw error;
}

const toRow = (values: ClassValues) => ({ ...values, scim: JSON.stringify(values.scim) });

export async function insertSyncedClass(db: Executor, tenantId: string, values: ClassValues): Promise<ClassRow> {
  try {
    return await db
      .insertInto('classes')
      .values({ tenant_id: tenantId, managed_by: 'sync', ...toRow(values) })
      .returningAll()
      .executeTakeFirstOrThrow();
  } catch (error) {
    return uniqueness(error, values);
  }
}

/**
 * The usual create in one statement, the class and its audit event: unless a
 * manual class has the same Entra object id (rule 8, adopted by the caller's
 * full path). Then nothing is written and undefined returned.
 */
export async function insertUnclaimedClass(db: Executor, tenantId: string, values: ClassValues, actor: Actor): Promise<ClassRow | undefined> {
  let row: ClassRow | undefined;
  try {
    const result = await insertUnclaimed(db, { tenantId, ...toRow(values), ...actor });
    row = result.rows[0];
  } catch (error) {
    return uniqueness(error, values);
  }
  if (row) {
    auditRecorded(db, { tenantId, action: 'create', objectType: 'group', objectId: row.id, objectRef: row.display_name, outcome: 'success', ...actor, details: { membersAdded: 0 } });
  }
  return row;
}

const insertUnclaimed = fixedStatement<Omit<ClassValues, 'scim'> & Actor & { tenantId: string; scim: string }, ClassRow>(
  (p) => sql`${preparedOn('classes')}
      WITH created AS (
        INSERT INTO classes (tenant_id, managed_by, display_name, external_id, school_id, scim)
        SELECT ${p.tenantId}::uuid, 'sync', ${p.display_name}::text, ${p.external_id}::text, ${p.school_id}::text, ${p.scim}::jsonb
         WHERE NOT EXISTS (
           SELECT 1 FROM classes WHERE tenant_id = ${p.tenantId}::uuid AND external_id = ${p.external_id}::text AND managed_by = 'manual')
        RETURNING ${CLASS_COLUMNS}
      ), audited AS (
        INSERT INTO audit_events (tenant_id, action, object_type, object_id, object_ref, outcome, credential_id, request_id, details)
        SELECT tenant_id, 'create', 'group', id, display_name, 'success', ${p.credentialId}::uuid, ${p.requestId}::text, '{"membersAdded": 0}'::jsonb
          FROM created
      )
      SELECT ${CLASS_COLUMNS} FROM created`,
);

export async function findSyncedClass(db: Executor, tenantId: string, id: string, forUpdate = false): Promise<ClassRow | undefined> {
  let query = db
    .selectFrom('classes')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .where('managed_by', '=', 'sync');
  if (forUpdate) query = query.forUpdate();
  return query.executeTakeFirst();
}

export async function updateSyncedClass(db: Executor, tenantId: string, id: string, values: ClassValues | undefined): Promise<ClassRow> {
  try {
    return await db
      .updateTable('classes')
      .set((eb) => ({
        ...(values ? toRow(values) : {}),
        version: eb('version', '+', 1),
        updated_at: sql<Date>`clock_timestamp()`,
      }))
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow();
  } catch (error) {
    if (values) return uniqueness(error, values);
    throw error;
  }
}

export async function deleteSyncedClass(db: Executor, tenantId: string, id: string): Promise<void> {
  await db.deleteFrom('classes').where('tenant_id', '=', tenantId).where('id', '=', id).where('managed_by', '=', 'sync').execute();
}

function synced(db: Executor, tenantId: string, where?: Expression<SqlBool>) {
  let query = db.selectFrom('classes as c').where('c.tenant_id', '=', tenantId).where('c.managed_by', '=', 'sync');
  if (where) query = query.where(where);
  return query;
}

/** The columns of classes, named for the prepared statements (see PREPARED). */
const CLASS_COLUMN_NAMES = ['tenant_id', 'id', 'managed_by', 'display_name', 'external_id', 'school_id', 'scim', 'version', 'created_at', 'updated_at'] as const;
const CLASS_COLUMNS = sql.raw(CLASS_COLUMN_NAMES.join(', '));

export interface ClassListQuery {
  where?: Expression<SqlBool>;
  orderBy?: Expression<unknown>;
  descending?: boolean;
  offset: number;
  limit: number;
}

/**
 * The first page of Entra's class lookup (displayName or externalId eq a
 * value) in a fixed, prepared statement: the same rows and order as
 * listSyncedClasses with filterToSql's condition.
 */
export async function lookupSyncedClasses(
  db: Executor,
  tenantId: string,
  lookup: ColumnLookup<'display_name' | 'external_id'>,
  limit: number,
): Promise<Page<ClassRow>> {
  const { rows } = await classLookup(lookup)(db, { tenantId, value: lookup.value, limit });
  return firstPage(rows);
}

const classLookup = statementPerLookup((lookup, p: LookupParams) => sql<ClassRow & { total_count: string }>`${preparedOn('classes')}
    SELECT ${CLASS_COLUMNS}, count(*) OVER () AS total_count FROM classes
     WHERE tenant_id = ${p.tenantId}::uuid AND managed_by = 'sync' AND ${lookupCondition(lookup, p.value)}
     ORDER BY id LIMIT ${p.limit}::integer`);

/** A page of synced classes matching the filter, with the exact total. */
export async function listSyncedClasses(db: Executor, tenantId: string, q: ClassListQuery): Promise<Page<ClassRow>> {
  return readPage<ClassRow>(
    q.limit,
    q.offset,
    () => {
      let query = synced(db, tenantId, q.where).selectAll('c').select(sql<string>`count(*) over ()`.as('total_count'));
      if (q.orderBy) query = query.orderBy(q.orderBy, (ob) => (q.descending ? ob.desc().nullsLast() : ob.asc().nullsLast()));
      return query.orderBy('c.id').offset(q.offset).limit(q.limit).execute();
    },
    async () => {
      const row = await synced(db, tenantId, q.where)
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },
  );
}

/** The synced members of some classes, with the display names of their accounts. */
export async function listSyncedMembers(db: Executor, tenantId: string, classIds: readonly string[]): Promise<Member[]> {
  if (classIds.length === 0) return [];
  const rows = await db
    .selectFrom('class_memberships as m')
    .innerJoin('accounts as u', (join) => join.onRef('u.tenant_id', '=', 'm.tenant_id').onRef('u.id', '=', 'm.account_id'))
    .select(['m.class_id', 'm.account_id', 'u.display_name'])
    .where('m.tenant_id', '=', tenantId)
    .where('m.class_id', 'in', classIds)
    .where('m.synced', '=', true)
    .orderBy('m.class_id')
    .orderBy('m.account_id')
    .execute();
  return rows.map((r) => ({ classId: r.class_id, accountId: r.account_id, display: r.display_name }));
}

/** Of these ids, the ones that are synced, live users of the tenant. */
export async function findMemberCandidates(db: Executor, tenantId: string, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db
    .selectFrom('accounts')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('id', 'in', ids)
    .where('managed_by', '=', 'sync')
    .where(LIVE_BY_ID)
    .execute();
  return new Set(rows.map((r) => r.id));
}

/** Adds synced memberships; existing rows (manual or synced) are kept, never duplicated. */
export async function addSyncedMembers(db: Executor, tenantId: string, classId: string, accountIds: readonly string[]): Promise<number> {
  if (accountIds.length === 0) return 0;
  const result = await sql<{ account_id: string }>`
    INSERT INTO class_memberships (tenant_id, class_id, account_id, synced)
    SELECT ${tenantId}::uuid, ${classId}::uuid, id, true FROM unnest(${accountIds}::uuid[]) AS ids(id)
    ON CONFLICT (tenant_id, class_id, account_id) DO UPDATE SET synced = true WHERE NOT class_memberships.synced
    RETURNING account_id`.execute(db);
  return result.rows.length;
}

/**
 * Entra's member batch in one statement: adds synced members to a synced
 * class, moves the class's version and writes the audit event, only when the
 * class exists and every id is a live synced user of the tenant (rule 5).
 * Otherwise nothing is written and undefined returned, for the caller's full
 * path and its errors. Resolves to the number of memberships added.
 */
export async function addSyncedMembersNow(
  db: Executor,
  tenantId: string,
  classId: string,
  accountIds: readonly string[],
  actor: { credentialId: string; requestId: string },
): Promise<number | undefined> {
  let result;
  try {
    result = await addMembersNow(db, { tenantId, classId, accountIds: [...accountIds], count: accountIds.length, ...actor });
  } catch (error) {
    // The class went away after this statement's snapshot: the full path says 404.
    if ((error as { code?: unknown }).code === '23503') return undefined;
    throw error;
  }
  const row = result.rows[0];
  if (!row?.ok) return undefined;
  const added = Number(row.added);
  if (added > 0) {
    auditRecorded(db, {
      tenantId,
      action: 'update',
      objectType: 'group',
      objectId: classId,
      objectRef: row.display_name,
      outcome: 'success',
      ...actor,
      details: { changed: ['members'], memberChanges: added },
    });
  }
  return added;
}

const addMembersNow = fixedStatement<Actor & { tenantId: string; classId: string; accountIds: string[]; count: number }, { ok: boolean; added: string; display_name: string | null }>(
  (p) => sql`${preparedOn('classes', 'accounts', 'class_memberships')}
      WITH class AS (
        SELECT id FROM classes WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.classId}::uuid AND managed_by = 'sync'
      ), valid AS (
        SELECT id FROM accounts
         WHERE tenant_id = ${p.tenantId}::uuid AND id = ANY(${p.accountIds}::uuid[]) AND managed_by = 'sync' AND ${LIVE_BY_ID}
      ), checked AS (
        SELECT EXISTS (SELECT 1 FROM class) AND (SELECT count(*) FROM valid) = ${p.count}::integer AS ok
      ), added AS (
        INSERT INTO class_memberships (tenant_id, class_id, account_id, synced)
        SELECT ${p.tenantId}::uuid, ${p.classId}::uuid, id, true FROM valid WHERE (SELECT ok FROM checked)
        ON CONFLICT (tenant_id, class_id, account_id) DO UPDATE SET synced = true WHERE NOT class_memberships.synced
        RETURNING account_id
      ), bumped AS (
        UPDATE classes SET version = version + 1, updated_at = clock_timestamp()
         WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.classId}::uuid AND EXISTS (SELECT 1 FROM added)
        RETURNING tenant_id, id, display_name
      ), audited AS (
        INSERT INTO audit_events (tenant_id, action, object_type, object_id, object_ref, outcome, credential_id, request_id, details)
        SELECT tenant_id, 'update', 'group', id, display_name, 'success', ${p.credentialId}::uuid, ${p.requestId}::text,
               jsonb_build_object('changed', jsonb_build_array('members'), 'memberChanges', (SELECT count(*) FROM added))
          FROM bumped
      )
      SELECT (SELECT ok FROM checked) AS ok, (SELECT count(*) FROM added) AS added, (SELECT display_name FROM bumped) AS display_name`,
);

/** Removes synced memberships; a member also added by hand in the portal stays (rule 5). */
export async function removeSyncedMembers(db: Executor, tenantId: string, classId: string, accountIds: readonly string[] | 'all'): Promise<number> {
  let deleted = db
    .deleteFrom('class_memberships')
    .where('tenant_id', '=', tenantId)
    .where('class_id', '=', classId)
    .where('manual', '=', false);
  let demoted = db
    .updateTable('class_memberships')
    .set({ synced: false })
    .where('tenant_id', '=', tenantId)
    .where('class_id', '=', classId)
    .where('manual', '=', true)
    .where('synced', '=', true);
  if (accountIds !== 'all') {
    if (accountIds.length === 0) return 0;
    deleted = deleted.where('account_id', 'in', accountIds);
    demoted = demoted.where('account_id', 'in', accountIds);
  }
  const [a, b] = [await deleted.executeTakeFirst(), await demoted.executeTakeFirst()];
  return Number(a.numDeletedRows) + Number(b.numUpdatedRows);
}

/** Makes the synced members exactly this set, leaving manual members alone. */
export async function replaceSyncedMembers(db: Executor, tenantId: string, classId: string, accountIds: readonly string[]): Promise<number> {
  const keep = accountIds.length > 0 ? accountIds : ['00000000-0000-0000-0000-000000000000'];
  const deleted = await db
    .deleteFrom('class_memberships')
    .where('tenant_id', '=', tenantId)
    .where('class_id', '=', classId)
    .where('manual', '=', false)
    .where('account_id', 'not in', keep)
    .executeTakeFirst();
  const demoted = await db
    .updateTable('class_memberships')
    .set({ synced: false })
    .where('tenant_id', '=', tenantId)
    .where('class_id', '=', classId)
    .where('manual', '=', true)
    .where('synced', '=', true)
    .where('account_id', 'not in', keep)
    .executeTakeFirst();
  const added = await addSyncedMembers(db, tenantId, classId, accountIds);
  return Number(deleted.numDeletedRows) + Number(demoted.numUpdatedRows) + added;
}

/** Rule 8: a manual class that was synced before (same Entra object id), to adopt again. */
export async function findAdoptableClass(db: Executor, tenantId: string, externalId: string): Promise<ClassRow | undefined> {
  return db
    .selectFrom('classes')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('managed_by', '=', 'manual')
    .where('external_id', '=', externalId)
    .forUpdate()
    .executeTakeFirst();
}

export async function adoptClass(db: Executor, tenantId: string, id: string, values: ClassValues): Promise<ClassRow> {
  return db
    .updateTable('classes')
    .set((eb) => ({ ...toRow(values), managed_by: 'sync', version: eb('version', '+', 1), updated_at: sql<Date>`clock_timestamp()` }))
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
}
