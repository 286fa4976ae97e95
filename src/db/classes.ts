// Reads of classes and class memberships: SCIM sees synced classes only.
// The writes are plans rendered by write-statements.ts (member changes are
// set operations in SQL that never read the member list); the reads here
// give the planners and the answers what they need.
import { sql } from 'kysely';
import { CLASS_COLUMN_NAMES, LIVE_BY_ID, classColumns, classUpdatedAt, classVersion, type ClassRow } from './columns.js';
import { preparedOn, type Executor } from './database.js';
import { criteriaToSql, sortToSql, type Criterion, type SearchTable, type SortKey } from './filter-sql.js';
import { firstPage, lookupCondition, readPage, statementPerLookup, type ColumnLookup, type LookupParams, type Page } from './paging.js';

export type { ClassRow } from './columns.js';

export interface Member {
  classId: string;
  accountId: string;
  display: string | null;
}

/**
 * How a locked read holds a class row: `update` for a delete; `no key update`
 * for a write that keeps the row, which, unlike `update`, lets another
 * transaction's foreign-key check of a membership of the class (a key share)
 * go on, so a write holding the class never waits in a circle with one
 * holding a member's account, such as a merge.
 */
export type ClassLock = 'update' | 'no key update';

/** The columns a read takes as they are; the version and the time of the last change are as SCIM shows them (columns.ts). */
type RowColumn = Exclude<(typeof CLASS_COLUMN_NAMES)[number], 'version' | 'updated_at'>;
const ROW_COLUMNS = CLASS_COLUMN_NAMES.filter((name): name is RowColumn => name !== 'version' && name !== 'updated_at');
const shown = (table: string) => [classVersion(table).as('version'), classUpdatedAt(table).as('updated_at')] as const;

export async function findSyncedClass(db: Executor, tenantId: string, id: string, lock?: ClassLock): Promise<ClassRow | undefined> {
  let query = db
    .selectFrom('classes')
    .select([...ROW_COLUMNS, ...shown('classes')])
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .where('managed_by', '=', 'sync');
  if (lock === 'update') query = query.forUpdate();
  if (lock === 'no key update') query = query.forNoKeyUpdate();
  return query.executeTakeFirst();
}

function synced(db: Executor, tenantId: string, where?: Criterion) {
  let query = db.selectFrom('classes as c').where('c.tenant_id', '=', tenantId).where('c.managed_by', '=', 'sync');
  if (where) query = query.where(criteriaToSql(SEARCH, where));
  return query;
}

export interface ClassListQuery {
  /** Search criteria (filter-sql.ts), rendered over this repository's table. */
  where?: Criterion;
  sortBy?: SortKey;
  descending?: boolean;
  offset: number;
  limit: number;
}

