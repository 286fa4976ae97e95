// The statement builder: renders a write plan (write-plan.ts) into one SQL
// statement that writes the row, its memberships and its events together,
// and only while the plan's guards hold. A guard that fails writes nothing
// and answers undefined: the caller plans again from freshly locked rows and
// runs the same statement in that transaction (a user write's settle is the
// one part rendered differently there: see SettleShape). Guards and events
// are SQL fragments shared by every statement; each statement has a fixed
// text per shape of plan, compiled once and prepared (see
// fixedStatementOver, PREPARED).
import { sql, type RawBuilder } from 'kysely';
import { CLASS_COLUMN_LIST, LIVE_BY_ID, RESOURCE_COLUMNS, classColumns, classVersion, type AccountResource, type ClassRow } from './columns.js';
import {
  NOTHING_SETTLED_COLUMN,
  SETTLED_COLUMN,
  auditInsert,
  auditRecorded,
  conflictsSettled,
  nothingToSettle,
  settleConflicts,
  settleParams,
  type AuditEvent,
  type AuditColumns,
  type PlannedAuditEvent,
  type PlannedSettle,
} from './audit.js';
import { fixedStatementOver, inTransaction, preparedOn, type Executor, type PlannedTable } from './database.js';
import { isForeignKeyViolation, uniqueViolation } from './errors.js';
import {
  ACCOUNT_COLUMN_TYPES,
  ACCOUNT_WRITE_COLUMNS,
  CLASS_COLUMN_TYPES,
  CLASS_WRITE_COLUMNS,
  type AccountWritePlan,
  type DeletePlan,
  type ClassPlan,
  type ClassValues,
  type ExecutionPath,
  type MemberChange,
} from './write-plan.js';

/**
 * A statement's parameters: every value is bound, none is part of the text.
 * A run passes them as several objects (see fixedStatementOver).
 */
type Params = Readonly<Record<string, unknown>>;

// ---------------------------------------------------------------------------
// Shared fragments

/**
 * The tenant is connected (rule 8): a disconnect that lands after the
 * credential check stops the write. tenant_is_connected (migration 0015)
 * first takes the tenant's turn, shared with the tenant's other writes and
 * held until the write commits, and a disconnect takes it exclusively
 * (tenants.ts): a disconnect waits for the writes in flight and then turns
 * their rows manual too, and a write that meets a disconnect in progress
 * waits for it and reads the tenant as it left it, so writes nothing.
 * Without the turn a write whose guard passed just before a disconnect could
 * commit a synced row after it. A scalar subquery, so it runs once, before
 * the statement locks any row: the disconnect's order, so the two never wait
 * on each other in a circle.
 */
const connected = (p: Params) => sql`(SELECT tenant_is_connected(${p.tenantId}::uuid))`;

/**
 * The locked path's first step: the tenant's turn that every guard takes
 * (connected), before the rows the planner locks, in the order a disconnect
 * takes them. False when the tenant is disconnected.
 */
export async function lockConnectedTenant(db: Executor, tenantId: string): Promise<boolean> {
  // Named, like the statements it comes before in the transaction (database.ts).
  const { rows } = await sql<{ ok: boolean }>`${preparedOn()} SELECT ${connected({ tenantId })} AS ok`.execute(db);
  return rows[0]?.ok === true;
}

/** The columns an account's addresses are compared with, each by its own index (see addressNames). */
const ADDRESS_COLUMNS = [sql`lower(user_name)`, sql`lower(email)`] as const;

/**
 * An account's addresses (userName and link e-mail, as sent) are one or
 * two; the guards compare them one by one, an equality per index and
 * address. With `= ANY(array)` a prepared statement keeps being planned on
 * every run (PostgreSQL cannot tell the array's length), and a list of two
 * can make the planner, before the first ANALYZE, pick an index on the tenant
 * alone. Each count is a text of its own.
 */
function addressNames(count: number): readonly ('address0' | 'address1')[] {
  return count === 0 ? [] : count === 1 ? ['address0'] : ['address0', 'address1'];
}

/** An account of the tenant, live, with this address in one of its address columns and matching `predicate`: one index probe per column. */
function accountsWithAddress(p: Params, address: string, predicate: RawBuilder<unknown>): RawBuilder<unknown>[] {
  return ADDRESS_COLUMNS.map(
    (column) => sql`SELECT 1 FROM accounts
       WHERE tenant_id = ${p.tenantId}::uuid AND ${column} = lower(${p[address]}::text) AND deleted_at IS NULL AND ${predicate}`,
  );
}

