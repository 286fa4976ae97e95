// Queries on accounts. SCIM sees only synced, live accounts of its tenant.
import { sql, type Expression, type RawBuilder, type Selectable, type SqlBool } from 'kysely';
import { conflict } from '../errors.js';
import { auditRecorded, type AuditEvent } from './audit.js';
import { fixedStatement, preparedOn, type AccountsTable, type Executor, type JsonObject } from './database.js';
import { isUniqueViolation } from './errors.js';
import { firstPage, lookupCondition, readPage, statementPerLookup, type ColumnLookup, type LookupParams, type Page } from './paging.js';

export type AccountRow = Selectable<AccountsTable>;

/**
 * The columns a SCIM answer is made of (toScimUser) and the role, named for
 * the prepared statements (see PREPARED): fewer columns than the table's are
 * fewer to describe and parse on every run.
 */
const RESOURCE_COLUMN_NAMES = ['id', 'external_id', 'user_name', 'active', 'scim', 'version', 'created_at', 'updated_at', 'role'] as const;
const RESOURCE_COLUMNS = sql.raw(RESOURCE_COLUMN_NAMES.join(', '));
export type AccountResource = Pick<AccountRow, (typeof RESOURCE_COLUMN_NAMES)[number]>;

/**
 * "Live" for statements that find accounts by id. `deleted_at IS NULL` would
 * let the planner pick a partial index led by tenant_id instead of the
 * primary key whenever it cannot tell them apart: before the table's first
 * ANALYZE (a new database) or for a tenant the statistics have not seen yet.
 * It then reads every account of the tenant. This form matches no partial
 * index, so the primary key is the only way in.
 */
export const LIVE_BY_ID = sql<boolean>`coalesce(deleted_at, 'infinity') = 'infinity'`;

/** The columns a SCIM write sets, derived from the resource by the mapper; scim as an object. */
export type AccountValues = Pick<
  AccountRow,
  'user_name' | 'external_id' | 'email' | 'given_name' | 'family_name' | 'display_name' | 'school_id' | 'grade' | 'active' | 'role'
> & { scim: JsonObject };

function uniqueness(error: unknown, userName: string): never {
  if (isUniqueViolation(error, 'accounts_synced_user_name_key')) {
    throw conflict(`A user with userName "${userName}" already exists (userName is unique in any case).`);
  }
  throw error;
}

/**
 * An account's addresses (userName and link e-mail, lower case) are one or
 * two; the statements below compare them one by one, an equality per index
 * and address. With `= ANY(array)` a prepared statement keeps being planned
 * on every run (PostgreSQL cannot tell the array's length), and a list of two
 * can make the planner, before the first ANALYZE, pick an index on the tenant
 * alone. Each count is a text of its own: its index in the returned pair.
 */
function addressCount(addresses: readonly string[]): 0 | 1 {
  if (addresses.length === 0 || addresses.length > 2) throw new Error('an account has one or two addresses');
  return addresses.length === 1 ? 0 : 1;
}

type AddressName = 'address0' | 'address1';

/** A statement for one address and one for two (see addressCount), each given its address parameters. */
function perAddressCount<P extends object, R>(build: (names: readonly AddressName[]) => (p: P) => RawBuilder<R>) {
  return [fixedStatement(build(['address0'])), fixedStatement(build(['address0', 'address1']))] as const;
}

/** The account columns a SCIM write sets, as a row or as parameters (scim as JSON text). */
type ValueParams = Omit<AccountValues, 'scim'> & { scim: string };

function toRow(values: AccountValues): ValueParams {
  return { ...values, scim: JSON.stringify(values.scim) };
}

export async function insertSyncedAccount(db: Executor, tenantId: string, values: AccountValues): Promise<AccountRow> {
  try {
    return await db
      .insertInto('accounts')
      .values({ tenant_id: tenantId, managed_by: 'sync', ...toRow(values) })
      .returningAll()
      .executeTakeFirstOrThrow();
  } catch (error) {
    return uniqueness(error, values.user_name);
  }
}

/** Who made a write, for the audit row a statement writes beside it. */
export interface Actor {
  credentialId: string;
  requestId: string;
}