/** The table as the search criteria see it. */
const SEARCH: SearchTable = { alias: 'c', shown: { updated_at: classUpdatedAt('c') } };

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
    SELECT ${classColumns('classes')}, count(*) OVER () AS total_count FROM classes
     WHERE tenant_id = ${p.tenantId}::uuid AND managed_by = 'sync' AND ${lookupCondition(lookup, p.value)}
     ORDER BY id LIMIT ${p.limit}::integer`);

/** A page of synced classes matching the filter, with the exact total. */
export async function listSyncedClasses(db: Executor, tenantId: string, q: ClassListQuery): Promise<Page<ClassRow>> {
  return readPage<ClassRow>(
    q.limit,
    q.offset,
    () => {
      let query = synced(db, tenantId, q.where)
        .select([...ROW_COLUMNS.map((name) => `c.${name}` as const), ...shown('c')])
        .select(sql<string>`count(*) over ()`.as('total_count'));
      if (q.sortBy) query = query.orderBy(sortToSql(SEARCH, q.sortBy), (ob) => (q.descending ? ob.desc().nullsLast() : ob.asc().nullsLast()));
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

/** How many synced members each of these classes has (as listSyncedMembers would list them); a class with none is left out. */
export async function countSyncedMembers(db: Executor, tenantId: string, classIds: readonly string[]): Promise<Map<string, number>> {
  if (classIds.length === 0) return new Map();
  const rows = await db
    .selectFrom('class_memberships as m')
    .innerJoin('accounts as u', (join) => join.onRef('u.tenant_id', '=', 'm.tenant_id').onRef('u.id', '=', 'm.account_id'))
    .select(['m.class_id', (eb) => eb.fn.countAll<string>().as('n')])
    .where('m.tenant_id', '=', tenantId)
    .where('m.class_id', 'in', classIds)
    .where('m.synced', '=', true)
    .where(sql<boolean>`coalesce(u.deleted_at, 'infinity') = 'infinity'`)
    .groupBy('m.class_id')
    .execute();
  return new Map(rows.map((r) => [r.class_id, Number(r.n)]));
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
    // Live accounts only, in the form that matches no partial index (see LIVE_BY_ID).
    .where(sql<boolean>`coalesce(u.deleted_at, 'infinity') = 'infinity'`)
    .orderBy('m.class_id')
    .orderBy('m.account_id')
    .execute();
  return rows.map((r) => ({ classId: r.class_id, accountId: r.account_id, display: r.display_name }));
}

/** Of these ids, the ones that name synced, live users of the tenant: their own, or an alias of one after a merge. */
export async function findMemberCandidates(db: Executor, tenantId: string, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await sql<{ given: string }>`
    SELECT i.id AS given FROM unnest(${[...ids]}::uuid[]) AS i(id)
      LEFT JOIN account_aliases al ON al.tenant_id = ${tenantId}::uuid AND al.alias_id = i.id
      JOIN accounts a ON a.tenant_id = ${tenantId}::uuid AND a.id = coalesce(al.account_id, i.id)
     WHERE a.managed_by = 'sync' AND ${LIVE_BY_ID}`.execute(db);
  return new Set(rows.rows.map((r) => r.given));
}

/**
 * Rule 8: a manual class that was synced before (same Entra object id), to
 * adopt again. Locked FOR NO KEY UPDATE, as every class write that keeps the
 * row: a merge takes a key share of its accounts' classes while it holds the
 * accounts, which the adoption's members then wait for.
 */
export async function findAdoptableClass(db: Executor, tenantId: string, externalId: string): Promise<ClassRow | undefined> {
  return db
    .selectFrom('classes')
    .select([...ROW_COLUMNS, ...shown('classes')])
    .where('tenant_id', '=', tenantId)
    .where('managed_by', '=', 'manual')
    .where('external_id', '=', externalId)
    .forNoKeyUpdate()
    .executeTakeFirst();
}

/** Whether another synced class of the tenant has this name, in any case. */
export async function isClassNameTaken(db: Executor, tenantId: string, displayName: string, exceptId: string | undefined): Promise<boolean> {
  let query = db
    .selectFrom('classes')
    .select('id')
    .where('tenant_id', '=', tenantId)
    // Folded by PostgreSQL on both sides, as class_name_is_free and the
    // name's turn fold it: in a database whose ctype is C, lower() folds
    // ASCII only, and a name folded here in JavaScript would not be found.
    .where(sql<string>`lower(display_name)`, '=', sql<string>`lower(${displayName})`)
    .where('managed_by', '=', 'sync');
  if (exceptId !== undefined) query = query.where('id', '<>', exceptId);
  return (await query.limit(1).executeTakeFirst()) !== undefined;
}

/**
 * Removes the departures of classes that no longer exist: a class delete
 * takes its own, but an account's delete that raced it may add one after
 * (migration 0016). The count removed.
 */
export async function pruneOrphanDepartures(db: Executor): Promise<number> {
  // Rows another instance is deleting are skipped, not waited for, as the change feed's prune does.
  const result = await sql`
    DELETE FROM class_departures WHERE (tenant_id, class_id, id) IN (
      SELECT d.tenant_id, d.class_id, d.id FROM class_departures d
       WHERE NOT EXISTS (SELECT 1 FROM classes c WHERE c.tenant_id = d.tenant_id AND c.id = d.class_id)
         FOR UPDATE SKIP LOCKED)`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