/** Rule 3: no live admin of the tenant but the row itself holds one of the addresses. */
function noAdminHolds(p: Params, addressCount: number, except: RawBuilder<unknown> | undefined): RawBuilder<unknown> {
  const admin = except ? sql`role = 'admin' AND id <> ${except}` : sql`role = 'admin'`;
  const arms = addressNames(addressCount).flatMap((name) => accountsWithAddress(p, name, admin));
  if (arms.length === 0) return sql`TRUE`;
  return sql.join(
    arms.map((arm) => sql`NOT EXISTS (${arm})`),
    sql` AND `,
  );
}

/**
 * A create's guards, rules 3, 2 and 8 together: no admin holds an address,
 * no manual account holds an adoptable one, no account but an admin has the
 * Entra object id (a manual one to adopt, rule 8, or a synced one Entra
 * creates again: users.ts). One probe per index and address serves rules 3
 * and 2 at once.
 */
function nothingClaims(p: Params, addressCount: number): RawBuilder<unknown> {
  const arms = addressNames(addressCount).flatMap((name, i) =>
    accountsWithAddress(p, name, sql`(role = 'admin' OR (managed_by = 'manual' AND external_id IS NULL AND ${p[`adoptable${i}`]}::boolean))`),
  );
  arms.push(sql`SELECT 1 FROM accounts
     WHERE tenant_id = ${p.tenantId}::uuid AND external_id = ${p.external_id}::text AND deleted_at IS NULL
       AND role <> 'admin'`);
  return sql`NOT EXISTS (${sql.join(arms, sql` UNION ALL `)})`;
}

/** The row still has the version it was planned from; a null version (a plan made without a read) accepts any. */
const atVersion = (p: Params) => sql`(${p.version}::integer IS NULL OR version = ${p.version}::integer)`;

/** The class still has the version it was planned from, as SCIM shows it (classVersion); a null version accepts any. */
const classAtVersion = (p: Params) => sql`(${p.version}::integer IS NULL OR ${classVersion('classes')} = ${p.version}::integer)`;

/**
 * The accounts member ids name: an id Entra keeps using for an account merged
 * into another (an alias) names the kept account.
 */
const resolved = (p: Params, ids: unknown) => sql`SELECT coalesce(al.account_id, i.id) AS id FROM unnest(${ids}::uuid[]) AS i(id)
   LEFT JOIN account_aliases al ON al.tenant_id = ${p.tenantId}::uuid AND al.alias_id = i.id`;

/**
 * Rule 5: every member named is a synced, live user of the tenant. The ids
 * are resolved once (`named`) and looked up as an array, each by the primary
 * key: a lookup by a subquery lets the planner scan the tenant's accounts.
 * The rows stay share-locked so a concurrent delete waits for this write.
 */
const validMembers = (p: Params, ids: unknown) => sql`named AS MATERIALIZED (${resolved(p, ids)}),
   valid AS (SELECT id FROM accounts
   WHERE tenant_id = ${p.tenantId}::uuid AND id = ANY (ARRAY(SELECT id FROM named)) AND managed_by = 'sync' AND ${LIVE_BY_ID}
   FOR SHARE)`;

/** The guard of rule 5: as many valid members as the ids name accounts (two ids may name one account after a merge). */
const allMembersValid = sql`(SELECT count(*) FROM valid) = (SELECT count(DISTINCT id) FROM named)`;

/** The members to add, resolved like `named`, as the CTE `adding`. */
const addingMembers = (p: Params, ids: unknown) => sql`adding AS MATERIALIZED (${resolved(p, ids)})`;

/**
 * Microsoft's unique class names, when the tenant keeps them unique: no other
 * synced class has the name in any case. class_name_is_free (migration 0014)
 * first waits for the name's turn, so of two writes of one name at once the
 * second sees the first's class. First in its guard, so the turn is taken
 * before the statement locks anything else, as a transaction's first lock was.
 */
const nameIsFree = (p: Params) => sql`(NOT ${p.uniqueName}::boolean OR class_name_is_free(${p.tenantId}::uuid, ${p.display_name}::text, ${p.id}::uuid))`;

