// The audit log and sync conflicts: what happened to a tenant's data, by whom
// (credential), in which request, with what outcome. Only what finds the
// object (its id and a reference such as the userName) is written; never
// attribute values or secrets.
import { sql, type KyselyPlugin, type RawBuilder, type Selectable } from 'kysely';
import type { AuditEventsTable, AuditOutcome, Db, Executor, JsonObject, SyncConflictsTable } from './database.js';

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
}

/**
 * The one rendering of an audit event into SQL: the INSERT of its row, from
 * the given source (a statement's CTE, for an event written beside its
 * write) or standalone.
 */
export function auditInsert(columns: AuditColumns, from?: RawBuilder<unknown>): RawBuilder<unknown> {
  const c = columns;
  return sql`INSERT INTO audit_events (tenant_id, action, object_type, object_id, object_ref, outcome, credential_id, request_id, details)
    SELECT ${c.tenantId}, ${c.action}, ${c.objectType}, ${c.objectId}, ${c.objectRef}, ${c.outcome}, ${c.credentialId}, ${c.requestId}, ${c.details}
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

export async function recordAudit(db: Executor, event: AuditEvent): Promise<void> {
  await auditInsert(eventColumns(event)).execute(db);
  auditRecorded(db, event);
}

/** Tells the observers of an event whose row a statement of its own wrote (a write and its audit in one statement). */
export function auditRecorded(db: Executor, event: AuditEvent): void {
  for (const plugin of db.getExecutor().plugins) if (plugin instanceof AuditObserverPlugin) plugin.observe(event);
}

export interface AuditPage {
  events: AuditEventRow[];
  /** Pass as before to read the next (older) page; undefined on the last page. */
  next: string | undefined;
}

export async function listAuditEvents(db: Executor, tenantId: string, options: { limit: number; before?: string }): Promise<AuditPage> {
  let query = db.selectFrom('audit_events').selectAll().where('tenant_id', '=', tenantId);
  if (options.before !== undefined) query = query.where('id', '<', options.before);
  const rows = await query.orderBy('id', 'desc').limit(options.limit + 1).execute();
  const events = rows.slice(0, options.limit);
  return { events, next: rows.length > options.limit ? events[events.length - 1]?.id : undefined };
}

export interface NewConflict {
  tenantId: string;
  kind: string;
  objectType: 'user' | 'group';
  objectRef: string | null;
  accountId: string | null;
  requestId: string | null;
  detail: string;
}

export async function recordConflict(db: Executor, conflict: NewConflict): Promise<ConflictRow> {
  return db
    .insertInto('sync_conflicts')
    .values({
      tenant_id: conflict.tenantId,
      kind: conflict.kind,
      object_type: conflict.objectType,
      object_ref: conflict.objectRef,
      account_id: conflict.accountId,
      request_id: conflict.requestId,
      detail: conflict.detail,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function listOpenConflicts(db: Executor, tenantId: string, limit = 100): Promise<ConflictRow[]> {
  return db
    .selectFrom('sync_conflicts')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('resolved_at', 'is', null)
    .orderBy('at', 'desc')
    .limit(limit)
    .execute();
}
