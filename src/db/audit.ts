// The audit log and sync conflicts: what happened to a tenant's data, by whom
// (credential), in which request, with what outcome. Only what finds the
// object (its id and a reference such as the userName) is written; never
// attribute values or secrets. A failed write keeps the SCIM error's detail
// as Entra received it. A conflict is one row per open conflict of an
// object, and each step of its life is an audit event: opened, seen again
// (a refusal of the same object while it is open), closed (the object's
// write succeeded, or the portal team resolved or dismissed it).
import { sql, type KyselyPlugin, type RawBuilder, type Selectable } from 'kysely';
import { afterCommit, type AuditEventsTable, type AuditOutcome, type ConflictResolution, type Db, type Executor, type JsonObject, type SyncConflictsTable } from './database.js';
import { ForeignKeyViolation } from './errors.js';

export type AuditEventRow = Selectable<AuditEventsTable>;
export type ConflictRow = Selectable<SyncConflictsTable>;

export type AuditAction =
  | 'create'
  | 'update'
  | 'deactivate'
  | 'reactivate'
  | 'delete'
  | 'adopt'
  | 'conflict'
  | 'conflict-closed'
  | 'purge'
  | 'disconnect'
  | 'connect'
  | 'settings'
  | 'credential'
  | 'override'
  | 'merge';

export interface AuditEvent {
  tenantId: string;
  action: AuditAction;
  objectType: 'user' | 'group' | 'tenant' | 'credential';
  objectId?: string | null;
  objectRef?: string | null;
  outcome: AuditOutcome;
  credentialId?: string | null;
  requestId?: string | null;
  details?: JsonObject;
  /** When it happened, for an event written later (a failed write waiting out an outage); else when it is written. */
  at?: Date;
}

/**
 * The audit event of a row write, as a write plan carries it: its tenant,
 * object id and reference are the written row's, filled in by the statement.
 * `memberCount` asks the statement to add how many memberships it changed to
 * the details (under that key), and "members" to `details.changed` when any did.
 */
export interface PlannedAuditEvent {
  action: AuditAction;
  objectType: 'user' | 'group';
  credentialId: string;
  requestId: string;
  details: JsonObject;
  memberCount?: { key: 'memberChanges' | 'membersAdded'; listChanged: boolean };
}

/** An audit row's columns as SQL: parameters, or columns of the statement that writes the object. */
export interface AuditColumns {
  tenantId: RawBuilder<unknown>;
  action: RawBuilder<unknown>;
  objectType: RawBuilder<unknown>;
  objectId: RawBuilder<unknown>;
  objectRef: RawBuilder<unknown>;
  outcome: RawBuilder<unknown>;
  credentialId: RawBuilder<unknown>;
  requestId: RawBuilder<unknown>;
  details: RawBuilder<unknown>;
  /** Only for an event written after it happened; the column's default (the transaction's time) otherwise. */
  at?: RawBuilder<unknown>;
}

/**
 * The one rendering of an audit event into SQL: the INSERT of its row, from
 * the given source (a statement's CTE, for an event written beside its
 * write) or standalone.
 */
export function auditInsert(columns: AuditColumns, from?: RawBuilder<unknown>): RawBuilder<unknown> {
  const c = columns;
  // now(), the column's default: the time of the transaction that writes it.
  return sql`INSERT INTO audit_events (tenant_id, action, object_type, object_id, object_ref, outcome, credential_id, request_id, details, at)
    SELECT ${c.tenantId}, ${c.action}, ${c.objectType}, ${c.objectId}, ${c.objectRef}, ${c.outcome}, ${c.credentialId}, ${c.requestId}, ${c.details}, ${c.at ?? sql`now()`}
    ${from ?? sql``}`;
}

/** A complete event's columns as parameters. */
function eventColumns(event: AuditEvent): AuditColumns {
  return {
    tenantId: sql`${event.tenantId}::uuid`,
    action: sql`${event.action}::text`,
    objectType: sql`${event.objectType}::text`,
    objectId: sql`${event.objectId ?? null}::uuid`,
    objectRef: sql`${event.objectRef ?? null}::text`,
    outcome: sql`${event.outcome}::text`,
    credentialId: sql`${event.credentialId ?? null}::uuid`,
    requestId: sql`${event.requestId ?? null}::text`,
    details: sql`${JSON.stringify(event.details ?? {})}::jsonb`,
    ...(event.at !== undefined ? { at: sql`${event.at}::timestamptz` } : {}),
  };
}