/** The audit event of a row write, from the written row `w`, written only when the plan carries one. */
function plannedAudit(p: Params, ref: 'user_name' | 'display_name', memberCount?: RawBuilder<unknown>): RawBuilder<unknown> {
  const details = memberCount
    ? sql`(${p.auditDetails}::jsonb || jsonb_build_object(${p.auditCountKey}::text, ${memberCount})
          || CASE WHEN ${p.auditListChanged}::boolean AND ${memberCount} > 0
                  THEN jsonb_build_object('changed', coalesce(${p.auditDetails}::jsonb -> 'changed', '[]'::jsonb) || '["members"]'::jsonb)
                  ELSE '{}'::jsonb END)`
    : sql`${p.auditDetails}::jsonb`;
  const columns: AuditColumns = {
    tenantId: sql`w.tenant_id`,
    action: sql`${p.auditAction}::text`,
    objectType: sql`${p.auditObjectType}::text`,
    objectId: sql`w.id`,
    objectRef: sql.ref(`w.${ref}`),
    outcome: sql`'success'`,
    credentialId: sql`${p.auditCredentialId}::uuid`,
    requestId: sql`${p.auditRequestId}::text`,
    details,
  };
  return auditInsert(columns, sql`FROM written w WHERE ${p.audited}::boolean`);
}

/** The parameters of a plan's audit event (all null when it has none). */
function auditParams(event: PlannedAuditEvent | undefined): Params {
  return {
    audited: event !== undefined,
    auditAction: event?.action ?? null,
    auditObjectType: event?.objectType ?? null,
    auditCredentialId: event?.credentialId ?? null,
    auditRequestId: event?.requestId ?? null,
    auditDetails: JSON.stringify(event?.details ?? {}),
    auditCountKey: event?.memberCount?.key ?? 'memberChanges',
    auditListChanged: event?.memberCount?.listChanged ?? false,
  };
}

/** Tells the audit observers (the metrics) of the event a statement wrote. */
function observed(db: Executor, tenantId: string, event: PlannedAuditEvent | undefined, objectId: string, objectRef: string | null): void {
  if (!event) return;
  const { action, objectType, credentialId, requestId, details } = event;
  const recorded: AuditEvent = { tenantId, action, objectType, objectId, objectRef, outcome: 'success', credentialId, requestId, details };
  auditRecorded(db, recorded);
}

/** Fixed statements made at their first use, one per shape of plan. */
function perShape<R>(build: (shape: string) => (p: Params) => RawBuilder<R>): (shape: string) => ReturnType<typeof fixedStatementOver<R>> {
  const statements = new Map<string, ReturnType<typeof fixedStatementOver<R>>>();
  return (shape) => {
    let statement = statements.get(shape);
    if (statement === undefined) {
      statement = fixedStatementOver<R>(build(shape));
      statements.set(shape, statement);
    }
    return statement;
  };
}

const columnList = (columns: readonly string[]) => sql.raw(columns.join(', '));
const valueList = (p: Params, types: Readonly<Record<string, string>>, columns: readonly string[]) =>
  sql.join(columns.map((c) => sql`${p[c]}::${sql.raw(types[c] ?? 'text')}`));
const setList = (p: Params, types: Readonly<Record<string, string>>, columns: readonly string[]) =>
  sql.join(columns.map((c) => sql`${sql.raw(c)} = ${p[c]}::${sql.raw(types[c] ?? 'text')}`));

// ---------------------------------------------------------------------------
// Accounts

/** A create or change on the locked path also closes the open conflicts of the written userName (audit.ts settleConflicts) and lists them. */
type AccountWritten = AccountResource & { settled?: string[] | null };

/**
 * How a statement carries a plan's settle (WriteEvents.settles): it closes
 * the conflicts (`settle`), it writes only while there is none to close
 * (`clear`, the quick statement), or the plan has none (`none`).
 */
type SettleShape = 'settle' | 'clear' | 'none';

function settleShape(settles: PlannedSettle | undefined, run: ExecutionPath): SettleShape {
  if (!settles) return 'none';
  return run === 'locked' ? 'settle' : 'clear';
}