/**
 * The usual create in one statement, the account and its audit event: unless
 * an admin has one of the known addresses (rule 3), or a manual account could
 * be adopted by Entra object id (rule 8) or by one of the adoptable addresses
 * (rule 2). Then nothing is written and undefined returned, for the caller's
 * full path (which decides between 409 and adoption).
 */
export async function insertUnclaimedAccount(
  db: Executor,
  tenantId: string,
  values: AccountValues,
  addresses: { known: readonly string[]; adoptable: readonly string[] },
  actor: Actor,
): Promise<AccountResource | undefined> {
  const [address0 = null, address1 = null] = addresses.known;
  const params: CreateParams = {
    tenantId,
    ...toRow(values),
    address0,
    address1,
    adoptable0: address0 !== null && addresses.adoptable.includes(address0),
    adoptable1: address1 !== null && addresses.adoptable.includes(address1),
    ...actor,
  };
  let row: AccountResource | undefined;
  try {
    const result = await insertUnclaimed[addressCount(addresses.known)](db, params);
    row = result.rows[0];
  } catch (error) {
    return uniqueness(error, values.user_name);
  }
  if (row) {
    auditRecorded(db, { tenantId, action: 'create', objectType: 'user', objectId: row.id, objectRef: row.user_name, outcome: 'success', ...actor, details: { role: row.role } });
  }
  return row;
}

type CreateParams = ValueParams &
  Actor & { tenantId: string; address0: string | null; address1: string | null; adoptable0: boolean; adoptable1: boolean };

const insertUnclaimed = perAddressCount<CreateParams, AccountResource>((names) => (p) => {
  // One arm per index (userName, e-mail, external id) and address, so each
  // is an index lookup even before the table has statistics. Whether an
  // address may be adopted (rule 2) is the caller's to say.
  const adoptable = { address0: p.adoptable0, address1: p.adoptable1 };
  const arms = names.flatMap((name) =>
    [sql`lower(user_name)`, sql`lower(email)`].map(
      (column) => sql`
        SELECT 1 FROM accounts
         WHERE tenant_id = ${p.tenantId}::uuid AND ${column} = ${p[name]}::text AND deleted_at IS NULL
           AND (role = 'admin' OR (managed_by = 'manual' AND external_id IS NULL AND ${adoptable[name]}::boolean))`,
    ),
  );
  return sql<AccountResource>`${preparedOn('accounts')}
    WITH claimed AS (${sql.join(arms, sql` UNION ALL `)}
      UNION ALL
      SELECT 1 FROM accounts
       WHERE tenant_id = ${p.tenantId}::uuid AND external_id = ${p.external_id}::text AND deleted_at IS NULL
         AND managed_by = 'manual' AND role <> 'admin'
    ), created AS (
      INSERT INTO accounts (tenant_id, managed_by, user_name, external_id, email, given_name, family_name, display_name, school_id, grade, active, role, scim)
      SELECT ${p.tenantId}::uuid, 'sync', ${p.user_name}::text, ${p.external_id}::text, ${p.email}::text, ${p.given_name}::text,
             ${p.family_name}::text, ${p.display_name}::text, ${p.school_id}::text, ${p.grade}::text, ${p.active}::boolean,
             ${p.role}::text, ${p.scim}::jsonb
       WHERE NOT EXISTS (SELECT 1 FROM claimed)
      RETURNING tenant_id, ${RESOURCE_COLUMNS}
    ), audited AS (
      INSERT INTO audit_events (tenant_id, action, object_type, object_id, object_ref, outcome, credential_id, request_id, details)
      SELECT tenant_id, 'create', 'user', id, user_name, 'success', ${p.credentialId}::uuid, ${p.requestId}::text, jsonb_build_object('role', role)
        FROM created
    )
    SELECT ${RESOURCE_COLUMNS} FROM created`;
});

/**
 * A change read without a lock, written in one statement with its audit
 * event: only while the row still has the version it was read at and no
 * other admin account has one of its addresses (rule 3). Undefined (nothing
 * written) when either does not hold, for the caller's locked path.
 */