/** Told of every event recorded through a Db from observeAudit (the metrics count them). */
export type AuditObserver = (event: AuditEvent) => void;

// Rides on the Db (and so on every transaction begun from it) as a no-op
// Kysely plugin: each app observes its own events, with no global registry.
class AuditObserverPlugin implements KyselyPlugin {
  constructor(readonly observe: AuditObserver) {}
  transformQuery: KyselyPlugin['transformQuery'] = (args) => args.node;
  transformResult: KyselyPlugin['transformResult'] = async (args) => args.result;
}

export function observeAudit(db: Db, observe: AuditObserver): Db {
  return db.withPlugin(new AuditObserverPlugin(observe));
}

/**
 * Writes an event of its own. Its tenant must exist, and is locked as a
 * foreign key locks it: audit_events has no foreign key (migration 0024),
 * and the events written beside a write come from a row whose tenant that
 * statement checked.
 */
export async function recordAudit(db: Executor, event: AuditEvent): Promise<void> {
  const tenantExists = sql`FROM (SELECT 1 FROM tenants WHERE id = ${event.tenantId}::uuid FOR KEY SHARE) tenant`;
  const { numAffectedRows } = await auditInsert(eventColumns(event), tenantExists).execute(db);
  if (numAffectedRows === 0n) throw new ForeignKeyViolation('audit_events_tenant_id_fkey');
  auditRecorded(db, event);
}

/**
 * Tells the observers of an event whose row a statement of its own wrote (a
 * write and its audit in one statement), once it is committed: a transaction
 * that rolls back counts nothing.
 */
export function auditRecorded(db: Executor, event: AuditEvent): void {
  for (const plugin of db.getExecutor().plugins) if (plugin instanceof AuditObserverPlugin) afterCommit(db, () => plugin.observe(event));
}

export interface AuditPage {
  events: AuditEventRow[];
  /** Pass as before to read the next (older) page; undefined on the last page. */
  next: string | undefined;
}

/**
 * A tenant's audit events, newest first by when they happened: a failed write
 * that waited out an outage is written after later events, and lists where
 * its time puts it. Events of one time list in the order they were written.
 */
export async function listAuditEvents(db: Executor, tenantId: string, options: { limit: number; before?: string }): Promise<AuditPage | undefined> {
  let query = db.selectFrom('audit_events').selectAll().where('tenant_id', '=', tenantId);
  if (options.before !== undefined) {
    const before = options.before;
    // A cursor that names no event of the tenant is no page at all, not an empty last one.
    const cursor = await db.selectFrom('audit_events').select('id').where('tenant_id', '=', tenantId).where('id', '=', before).executeTakeFirst();
    if (!cursor) return undefined;
    query = query.where((eb) =>
      eb(
        eb.refTuple('at', 'id'),
        '<',
        eb.selectFrom('audit_events as b').select(['b.at', 'b.id']).where('b.tenant_id', '=', tenantId).where('b.id', '=', before).$asTuple('at', 'id'),
      ),
    );
  }
  const rows = await query.orderBy('at', 'desc').orderBy('id', 'desc').limit(options.limit + 1).execute();
  const events = rows.slice(0, options.limit);
  return { events, next: rows.length > options.limit ? events[events.length - 1]?.id : undefined };
}

export interface NewConflict {
  tenantId: string;
  kind: string;
  objectType: 'user' | 'group';
  /** What names the object (the Entra user's userName): one open conflict per tenant, kind and reference in any case. */
  objectRef: string;
  accountId: string | null;
  requestId: string | null;
  detail: string;
  /** The refused Entra user's object id (externalId), when it has one. */
  entraObject: string | null;
}

/** A conflict keeps the first ten Entra objects it refused: enough to tell them apart, never a growing row. */
const MAX_ENTRA_OBJECTS = 10;

/** The step of a refusal in its conflict's life: the first refusal opens it, later ones while it is open are seen again. */
export type ConflictStep = 'opened' | 'seen again';

/** The audit details every step of a conflict's life carries beside its own: which conflict. */
const conflictDetails = (conflict: RawBuilder<unknown>) => sql`jsonb_build_object('conflict', ${conflict}.id, 'kind', ${conflict}.kind)`;

/**
 * Records a refusal: opens the object's conflict, or updates the open one
 * (last seen, count, the latest detail and account in the way), and writes
 * `event` with the conflict and the step added to its details, in one
 * statement. Concurrent refusals of one object meet on the unique index.
 */