/** The guard of a `clear` statement, joined to the row write's condition by AND. */
const settleGuard = (p: Params, shape: SettleShape) => (shape === 'clear' ? sql` AND ${nothingToSettle(p)}` : sql``);
/** The settle's CTEs after `audited`, and the statement's last column. */
const settleSteps = (p: Params, shape: SettleShape) => (shape === 'settle' ? sql`, ${settleConflicts(p)}` : sql``);
const settledColumn = (shape: SettleShape) => (shape === 'settle' ? SETTLED_COLUMN : NOTHING_SETTLED_COLUMN);

// Shapes: the count of addresses, then (an update) adopt or keep, then the SettleShape.
const createAccount = perShape<AccountWritten>((shape) => {
  const [count, settle] = shape.split(' ') as [string, SettleShape];
  return (p) => sql<AccountWritten>`${preparedOn('accounts')}
    WITH written AS (
      INSERT INTO accounts (tenant_id, id, managed_by, created_by_sync, ${columnList(ACCOUNT_WRITE_COLUMNS)})
      SELECT ${p.tenantId}::uuid, ${p.id}::uuid, 'sync', true, ${valueList(p, ACCOUNT_COLUMN_TYPES, ACCOUNT_WRITE_COLUMNS)}
       WHERE ${nothingClaims(p, Number(count))} AND ${connected(p)}${settleGuard(p, settle)}
      RETURNING tenant_id, ${RESOURCE_COLUMNS}
    ), audited AS (${plannedAudit(p, 'user_name')})${settleSteps(p, settle)}
    SELECT ${RESOURCE_COLUMNS}, ${settledColumn(settle)} FROM written`;
});

const updateAccount = perShape<AccountWritten>((shape) => {
  const [count, adopt, settle] = shape.split(' ') as [string, string, SettleShape];
  return (p) => sql<AccountWritten>`${preparedOn('accounts')}
    WITH written AS (
      UPDATE accounts
         SET ${setList(p, ACCOUNT_COLUMN_TYPES, ACCOUNT_WRITE_COLUMNS)},${adopt === 'adopt' ? sql` managed_by = 'sync',` : sql``}
             version = version + 1, updated_at = clock_timestamp()
       WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid AND ${LIVE_BY_ID}
         AND managed_by = ${adopt === 'adopt' ? sql`'manual' AND role <> 'admin'` : sql`'sync'`} AND ${atVersion(p)}
         AND ${noAdminHolds(p, Number(count), sql`${p.id}::uuid`)} AND ${connected(p)}${settleGuard(p, settle)}
      RETURNING tenant_id, ${RESOURCE_COLUMNS}
    ), audited AS (${plannedAudit(p, 'user_name')})${settleSteps(p, settle)}
    SELECT ${RESOURCE_COLUMNS}, ${settledColumn(settle)} FROM written`;
});

// The account's memberships go with it: the trigger accounts_deleted_leave_classes
// (migrations 0005, 0011) removes them once this statement holds the row.
// A delete answers nothing of the account: it returns only what names it.
const deleteAccount = perShape<DeletedAccount>(() => (p) => sql<DeletedAccount>`${preparedOn('accounts')}
    WITH written AS (
      UPDATE accounts SET deleted_at = clock_timestamp(), version = version + 1, updated_at = clock_timestamp()
       WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid AND managed_by = 'sync' AND ${LIVE_BY_ID}
         AND ${atVersion(p)} AND ${connected(p)}
      RETURNING tenant_id, id, user_name
    ), audited AS (${plannedAudit(p, 'user_name')})
    SELECT id, user_name FROM written`);

/** What names a deleted account. */
export interface DeletedAccount {
  id: string;
  user_name: string;
}

/** Runs an account's delete plan: the deleted account, or undefined when a guard failed and nothing was written. */
export async function executeAccountDelete(db: Executor, plan: DeletePlan): Promise<DeletedAccount | undefined> {
  const params = { tenantId: plan.tenantId, id: plan.id, version: plan.guards.version ?? null };
  const row = (await deleteAccount('')(db, [params, auditParams(plan.events.audit)])).rows[0];
  if (row) observed(db, plan.tenantId, plan.events.audit, row.id, row.user_name);
  return row;
}

/**
 * Runs an account's create or change plan: the written account, or undefined
 * when a guard failed and nothing was written. A quick run writes only while
 * the userName has no open conflict, and leaves closing them to the locked path.
 */