export async function updateAccountAtVersion(
  db: Executor,
  tenantId: string,
  id: string,
  version: number,
  values: AccountValues,
  addresses: readonly string[],
  audit: AuditEvent | undefined,
): Promise<AccountResource | undefined> {
  const [address0 = null, address1 = null] = addresses;
  let row: AccountResource | undefined;
  try {
    const result = await updateAtVersion[addressCount(addresses)](db, {
      tenantId,
      id,
      version,
      ...toRow(values),
      address0,
      address1,
      audited: audit !== undefined,
      action: audit?.action ?? 'update',
      credentialId: audit?.credentialId ?? null,
      requestId: audit?.requestId ?? null,
      details: JSON.stringify(audit?.details ?? {}),
    });
    row = result.rows[0];
  } catch (error) {
    return uniqueness(error, values.user_name);
  }
  if (row && audit) auditRecorded(db, audit);
  return row;
}

type UpdateParams = ValueParams & {
  tenantId: string;
  id: string;
  version: number;
  address0: string | null;
  address1: string | null;
  audited: boolean;
  action: string;
  credentialId: string | null;
  requestId: string | null;
  details: string;
};

const updateAtVersion = perAddressCount<UpdateParams, AccountResource>((names) => (p) => {
  // Rule 3 per index and address (see addressCount).
  const admins: RawBuilder<unknown>[] = names.flatMap((name) =>
    [sql`lower(user_name)`, sql`lower(email)`].map(
      (column) => sql`
         AND NOT EXISTS (
           SELECT 1 FROM accounts
            WHERE tenant_id = ${p.tenantId}::uuid AND ${column} = ${p[name]}::text AND deleted_at IS NULL
              AND role = 'admin' AND id <> ${p.id}::uuid)`,
    ),
  );
  return sql<AccountResource>`${preparedOn('accounts')}
    WITH updated AS (
      UPDATE accounts
         SET user_name = ${p.user_name}::text, external_id = ${p.external_id}::text, email = ${p.email}::text,
             given_name = ${p.given_name}::text, family_name = ${p.family_name}::text, display_name = ${p.display_name}::text,
             school_id = ${p.school_id}::text, grade = ${p.grade}::text, active = ${p.active}::boolean, role = ${p.role}::text,
             scim = ${p.scim}::jsonb, version = version + 1, updated_at = clock_timestamp()
       WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid AND version = ${p.version}::integer${sql.join(admins, sql``)}
      RETURNING tenant_id, ${RESOURCE_COLUMNS}
    ), audited AS (
      INSERT INTO audit_events (tenant_id, action, object_type, object_id, object_ref, outcome, credential_id, request_id, details)
      SELECT tenant_id, ${p.action}::text, 'user', id, user_name, 'success', ${p.credentialId}::uuid,
             ${p.requestId}::text, ${p.details}::jsonb
        FROM updated WHERE ${p.audited}::boolean
    )
    SELECT ${RESOURCE_COLUMNS} FROM updated`;
});

/**
 * Rule 7 in one statement with its audit event: the live synced account
 * leaves SCIM and the portal's view, its memberships go. False when there is
 * no such account.
 */
export async function deleteSyncedAccountNow(db: Executor, tenantId: string, id: string, actor: Actor): Promise<boolean> {
  const result = await deleteNow(db, { tenantId, id, ...actor });
  const row = result.rows[0];
  if (!row) return false;
  auditRecorded(db, { tenantId, action: 'delete', objectType: 'user', objectId: row.id, objectRef: row.user_name, outcome: 'success', ...actor });
  return true;
}

const deleteNow = fixedStatement<Actor & { tenantId: string; id: string }, { id: string; user_name: string }>(
  (p) => sql`${preparedOn('accounts', 'class_memberships')}
    WITH deleted AS (
      UPDATE accounts SET deleted_at = clock_timestamp(), version = version + 1, updated_at = clock_timestamp()
       WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid AND managed_by = 'sync' AND ${LIVE_BY_ID}
      RETURNING tenant_id, id, user_name
    ), memberships AS (
      DELETE FROM class_memberships m USING deleted d WHERE m.tenant_id = d.tenant_id AND m.account_id = d.id
    ), audited AS (
      INSERT INTO audit_events (tenant_id, action, object_type, object_id, object_ref, outcome, credential_id, request_id, details)
      SELECT tenant_id, 'delete', 'user', id, user_name, 'success', ${p.credentialId}::uuid, ${p.requestId}::text, '{}'::jsonb FROM deleted
    )
    SELECT id, user_name FROM deleted`,
);

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