export async function recordConflict(db: Executor, conflict: NewConflict, event: AuditEvent): Promise<{ conflict: ConflictRow; step: ConflictStep }> {
  const columns = eventColumns(event);
  const result = await sql<ConflictRow>`WITH c AS (
      INSERT INTO sync_conflicts (tenant_id, kind, object_type, object_ref, account_id, request_id, detail, entra_objects)
      VALUES (${conflict.tenantId}::uuid, ${conflict.kind}::text, ${conflict.objectType}::text, ${conflict.objectRef}::text,
              ${conflict.accountId}::uuid, ${conflict.requestId}::text, ${conflict.detail}::text,
              CASE WHEN ${conflict.entraObject}::text IS NULL THEN '{}'::text[] ELSE ARRAY[${conflict.entraObject}::text] END)
      ON CONFLICT (tenant_id, object_type, lower(object_ref), kind) WHERE resolved_at IS NULL
      DO UPDATE SET last_seen_at = now(), seen_count = sync_conflicts.seen_count + 1,
                    detail = EXCLUDED.detail, account_id = EXCLUDED.account_id,
                    entra_objects = CASE WHEN EXCLUDED.entra_objects <@ sync_conflicts.entra_objects
                                           OR cardinality(sync_conflicts.entra_objects) >= ${MAX_ENTRA_OBJECTS}::integer
                                         THEN sync_conflicts.entra_objects
                                         ELSE sync_conflicts.entra_objects || EXCLUDED.entra_objects END
      RETURNING *
    ), audited AS (${auditInsert(
      {
        ...columns,
        details: sql`${columns.details} || ${conflictDetails(sql.raw('c'))}
          || jsonb_build_object('step', CASE WHEN c.seen_count = 1 THEN 'opened' ELSE 'seen again' END, 'seen', c.seen_count)`,
      },
      sql`FROM c`,
    )})
    SELECT * FROM c`.execute(db);
  const row = result.rows[0];
  if (!row) throw new Error('the conflict upsert returned no row');
  const step: ConflictStep = row.seen_count === 1 ? 'opened' : 'seen again';
  auditRecorded(db, { ...event, details: { ...event.details, conflict: row.id, kind: row.kind, step, seen: row.seen_count } });
  return { conflict: row, step };
}

/**
 * Closes an open conflict by hand (resolved or dismissed, with an optional
 * note) and writes its audit event, in one statement. Undefined when no
 * conflict with that id (of that tenant, when given) is open.
 */
export async function closeConflict(
  db: Executor,
  close: { id: string; tenantId?: string; resolution: Exclude<ConflictResolution, 'succeeded'>; note: string | null; details: JsonObject },
): Promise<ConflictRow | undefined> {
  const tenant = close.tenantId === undefined ? sql`true` : sql`tenant_id = ${close.tenantId}::uuid`;
  const result = await sql<ConflictRow>`WITH c AS (
      UPDATE sync_conflicts SET resolved_at = now(), resolution = ${close.resolution}::text, note = ${close.note}::text
       WHERE id = ${close.id}::uuid AND ${tenant} AND resolved_at IS NULL
      RETURNING *
    ), audited AS (${auditInsert(
      {
        tenantId: sql`c.tenant_id`,
        action: sql`'conflict-closed'`,
        objectType: sql`c.object_type`,
        objectId: sql`c.account_id`,
        objectRef: sql`c.object_ref`,
        outcome: sql`'success'`,
        credentialId: sql`NULL::uuid`,
        requestId: sql`NULL::text`,
        details: sql`${conflictDetails(sql.raw('c'))} || jsonb_build_object('resolution', c.resolution)
          || CASE WHEN c.note IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('note', c.note) END || ${JSON.stringify(close.details)}::jsonb`,
      },
      sql`FROM c`,
    )})
    SELECT * FROM c`.execute(db);
  const row = result.rows[0];
  if (row) {
    auditRecorded(db, {
      tenantId: row.tenant_id,
      action: 'conflict-closed',
      objectType: row.object_type as 'user' | 'group',
      objectId: row.account_id,
      objectRef: row.object_ref,
      outcome: 'success',
      details: { conflict: row.id, kind: row.kind, resolution: close.resolution, ...(row.note === null ? {} : { note: row.note }), ...close.details },
    });
  }
  return row;
}