export async function executeAccountPlan(db: Executor, plan: AccountWritePlan, run: ExecutionPath): Promise<AccountResource | undefined> {
  const events = [auditParams(plan.events.audit), settleParams(plan.events.settles)];
  const settle = settleShape(plan.events.settles, run);
  const [address0 = null, address1 = null] = plan.guards.noAdmin;
  let row: AccountWritten | undefined;
  try {
    switch (plan.kind) {
      case 'create': {
        const [adoptable0 = false, adoptable1 = false] = plan.guards.nothingToAdopt.adoptable;
        const params = { tenantId: plan.tenantId, id: plan.id, scim: JSON.stringify(plan.values.scim), address0, address1, adoptable0, adoptable1 };
        row = (await createAccount(`${plan.guards.noAdmin.length} ${settle}`)(db, [params, plan.values, ...events])).rows[0];
        break;
      }
      case 'update': {
        const params = { tenantId: plan.tenantId, id: plan.id, scim: JSON.stringify(plan.values.scim), address0, address1, version: plan.guards.version };
        const statement = updateAccount(`${plan.guards.noAdmin.length} ${plan.adopt ? 'adopt' : 'keep'} ${settle}`);
        row = (await statement(db, [params, plan.values, ...events])).rows[0];
        break;
      }
    }
  } catch (error) {
    throw uniqueViolation(error) ?? error;
  }
  if (!row) return undefined;
  const { settled, ...account } = row;
  observed(db, plan.tenantId, plan.events.audit, account.id, account.user_name);
  conflictsSettled(db, plan.tenantId, plan.events.settles, account.id, settled ?? null);
  return account;
}

// ---------------------------------------------------------------------------
// Classes

/** The write columns of a write that changes only members: all null. */
const NO_CLASS_VALUES: Params = Object.fromEntries(CLASS_WRITE_COLUMNS.map((column) => [column, null]));

/** A class's write columns as parameters, after the sources that come first (scim as JSON text, see classScim). */
const classValues = (values: ClassValues | undefined): Params => values ?? NO_CLASS_VALUES;
const classScim = (values: ClassValues | undefined): string | null => (values ? JSON.stringify(values.scim) : null);

/**
 * How a write's members change, as far as the statement's text goes: not at
 * all, added only (Entra's member batch: no DELETE or UPDATE of memberships
 * in the statement, nor their triggers), an edit that also removes, or a
 * replacement.
 */
type MemberShape = 'none' | 'add' | MemberChange['kind'];

function memberShape(change: MemberChange | undefined): MemberShape {
  if (!change) return 'none';
  return change.kind === 'edit' && change.remove.length === 0 ? 'add' : change.kind;
}

/** Whether a write's member change removes rows: their condition (by the ids to remove, or not among the new list), or undefined. */
function leavingIds(p: Params, change: MemberShape): RawBuilder<unknown> | undefined {
  if (change === 'none' || change === 'add') return undefined;
  return change === 'replace' ? sql`NOT (account_id IN (${resolved(p, p.members)}))` : sql`account_id IN (${resolved(p, p.remove)})`;
}

/**
 * The synced rows a removal takes out of Entra's list, twice: as the
 * statement's snapshot has them (`seen`) and locked (`leaving`), which
 * PostgreSQL reads again as committed meanwhile. Whether a row is kept by
 * hand decides between deleting it and demoting it, and the delete and the
 * update read the snapshot: a row the portal marked manual after the
 * statement began would be skipped by both. Nor does the snapshot hold the
 * members another class write added while this one waited for the class
 * row. So the write goes ahead only when neither the class row nor a leaving
 * row changed since the snapshot (`steady`, a guard: the locked path runs
 * again, its snapshot taken after that change). A write that only adds
 * needs none of it: its insert meets any row by the primary key. The rows
 * are locked in account order (PostgreSQL locks after it sorts), the order
 * a merge takes a class's rows in (account-repairs.ts).
 */
