// Reads of accounts: SCIM sees only synced, live accounts of its tenant. The
// writes are plans rendered by write-statements.ts; the reads here give the
// planners what they decide on (the account, an admin in the way, an
// account to adopt).
import { sql, type ExpressionBuilder, type RawBuilder } from 'kysely';
import { notifyChanges } from './change-notifier.js';
import { RESOURCE_COLUMNS, type AccountResource, type AccountRow } from './columns.js';
import { fixedStatement, preparedOn, type Database, type Executor } from './database.js';
import { criteriaToSql, sortToSql, type Criterion, type SearchTable, type SortKey } from './filter-sql.js';
import { firstPage, lookupCondition, readPage, statementPerLookup, type ColumnLookup, type LookupParams, type Page } from './paging.js';

export type { AccountResource, AccountRow } from './columns.js';

/** The read by id, plain or locked (FOR UPDATE). */
function findById(lock: RawBuilder<unknown>) {
  return fixedStatement<{ tenantId: string; id: string }, AccountResource & Pick<AccountRow, 'managed_by' | 'deleted_at'>>(
    (p) => sql`${preparedOn('accounts')}
    SELECT ${RESOURCE_COLUMNS}, managed_by, deleted_at FROM accounts WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid ${lock}`,
  );
}
const findPlainById = findById(sql``);
const findLockedById = findById(sql`FOR UPDATE`);

/** A synced, live account by id. The row is read by primary key alone (see LIVE_BY_ID) and checked here. */
export async function findSyncedAccount(db: Executor, tenantId: string, id: string, forUpdate = false): Promise<AccountResource | undefined> {
  const { rows } = await (forUpdate ? findLockedById : findPlainById)(db, { tenantId, id });
  const row = rows[0];
  if (!row || row.managed_by !== 'sync' || row.deleted_at !== null) return undefined;
  const { managed_by: _managedBy, deleted_at: _deletedAt, ...resource } = row;
  return resource;
}

export interface ListQuery {
  /** Search criteria (filter-sql.ts), rendered over this repository's table. */
  where?: Criterion;
  sortBy?: SortKey;
  descending?: boolean;
  offset: number;
  limit: number;
}

/** The table as the search criteria see it. */
const SEARCH: SearchTable = { alias: 'a' };

function synced(db: Executor, tenantId: string, where?: Criterion) {
  let query = db
    .selectFrom('accounts as a')
    .where('a.tenant_id', '=', tenantId)
    .where('a.managed_by', '=', 'sync')
    .where('a.deleted_at', 'is', null);
  if (where) query = query.where(criteriaToSql(SEARCH, where));
  return query;
}

/**
 * A page of synced, live accounts matching the filter, with the exact total.
 * With documentBytes, the page ends before the account whose document (as
 * JSON text) would take the page's documents past it, after one account at
 * least: measured over the page's rows alone, in the same statement.
 */
export async function listSyncedAccounts(db: Executor, tenantId: string, q: ListQuery, documentBytes?: number): Promise<Page<AccountRow>> {
  return readPage<AccountRow>(
    q.limit,
    q.offset,
    async () => {
      let query = synced(db, tenantId, q.where).selectAll('a').select(sql<string>`count(*) over ()`.as('total_count'));
      if (q.sortBy) query = query.orderBy(sortToSql(SEARCH, q.sortBy), (ob) => (q.descending ? ob.desc().nullsLast() : ob.asc().nullsLast()));
      const page = query.orderBy('a.id').offset(q.offset).limit(q.limit);
      if (documentBytes === undefined) return page.execute();
      // Each level names its rows "a", as the page itself does, so the sort reads the same columns at each.
      const order = q.sortBy ? sql`${sortToSql(SEARCH, q.sortBy)} ${q.descending ? sql`DESC` : sql`ASC`} NULLS LAST, a.id` : sql`a.id`;
      const { rows } = await sql<AccountRow & { total_count: string; document_bytes: string; bytes_so_far: string }>`
        SELECT a.* FROM (
          SELECT a.*, octet_length(a.scim::text) AS document_bytes,
                 sum(octet_length(a.scim::text)) OVER (ORDER BY ${order} ROWS UNBOUNDED PRECEDING) AS bytes_so_far
            FROM (${page}) AS a) AS a
         WHERE a.bytes_so_far <= ${documentBytes}::bigint OR a.bytes_so_far = a.document_bytes
         ORDER BY ${order}`.execute(db);
      return rows.map(({ document_bytes: _bytes, bytes_so_far: _sofar, ...row }) => row);
    },
    async () => {
      const row = await synced(db, tenantId, q.where)
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },
  );
}

/**
 * The first page of Entra's user lookup (userName or externalId eq a value)
 * in a fixed, prepared statement: the same rows and order as
 * listSyncedAccounts with filterToSql's condition.
 */