/**
 * The conflicts a successful user write closes, as its statement carries
 * them: the open conflicts of that userName (in any case), each with an
 * audit event of the write's credential and request.
 */
export interface PlannedSettle {
  objectRef: string;
  credentialId: string;
  requestId: string;
}

/** The open conflicts of the user a settle names, by sync_conflicts_open_object_idx. */
const openConflictsOf = (p: Readonly<Record<string, unknown>>) =>
  sql`tenant_id = ${p.tenantId}::uuid AND object_type = 'user' AND lower(object_ref) = lower(${p.settleRef}::text) AND resolved_at IS NULL`;

/**
 * The CTEs that close the open conflicts of the written user (`written`,
 * with its tenant_id and id) and write each one's audit event, when the
 * statement writes. One probe of sync_conflicts_open_object_idx; a null
 * reference matches nothing.
 */
export function settleConflicts(p: Readonly<Record<string, unknown>>): RawBuilder<unknown> {
  return sql`settled AS (
      UPDATE sync_conflicts SET resolved_at = clock_timestamp(), resolution = 'succeeded'
       WHERE ${openConflictsOf(p)} AND EXISTS (SELECT 1 FROM written)
      RETURNING tenant_id, id, kind, object_ref
    ), settle_audited AS (${auditInsert(
      {
        tenantId: sql`s.tenant_id`,
        action: sql`'conflict-closed'`,
        objectType: sql`'user'`,
        objectId: sql`w.id`,
        objectRef: sql`s.object_ref`,
        outcome: sql`'success'`,
        credentialId: sql`${p.settleCredentialId}::uuid`,
        requestId: sql`${p.settleRequestId}::text`,
        details: sql`${conflictDetails(sql.raw('s'))} || '{"resolution": "succeeded"}'::jsonb`,
      },
      sql`FROM settled s, written w`,
    )})`;
}

/**
 * The guard that stands for settleConflicts where a statement leaves the
 * settle to the locked path: the user a settle names has no open conflict.
 * A probe of the same index, without the two modifying CTEs, which every
 * statement would start even when they find nothing.
 */
export function nothingToSettle(p: Readonly<Record<string, unknown>>): RawBuilder<unknown> {
  return sql`NOT EXISTS (SELECT 1 FROM sync_conflicts WHERE ${openConflictsOf(p)})`;
}

/** The parameters of settleConflicts (all null when the write closes nothing). */
export function settleParams(settle: PlannedSettle | undefined): { settleRef: string | null; settleCredentialId: string | null; settleRequestId: string | null } {
  return { settleRef: settle?.objectRef ?? null, settleCredentialId: settle?.credentialId ?? null, settleRequestId: settle?.requestId ?? null };
}

/** The statement's column that lists the ids of the conflicts it closed (null when none). */
export const SETTLED_COLUMN = sql`(SELECT array_agg(id) FROM settled) AS settled`;

/** SETTLED_COLUMN of a statement that closes none. */
export const NOTHING_SETTLED_COLUMN = sql`NULL::uuid[] AS settled`;

/** Tells the observers of the conflicts a write closed (settleConflicts). */
export function conflictsSettled(db: Executor, tenantId: string, settle: PlannedSettle | undefined, accountId: string, closed: readonly string[] | null): void {
  if (!settle || !closed) return;
  for (const conflict of closed) {
    auditRecorded(db, {
      tenantId,
      action: 'conflict-closed',
      objectType: 'user',
      objectId: accountId,
      objectRef: settle.objectRef,
      outcome: 'success',
      credentialId: settle.credentialId,
      requestId: settle.requestId,
      details: { conflict, resolution: 'succeeded' },
    });
  }
}

export type ConflictState = 'open' | 'closed' | 'all';

/** A tenant's conflicts: open ones by their latest refusal, closed ones by when they closed; newest first. */
export async function listConflicts(db: Executor, tenantId: string, options: { state?: ConflictState; limit?: number } = {}): Promise<ConflictRow[]> {
  const state = options.state ?? 'open';
  let query = db.selectFrom('sync_conflicts').selectAll().where('tenant_id', '=', tenantId);
  if (state === 'open') query = query.where('resolved_at', 'is', null);
  if (state === 'closed') query = query.where('resolved_at', 'is not', null);
  return query
    .orderBy(sql`resolved_at DESC NULLS FIRST`)
    .orderBy('last_seen_at', 'desc')
    .orderBy('id')
    .limit(options.limit ?? 100)
    .execute();
}