function leavingSteps(p: Params, change: MemberShape): { ctes: RawBuilder<unknown>; steady: RawBuilder<unknown> } {
  const ids = leavingIds(p, change);
  if (ids === undefined) return { ctes: sql``, steady: sql`true` };
  const rows = sql`FROM class_memberships WHERE tenant_id = ${p.tenantId}::uuid AND class_id = ${p.id}::uuid AND synced AND ${ids}`;
  return {
    ctes: sql`seen AS (SELECT account_id, xmin::text AS row_version ${rows}),
    leaving AS (SELECT account_id, xmin::text AS row_version ${rows} ORDER BY account_id FOR NO KEY UPDATE),`,
    steady: sql`(SELECT row_version FROM class) = (SELECT xmin::text FROM classes WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid)
         AND (SELECT count(*) FROM leaving) = (SELECT count(*) FROM seen)
         AND (SELECT count(*) FROM leaving) = (SELECT count(*) FROM leaving l JOIN seen s USING (account_id, row_version))`,
  };
}

/**
 * The membership changes of a class write, after `ok` held: removed, demoted
 * (manual ones keep their row) and added rows, and their count. A member
 * added that a disconnect kept (manual_by_disconnect, tenants.ts) is Entra's
 * again, no longer manual.
 */
function memberSteps(p: Params, change: MemberShape): RawBuilder<unknown> {
  const ok = sql`(SELECT ok FROM checked)`;
  const ids = leavingIds(p, change);
  const removing =
    ids === undefined
      ? sql`removed AS (SELECT NULL::uuid AS account_id WHERE false), demoted AS (SELECT NULL::uuid AS account_id WHERE false)`
      : sql`removed AS (
        DELETE FROM class_memberships
         WHERE tenant_id = ${p.tenantId}::uuid AND class_id = ${p.id}::uuid AND NOT manual AND ${ids} AND ${ok}
        RETURNING account_id
      ), demoted AS (
        UPDATE class_memberships SET synced = false
         WHERE tenant_id = ${p.tenantId}::uuid AND class_id = ${p.id}::uuid AND manual AND synced AND ${ids} AND ${ok}
        RETURNING account_id
      )`;
  const addedIds = change === 'replace' ? p.members : p.add;
  return sql`${removing}, ${addingMembers(p, addedIds)}, added AS (
        INSERT INTO class_memberships (tenant_id, class_id, account_id, synced)
        SELECT ${p.tenantId}::uuid, ${p.id}::uuid, id, true FROM valid WHERE id IN (SELECT id FROM adding) AND ${ok}
        ON CONFLICT (tenant_id, class_id, account_id) DO UPDATE
          SET synced = true, manual = class_memberships.manual AND NOT class_memberships.manual_by_disconnect, manual_by_disconnect = false
          WHERE NOT class_memberships.synced
        RETURNING account_id
      ), changes AS (
        SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM demoted) + (SELECT count(*) FROM added) AS n
      )`;
}

/**
 * The tables whose statistics a class write's plan depends on. A write that
 * only adds members (Entra's member batch) or changes no members reads every
 * row by a unique key: the class and the accounts by their primary keys, a
 * membership by its own as the insert's conflict target. It names none and
 * is prepared from its first run, as a first sync's member batches follow its
 * class creates within a second or two. Removing or replacing members reads
 * a class's memberships, a range the statistics size.
 */
function classTables(members: MemberShape): PlannedTable[] {
  return members === 'none' || members === 'add' ? [] : ['classes', 'accounts', 'class_memberships'];
}

interface ClassWritten extends ClassRow {
  ok: boolean;
  changes: string;
}

// A create writes the class before its memberships: the class row and the
// rows that reference it are inserted by one statement. Its own plan reads
// rows by unique keys only (members by the accounts' primary key, a class to
// adopt by the tenant's external id), so no statistics change it and it is
// prepared from its first run: a first sync creates every class within a
// second or two of the first, before the classes table has statistics. The
// name is looked up inside class_name_is_free, whose query PL/pgSQL plans
// apart (test/query-plans.test.ts checks that plan too).
const createClass = perShape<ClassWritten>(() => (p) => sql<ClassWritten>`${preparedOn(...classTables('add'))}
    WITH ${validMembers(p, p.usersExist)}, ${addingMembers(p, p.add)},
    checked AS (
      SELECT ${connected(p)} AND ${nameIsFree(p)} AND ${allMembersValid}
         AND (NOT ${p.nothingToAdopt}::boolean OR NOT EXISTS (
               SELECT 1 FROM classes WHERE tenant_id = ${p.tenantId}::uuid AND external_id = ${p.external_id}::text AND managed_by = 'manual')) AS ok
    ), written AS (
      INSERT INTO classes (tenant_id, id, managed_by, ${columnList(CLASS_WRITE_COLUMNS)})
      SELECT ${p.tenantId}::uuid, ${p.id}::uuid, 'sync', ${valueList(p, CLASS_COLUMN_TYPES, CLASS_WRITE_COLUMNS)}
       WHERE (SELECT ok FROM checked)
      RETURNING ${classColumns('classes')}
    ), added AS (
      INSERT INTO class_memberships (tenant_id, class_id, account_id, synced)
      SELECT w.tenant_id, w.id, v.id, true FROM written w, valid v WHERE v.id IN (SELECT id FROM adding)
      RETURNING account_id
    ), audited AS (${plannedAudit(p, 'display_name', sql`(SELECT count(*) FROM added)`)})
    SELECT w.*, (SELECT ok FROM checked) AS ok, (SELECT count(*) FROM added) AS changes
      FROM (SELECT 1) AS one LEFT JOIN written w ON true`);