export async function lookupSyncedAccounts(
  db: Executor,
  tenantId: string,
  lookup: ColumnLookup<'user_name' | 'external_id'>,
  limit: number,
): Promise<Page<AccountResource>> {
  const { rows } = await accountLookup(lookup)(db, { tenantId, value: lookup.value, limit });
  return firstPage(rows);
}

const accountLookup = statementPerLookup((lookup, p: LookupParams) => sql<AccountResource & { total_count: string }>`${preparedOn('accounts')}
    SELECT ${RESOURCE_COLUMNS}, count(*) OVER () AS total_count FROM accounts
     WHERE tenant_id = ${p.tenantId}::uuid AND managed_by = 'sync' AND deleted_at IS NULL AND ${lookupCondition(lookup, p.value)}
     ORDER BY id LIMIT ${p.limit}::integer`);

/**
 * One of these addresses is in `column`, both sides folded by lower() as the
 * column's index is (in a database whose ctype is C, ASCII letters only). The lookups below take
 * one query per address column, joined by UNION ALL or run in turn: with an
 * OR of the two columns, a planner without statistics on accounts (a new
 * database) may read the whole tenant through any index led by tenant_id
 * instead of the two address indexes.
 */
const addressIn = (column: 'user_name' | 'email', addresses: readonly string[]) => (eb: ExpressionBuilder<Database, 'accounts'>) =>
  eb(
    eb.fn('lower', [column]),
    'in',
    addresses.map((address) => eb.fn<string>('lower', [eb.val(address)])),
  );

/** Rule 3: an admin account of the tenant that has one of these addresses as userName or e-mail. */
export async function findAdminCollision(db: Executor, tenantId: string, addresses: readonly string[], exceptId?: string): Promise<AccountRow | undefined> {
  if (addresses.length === 0) return undefined;
  const admins = (column: 'user_name' | 'email') => {
    const query = db
      .selectFrom('accounts')
      .selectAll()
      .where('tenant_id', '=', tenantId)
      .where('role', '=', 'admin')
      .where('deleted_at', 'is', null)
      .where(addressIn(column, addresses));
    return exceptId === undefined ? query : query.where('id', '<>', exceptId);
  };
  return admins('user_name').unionAll(admins('email')).limit(1).executeTakeFirst();
}

/** Accounts sync may take over: manual, live, never an admin. */
function adoptable(db: Executor, tenantId: string) {
  return db
    .selectFrom('accounts')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('managed_by', '=', 'manual')
    .where('role', '<>', 'admin')
    .where('deleted_at', 'is', null);
}

/**
 * The live account that is already Entra's object (same object id), never an
 * admin: a synced one, which Entra creates again when it lost track of it
 * (a restarted provisioning, a user renamed while out of scope) and whose
 * history the create must keep, before a manual one that was synced before
 * (rule 8), to adopt again.
 */
export async function findByExternalId(db: Executor, tenantId: string, externalId: string): Promise<AccountRow | undefined> {
  return db
    .selectFrom('accounts')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('role', '<>', 'admin')
    .where('deleted_at', 'is', null)
    .where('external_id', '=', externalId)
    .orderBy(sql`managed_by = 'sync'`, 'desc')
    .orderBy('created_at')
    .orderBy('id')
    .limit(1)
    .forUpdate()
    .executeTakeFirst();
}

/**
 * Rule 2: a manual account with one of these (verified-domain) addresses as
 * e-mail or userName, never an admin, a deleted account, or one linked to
 * another Entra object. A userName match wins over an e-mail match.
 */
export async function findAdoptableByAddress(db: Executor, tenantId: string, addresses: readonly string[]): Promise<AccountRow | undefined> {
  if (addresses.length === 0) return undefined;
  // The userName column first; the oldest account of a column wins.
  const oldestBy = (column: 'user_name' | 'email') =>
    adoptable(db, tenantId)
      .where('external_id', 'is', null)
      .where(addressIn(column, addresses))
      .orderBy('created_at')
      .orderBy('id')
      .limit(1)
      .forUpdate()
      .executeTakeFirst();
  return (await oldestBy('user_name')) ?? oldestBy('email');
}

/** Rule 7: removes accounts deleted longer ago than their tenant's retention period. */
export async function purgeDeletedAccounts(db: Executor, tenantId?: string): Promise<Map<string, number>> {
  const result = await sql<{ tenant_id: string; n: string }>`
    WITH purged AS (
      DELETE FROM accounts a USING tenants t
       WHERE a.tenant_id = t.id
         AND a.deleted_at IS NOT NULL
         AND a.deleted_at < now() - make_interval(days => t.retention_days)
         AND (${tenantId ?? null}::uuid IS NULL OR a.tenant_id = ${tenantId ?? null}::uuid)
      RETURNING a.tenant_id)
    SELECT tenant_id, count(*) AS n FROM purged GROUP BY tenant_id`.execute(db);
  if (result.rows.length > 0) await notifyChanges(db);
  return new Map(result.rows.map((r) => [r.tenant_id, Number(r.n)]));
}