export async function listOpenConflicts(db: Executor, tenantId: string, limit = 100): Promise<ConflictRow[]> {
  return listConflicts(db, tenantId, { state: 'open', limit });
}

/** One conflict by its id, of any tenant (an operator names it by id alone), or of the tenant given. */
export async function findConflict(db: Executor, id: string, tenantId?: string): Promise<ConflictRow | undefined> {
  let query = db.selectFrom('sync_conflicts').selectAll().where('id', '=', id);
  if (tenantId !== undefined) query = query.where('tenant_id', '=', tenantId);
  return query.executeTakeFirst();
}

/** Recent failed writes that share one message (placeholders folded), with how many, when last, and the latest objects. */
export interface FailureGroup {
  /** The detail with quoted values, ids and numbers folded (see foldDetail): what the group shares. */
  message: string;
  count: number;
  firstAt: Date;
  lastAt: Date;
  /** The latest failure's status, scimType and detail, as Entra received them. */
  status: number | null;
  scimType: string | null;
  latestDetail: string | null;
  /** The latest distinct objects (userName, displayName, externalId or id), newest first. */
  objects: string[];
}

/**
 * How many failed answers an event stands for: one, or the count a tally of
 * throttled writes wrote (`details.answers`, plugins/activity.ts).
 */
export const answersIn = (details: string): RawBuilder<number> =>
  sql<number>`CASE WHEN jsonb_typeof(${sql.ref(details)} -> 'answers') = 'number' THEN (${sql.ref(details)} ->> 'answers')::int ELSE 1 END`;

/** The same for an event held in memory, as the metrics count it. */
export function answersOf(event: AuditEvent): number {
  const answers = event.details?.answers;
  return typeof answers === 'number' && Number.isInteger(answers) && answers > 0 ? answers : 1;
}

/**
 * A tenant's failed writes since `since`, grouped by their folded message,
 * the largest groups first, each counting every answer its events stand for.
 * Reads the failures through audit_events_failures_idx; one statement however
 * many groups.
 */
export async function listFailureGroups(
  db: Executor,
  tenantId: string,
  since: Date,
  options: { groups?: number; objects?: number } = {},
): Promise<FailureGroup[]> {
  const groups = options.groups ?? 10;
  const objects = options.objects ?? 5;
  const result = await sql<{
    message: string;
    count: string;
    first_at: Date;
    last_at: Date;
    status: string | null;
    scim_type: string | null;
    latest_detail: string | null;
    objects: string[] | null;
  }>`WITH f AS (
      SELECT id, at, details, ${answersIn('details')} AS answers,
             coalesce(details ->> 'message', 'HTTP ' || coalesce(details ->> 'status', '?')) AS message,
             coalesce(object_ref, details ->> 'externalId', object_id::text, details ->> 'id') AS object
        FROM audit_events
       WHERE tenant_id = ${tenantId}::uuid AND outcome = 'failure' AND at > ${since}::timestamptz
    ), g AS (
      SELECT message, sum(answers) AS count, min(at) AS first_at, max(at) AS last_at, max(id) AS last_id
        FROM f GROUP BY message ORDER BY sum(answers) DESC, max(id) DESC LIMIT ${groups}::int
    ), o AS (
      SELECT message, object, max(id) AS last_id FROM f WHERE object IS NOT NULL AND message IN (SELECT message FROM g) GROUP BY message, object
    ), ranked AS (
      SELECT message, object, row_number() OVER (PARTITION BY message ORDER BY last_id DESC) AS n FROM o
    )
    SELECT g.message, g.count, g.first_at, g.last_at,
           latest.details ->> 'status' AS status, latest.details ->> 'scimType' AS scim_type, latest.details ->> 'detail' AS latest_detail,
           (SELECT array_agg(r.object ORDER BY r.n) FROM ranked r WHERE r.message = g.message AND r.n <= ${objects}::int) AS objects
      FROM g JOIN f latest ON latest.id = g.last_id
     ORDER BY g.count DESC, g.last_id DESC`.execute(db);
  return result.rows.map((r) => ({
    message: r.message,
    count: Number(r.count),
    firstAt: r.first_at,
    lastAt: r.last_at,
    status: r.status === null ? null : Number(r.status),
    scimType: r.scim_type,
    latestDetail: r.latest_detail,
    objects: r.objects ?? [],
  }));
}