// The class row is locked where its guards are read (`class`), before any
// membership changes: a write that commits meanwhile is then seen (PostgreSQL
// reads the locked row again), so the version guard holds for the row this
// statement writes, and a class deleted meanwhile fails the guard (the locked
// path answers 404) rather than leaving nothing written behind an answer.
// The lock comes after the tenant's turn and before the name's, the order
// every class write takes them in (executeClassPlan).
const updateClass = perShape<ClassWritten>((shape) => {
  const [members, values, adopt] = shape.split(' ') as [MemberShape, 'values' | 'members-only', 'adopt' | 'keep'];
  return (p) => {
    const leaving = leavingSteps(p, members);
    return sql<ClassWritten>`${preparedOn(...classTables(members))}
    WITH class AS (
      SELECT id, xmin::text AS row_version FROM classes
       WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid
         AND managed_by = ${adopt === 'adopt' ? sql`'manual'` : sql`'sync'`} AND ${classAtVersion(p)}
         FOR NO KEY UPDATE
    ), ${validMembers(p, p.usersExist)}, ${leaving.ctes}
    checked AS (
      -- CASE, whose order PostgreSQL keeps: the leaving rows are locked only
      -- after the tenant's turn, the class, the name and the members' accounts.
      SELECT CASE WHEN ${connected(p)} AND EXISTS (SELECT 1 FROM class)
         AND ${values === 'values' ? nameIsFree(p) : sql`true`}
         AND ${allMembersValid} THEN ${leaving.steady} ELSE false END AS ok
    ), ${memberSteps(p, members)},
    written AS (
      UPDATE classes
         SET ${values === 'values' ? sql`${setList(p, CLASS_COLUMN_TYPES, CLASS_WRITE_COLUMNS)}, ` : sql``}${adopt === 'adopt' ? sql`managed_by = 'sync', ` : sql``}
             version = version + 1, updated_at = clock_timestamp()
       WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid AND (SELECT ok FROM checked)
         AND ${values === 'values' ? sql`(SELECT n FROM changes) IS NOT NULL` : sql`(SELECT n FROM changes) > 0`}
      RETURNING ${classColumns('classes')}
    ), audited AS (${plannedAudit(p, 'display_name', sql`(SELECT n FROM changes)`)})
    SELECT w.*, (SELECT ok FROM checked) AS ok, (SELECT n FROM changes) AS changes
      FROM (SELECT 1) AS one LEFT JOIN written w ON true`;
  };
});

const deleteClass = perShape<ClassRow>(() => (p) => sql<ClassRow>`${preparedOn('classes')}
    WITH written AS (
      DELETE FROM classes
       WHERE tenant_id = ${p.tenantId}::uuid AND id = ${p.id}::uuid AND managed_by = 'sync' AND ${classAtVersion(p)} AND ${connected(p)}
      RETURNING ${classColumns('classes')}
    ), departures AS (
      DELETE FROM class_departures WHERE tenant_id = ${p.tenantId}::uuid AND class_id IN (SELECT id FROM written)
    ), audited AS (${plannedAudit(p, 'display_name')})
    SELECT ${CLASS_COLUMN_LIST} FROM written`);

/**
 * Whether a class write checks the version it was planned from: `guard`; or
 * not, as the plan comes from the class row its transaction read and still
 * holds, and no If-Match asks for it (`held`). The row cannot have moved
 * then, but its version as SCIM shows it still can, by a member whose
 * account is deleted meanwhile (classVersion), which such a write does not
 * depend on; a guard would fail every attempt that meets such a delete.
 */