export async function updateSyncedAccount(db: Executor, tenantId: string, id: string, values: AccountValues): Promise<AccountRow> {
  return writeAccount(db, tenantId, id, values);
}

// Every change of an account row moves its version (the ETag) and lastModified.
async function writeAccount(db: Executor, tenantId: string, id: string, values: AccountValues, adopt = false): Promise<AccountRow> {
  try {
    return await db
      .updateTable('accounts')
      .set((eb) => ({
        ...toRow(values),
        ...(adopt ? { managed_by: 'sync' as const } : {}),
        version: eb('version', '+', 1),
        updated_at: sql<Date>`clock_timestamp()`,
      }))
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow();
  } catch (error) {
    return uniqueness(error, values.user_name);
  }
}

/** Rule 7: the account leaves SCIM and the portal's view now; its memberships go. */
export async function deleteSyncedAccount(db: Executor, tenantId: string, id: string): Promise<void> {
  await db.deleteFrom('class_memberships').where('tenant_id', '=', tenantId).where('account_id', '=', id).execute();
  await db
    .updateTable('accounts')
    .set((eb) => ({ deleted_at: sql<Date>`clock_timestamp()`, version: eb('version', '+', 1), updated_at: sql<Date>`clock_timestamp()` }))
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .execute();
}

export interface ListQuery {
  where?: Expression<SqlBool>;
  orderBy?: Expression<unknown>;
  descending?: boolean;
  offset: number;
  limit: number;
}

function synced(db: Executor, tenantId: string, where?: Expression<SqlBool>) {
  let query = db
    .selectFrom('accounts as a')
    .where('a.tenant_id', '=', tenantId)
    .where('a.managed_by', '=', 'sync')
    .where('a.deleted_at', 'is', null);
  if (where) query = query.where(where);
  return query;
}

/** A page of synced, live accounts matching the filter, with the exact total. */
export async function listSyncedAccounts(db: Executor, tenantId: string, q: ListQuery): Promise<Page<AccountRow>> {
  return readPage<AccountRow>(
    q.limit,
    q.offset,
    () => {
      let query = synced(db, tenantId, q.where).selectAll('a').select(sql<string>`count(*) over ()`.as('total_count'));
      if (q.orderBy) query = query.orderBy(q.orderBy, (ob) => (q.descending ? ob.desc().nullsLast() : ob.asc().nullsLast()));
      return query.orderBy('a.id').offset(q.offset).limit(q.limit).execute();
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

/** Rule 3: an admin account of the tenant that has one of these addresses as userName or e-mail. */
export async function findAdminCollision(db: Executor, tenantId: string, addresses: readonly string[], exceptId?: string): Promise<AccountRow | undefined> {
  if (addresses.length === 0) return undefined;
  let query = db
    .selectFrom('accounts')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('role', '=', 'admin')
    .where('deleted_at', 'is', null)
    .where((eb) => eb.or([eb(eb.fn('lower', ['user_name']), 'in', addresses), eb(eb.fn('lower', ['email']), 'in', addresses)]));
  if (exceptId !== undefined) query = query.where('id', '<>', exceptId);
  return query.executeTakeFirst();
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

/** Rule 8: a manual account that was synced before (same Entra object id), to adopt again. */
export async function findAdoptableByExternalId(db: Executor, tenantId: string, externalId: string): Promise<AccountRow | undefined> {
  return adoptable(db, tenantId)
    .where('external_id', '=', externalId)
    .orderBy('created_at')
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
  return adoptable(db, tenantId)
    .where('external_id', 'is', null)
    .where((eb) => eb.or([eb(eb.fn('lower', ['user_name']), 'in', addresses), eb(eb.fn('lower', ['email']), 'in', addresses)]))
    .orderBy(sql`lower(user_name) = ANY(${sql.val([...addresses])}::text[])`, 'desc')
    .orderBy('created_at')
    .limit(1)
    .forUpdate()
    .executeTakeFirst();
}

/** Takes a manual account over: same id, values from Entra, managed by sync from now on. */
export async function adoptAccount(db: Executor, tenantId: string, id: string, values: AccountValues): Promise<AccountRow> {
  return writeAccount(db, tenantId, id, values, true);
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
  return new Map(result.rows.map((r) => [r.tenant_id, Number(r.n)]));
}