export type VersionGuard = 'guard' | 'held';

/** What a class write wrote: the class row (undefined for a members-only write that changed nothing) and how many memberships changed. */
export interface ClassWrite {
  row: ClassRow | undefined;
  memberChanges: number;
}

/**
 * Runs a class plan; undefined when a guard failed and nothing was written.
 * A write that keeps a name unique takes its turn on the name inside its
 * statement (nameIsFree), so a create is one statement. A rename also takes
 * the turn (after the class row's lock) in a transaction of its own before
 * its statement: one that waits for the turn while its server dies is then
 * rolled back, never applied without an answer (a statement alone would
 * commit when the turn came).
 */
export async function executeClassPlan(db: Executor, plan: ClassPlan, guard: VersionGuard): Promise<ClassWrite | undefined> {
  if (plan.kind !== 'update' || !plan.guards.uniqueName || plan.values === undefined) return runClassPlan(db, plan, guard);
  const { display_name: name } = plan.values;
  return inTransaction(db, async (trx) => {
    // The order every class write takes its locks in: the tenant's turn, the
    // class row, then the name's turn. The locked path reads the class FOR
    // NO KEY UPDATE before its rename takes the name; a rename here that held
    // the name while it waited for the row would deadlock with it.
    await sql`SELECT tenant_is_connected(${plan.tenantId}::uuid)`.execute(trx);
    await sql`SELECT 1 FROM classes WHERE tenant_id = ${plan.tenantId}::uuid AND id = ${plan.id}::uuid FOR NO KEY UPDATE`.execute(trx);
    await sql`SELECT class_name_is_free(${plan.tenantId}::uuid, ${name}::text, ${plan.id}::uuid)`.execute(trx);
    return runClassPlan(trx, plan, guard);
  });
}

async function runClassPlan(db: Executor, plan: ClassPlan, guard: VersionGuard): Promise<ClassWrite | undefined> {
  const audit = auditParams(plan.events.audit);
  const version = guard === 'held' || plan.kind === 'create' ? null : (plan.guards.version ?? null);
  let written: ClassWritten | undefined;
  let result: ClassWrite | undefined;
  try {
    switch (plan.kind) {
      case 'create': {
        const params = {
          tenantId: plan.tenantId,
          id: plan.id,
          scim: classScim(plan.values),
          add: [...plan.members],
          usersExist: [...plan.guards.usersExist],
          nothingToAdopt: plan.guards.nothingToAdopt,
          uniqueName: plan.guards.uniqueName,
        };
        written = (await createClass('')(db, [params, classValues(plan.values), audit])).rows[0];
        break;
      }
      case 'update': {
        const members = plan.members;
        const params = {
          tenantId: plan.tenantId,
          id: plan.id,
          scim: classScim(plan.values),
          version,
          uniqueName: plan.guards.uniqueName,
          usersExist: [...plan.guards.usersExist],
          add: members?.kind === 'edit' ? [...members.add] : [],
          remove: members?.kind === 'edit' ? [...members.remove] : [],
          members: members?.kind === 'replace' ? [...members.members] : [],
        };
        const shape = `${memberShape(members)} ${plan.values ? 'values' : 'members-only'} ${plan.adopt ? 'adopt' : 'keep'}`;
        written = (await updateClass(shape)(db, [params, classValues(plan.values), audit])).rows[0];
        break;
      }
      case 'delete': {
        const params = { tenantId: plan.tenantId, id: plan.id, version };
        const row = (await deleteClass('')(db, [params, audit])).rows[0];
        result = row ? { row, memberChanges: 0 } : undefined;
        break;
      }
    }
  } catch (error) {
    // The class went away under a member add (its memberships' foreign key): a guard that failed.
    if (isForeignKeyViolation(error)) return undefined;
    throw uniqueViolation(error) ?? error;
  }
  if (plan.kind !== 'delete') {
    if (!written?.ok) return undefined;
    const { ok: _ok, changes, ...row } = written;
    result = { row: row.id === null ? undefined : row, memberChanges: Number(changes) };
  }
  if (result?.row) observed(db, plan.tenantId, plan.events.audit, result.row.id, result.row.display_name);
  return result;
}
