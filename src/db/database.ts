// Row types of every table and the Kysely instance over a pg pool. Nothing here
// knows about HTTP or SCIM.
import { createHash } from 'node:crypto';
import { CompiledQuery, Kysely, PostgresDialect, sql, type ColumnType, type Generated, type GeneratedAlways, type QueryResult, type RawBuilder, type Transaction } from 'kysely';
import pg from 'pg';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
type Json<T> = ColumnType<T, string | undefined, string>;

export type Role = 'student' | 'teacher' | 'staff' | 'admin';
export type ManagedBy = 'sync' | 'manual';
/** Whether a tenant's synced class names are unique (Microsoft's SCIM guidance) or may repeat across its schools. */
export type ClassNames = 'unique' | 'repeat';
export type JsonObject = Record<string, unknown>;

export interface TenantsTable {
  id: Generated<string>;
  name: string;
  verified_domains: ColumnType<string[], string[] | undefined, string[]>;
  role_mapping: Json<Record<string, Role>>;
  class_names: ColumnType<ClassNames, ClassNames | undefined, ClassNames>;
  retention_days: ColumnType<number, number | undefined, number>;
  /** The Entra tenant id (tid) the tenant is bound to (migration 0009); one Entra tenant to one tenant at most. */
  entra_tenant_id: string | null;
  /** Whether requests may authenticate with the bearer token Entra signs itself for the bound Entra tenant. */
  accept_entra_token: ColumnType<boolean, boolean | undefined, boolean>;
  disconnected_at: NullableTimestamp;
  last_request_at: NullableTimestamp;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

export interface CredentialsTable {
  tenant_id: string;
  id: Generated<string>;
  kind: 'token' | 'client';
  label: string | null;
  secret_hash: string | null;
  expires_at: NullableTimestamp;
  revoked_at: NullableTimestamp;
  last_used_at: NullableTimestamp;
  created_at: Generated<Date>;
}

export interface AccountsTable {
  tenant_id: string;
  id: Generated<string>;
  managed_by: ColumnType<ManagedBy, ManagedBy | undefined, ManagedBy>;
  role: ColumnType<Role, Role | undefined, Role>;
  user_name: string;
  external_id: string | null;
  email: string | null;
  given_name: string | null;
  family_name: string | null;
  display_name: string | null;
  school_id: string | null;
  grade: string | null;
  active: ColumnType<boolean, boolean | undefined, boolean>;
  scim: Json<JsonObject>;
  version: Generated<number>;
  created_at: Generated<Date>;
  updated_at: Timestamp;
  deleted_at: NullableTimestamp;
  /** Set in the portal on a synced account (rule 11): wins over the role sync writes until cleared. */
  role_override: ColumnType<SyncRoleValue | null, SyncRoleValue | null | undefined, SyncRoleValue | null>;
  grade_override: ColumnType<string | null, string | null | undefined, string | null>;
  /** true: the sync created this account (migration 0019), so a merge may absorb it; NULL: not recorded, the audit log says (account-repairs.ts). */
  created_by_sync: ColumnType<boolean | null, never, never>;
  /** Whether the SCIM document has more than one e-mail address (computed by PostgreSQL, migration 0013). */
  several_emails: GeneratedAlways<boolean>;
}

/** The roles sync may grant and an override may set: never admin. */
type SyncRoleValue = Exclude<Role, 'admin'>;

/** An id Entra keeps using for an account merged into another (migration 0010). */
export interface AccountAliasesTable {
  tenant_id: string;
  alias_id: string;
  account_id: string;
  created_at: Generated<Date>;
}

export interface ClassesTable {
  tenant_id: string;
  id: Generated<string>;
  managed_by: ColumnType<ManagedBy, ManagedBy | undefined, ManagedBy>;
  display_name: string;
  external_id: string | null;
  school_id: string | null;
  scim: Json<JsonObject>;
  version: Generated<number>;
  created_at: Generated<Date>;
  updated_at: Timestamp;
}

/** A synced member who left a class because their account was deleted (migration 0016). */
export interface ClassDeparturesTable {
  tenant_id: string;
  class_id: string;
  id: Generated<string>;
  account_id: string;
  departed_at: Generated<Date>;
}

/** Per tenant, the highest change-feed position the prune removed (migration 0022). */
export interface ChangeFeedPrunedTable {
  tenant_id: string;
  upto: string;
}

export interface ClassMembershipsTable {
  tenant_id: string;
  class_id: string;
  account_id: string;
  synced: ColumnType<boolean, boolean | undefined, boolean>;
  manual: ColumnType<boolean, boolean | undefined, boolean>;
  /** Manual only because a disconnect kept Entra's membership (migration 0021): Entra adding the member again makes it Entra's. */
  manual_by_disconnect: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: Generated<Date>;
}

export type AuditOutcome = 'success' | 'failure' | 'conflict';

export interface AuditEventsTable {
  tenant_id: string;
  id: Generated<string>;
  at: Generated<Date>;
  credential_id: string | null;
  request_id: string | null;
  action: string;
  object_type: string;
  object_id: string | null;
  object_ref: string | null;
  outcome: AuditOutcome;
  details: Json<JsonObject>;
}

export interface SyncConflictsTable {
  tenant_id: string;
  id: Generated<string>;
  at: Generated<Date>;
  kind: string;
  object_type: string;
  object_ref: string | null;
  account_id: string | null;
  request_id: string | null;
  detail: string;
  resolved_at: NullableTimestamp;
  /** Migration 0008: the latest refusal and how many there were while it was open. */
  last_seen_at: Timestamp;
  seen_count: ColumnType<number, number | undefined, number>;
  /** How it closed: the object's write succeeded, or the portal team resolved or dismissed it. */
  resolution: ConflictResolution | null;
  note: string | null;
  /** Migration 0018: the Entra object ids (externalId) of the users refused under it, at most ten. */
  entra_objects: ColumnType<string[], string[] | undefined, string[]>;
}

export type ConflictResolution = 'succeeded' | 'resolved' | 'dismissed';

export interface AdminCredentialsTable {
  id: Generated<string>;
  label: string | null;
  expires_at: NullableTimestamp;
  revoked_at: NullableTimestamp;
  created_at: Generated<Date>;
}

/** Status page sessions ended by a sign-out, until they would have expired (migration 0020). */
export interface AdminSessionEndsTable {
  credential_id: string;
  session_id: string;
  expires_at: Date;
}

/** SCIM requests per tenant and hour (migration 0004), for the status page. */
export interface RequestCountsTable {
  tenant_id: string;
  hour: Date;
  requests: ColumnType<string, number, number>;
  failures: ColumnType<string, number, number>;
  /** SCIM writes (POST, PUT, PATCH, DELETE of users and groups) and those that failed (isFailedRequest in services/health.ts; migration 0006). */
  writes: ColumnType<string, number | undefined, number>;
  write_failures: ColumnType<string, number | undefined, number>;
}

/** The change feed (migration 0007), written by triggers; the portal reads it through portal_changes(). */
export interface ChangeEventsTable {
  tenant_id: string;
  /** numeric: pg returns it as text. */
  position: Generated<string>;
  at: Generated<Date>;
  object_type: 'account' | 'class' | 'membership';
  object_id: string;
  related_id: string | null;
  action: string;
  changed: Generated<string[]>;
}

export interface Database {
  admin_credentials: AdminCredentialsTable;
  admin_session_ends: AdminSessionEndsTable;
  tenants: TenantsTable;
  credentials: CredentialsTable;
  accounts: AccountsTable;
  classes: ClassesTable;
  class_memberships: ClassMembershipsTable;
  audit_events: AuditEventsTable;
  sync_conflicts: SyncConflictsTable;
  request_counts: RequestCountsTable;
  change_events: ChangeEventsTable;
  account_aliases: AccountAliasesTable;
  class_departures: ClassDeparturesTable;
  change_feed_pruned: ChangeFeedPrunedTable;
}

export type Db = Kysely<Database>;
/** The database or a transaction: what the query functions run on. */
export type Executor = Db | Transaction<Database>;

/** Where a fixed statement's parameter goes: compiled in place of a value, bound on every run. */
class Parameter {
  constructor(readonly name: string) {}
}

/**
 * A fixed statement's text and the name of each of its parameters ($1, $2,
 * ...). A name used in several places is one parameter: it is sent once and
 * PostgreSQL binds it once.
 */
interface FixedText {
  sql: string;
  names: string[];
}

function compileFixed<P extends object>(db: Executor, build: (p: P) => RawBuilder<unknown>): FixedText {
  const standIns = new Proxy({}, { get: (_target, name) => new Parameter(String(name)) }) as P;
  const query = build(standIns).compile(db);
  const names: string[] = [];
  const numbers = new Map<string, number>();
  const numberOf = query.parameters.map((value) => {
    if (!(value instanceof Parameter)) throw new Error(`a fixed statement takes every value as a parameter: ${query.sql}`);
    let n = numbers.get(value.name);
    if (n === undefined) {
      n = names.push(value.name);
      numbers.set(value.name, n);
    }
    return n;
  });
  let seen = 0;
  const text = query.sql.replace(/\$(\d+)\b/g, (_match, digits: string) => {
    seen += 1;
    return `$${numberOf[Number(digits) - 1] ?? digits}`;
  });
  if (seen !== query.parameters.length) throw new Error(`a fixed statement's text holds a $ that is not a parameter: ${query.sql}`);
  return { sql: text, names };
}

/**
 * A statement whose text kysely compiles once, at its first run, instead of
 * on every run: for the hot statements (building and compiling one of their
 * templates costs about as much CPU as pg's whole round trip). `build` gets a
 * stand-in for each named parameter and may use them only as values
 * (sql`${p.tenantId}::uuid`); a text that depends on a value (how many
 * addresses, which column) is a statement of its own. Each run binds that
 * run's values in the compiled order.
 */
export function fixedStatement<P extends object, R>(build: (p: P) => RawBuilder<R>): (db: Executor, params: P) => Promise<QueryResult<R>> {
  let compiled: FixedText | undefined;
  return async (db, params) => {
    compiled ??= compileFixed(db, build);
    const values = params as Record<string, unknown>;
    return db.executeQuery(CompiledQuery.raw(compiled.sql, compiled.names.map((name) => values[name])));
  };
}

/**
 * fixedStatement whose parameters come from several objects (a plan's
 * values, its guards, its audit event), each name from the first that has
 * it: a run makes no merged copy of them. Each source keeps its keys from
 * run to run (the builder functions make them), so where each name is found
 * is looked up at the first run only.
 */
export function fixedStatementOver<R>(
  build: (p: Record<string, unknown>) => RawBuilder<R>,
): (db: Executor, sources: readonly Readonly<Record<string, unknown>>[]) => Promise<QueryResult<R>> {
  let compiled: (FixedText & { from: number[] }) | undefined;
  return async (db, sources) => {
    if (compiled === undefined) {
      const text = compileFixed(db, build);
      const from = text.names.map((name) => {
        const i = sources.findIndex((source) => Object.hasOwn(source, name));
        if (i < 0) throw new Error(`no value for the parameter ${name} of a fixed statement`);
        return i;
      });
      compiled = { ...text, from };
    }
    const { names, from } = compiled;
    const values = new Array<unknown>(names.length);
    for (let i = 0; i < names.length; i++) values[i] = sources[from[i] as number]?.[names[i] as string];
    return db.executeQuery(CompiledQuery.raw(compiled.sql, values));
  };
}

export interface DatabaseOptions {
  poolSize?: number;
  statementTimeoutMs?: number;
  /** How long a statement may wait for a lock before PostgreSQL ends it (55P03); unset, it waits up to the statement timeout. */
  lockTimeoutMs?: number;
  /** How long the client waits for any answer to a query; by default a second past the statement timeout. */
  queryTimeoutMs?: number;
  /** How long to wait for a connection before the request fails with 503. */
  connectionTimeoutMs?: number;
  applicationName?: string;
  /** Whether a SCIM table without statistics is analyzed once it has rows (see PlanStatistics); tests of plans without statistics turn it off. */
  analyzeNewTables?: boolean;
}

/** The tables whose statistics decide the plans of prepared statements. */
export type PlannedTable = 'accounts' | 'classes' | 'class_memberships';
const PLANNED_TABLES: readonly PlannedTable[] = ['accounts', 'classes', 'class_memberships'];

/**
 * Hot statements of a fixed text start with a comment made by preparedOn:
 * Entra's create, change, delete, member batch and read by id, and the
 * one-condition lookups. Once PostgreSQL has statistics on the tables the
 * comment names (see PlanStatistics), each is prepared once per connection
 * under a name derived from its text and then only bound and executed, so
 * PostgreSQL may plan it once rather than on every request (planning the
 * create costs more than running it). Only fixed texts may carry it, as each
 * stays prepared for the connection's life, and they name their columns: a
 * migration that adds a column does not change what a prepared statement
 * returns.
 */
export const PREPARED = '/* prepared on ';

/** What the comment names when no table's statistics change the plan. */
export const UNIQUE_KEYS = 'unique keys';

/**
 * The comment that marks a statement as prepared, naming the tables whose
 * plans it depends on. A statement that reads every row by a unique key
 * (the primary key, or a unique index on all of its columns) names none: no
 * statistics change its plan, so it is prepared from its first run.
 */
export function preparedComment(tables: readonly PlannedTable[]): string {
  return `${PREPARED}${tables.length === 0 ? UNIQUE_KEYS : tables.join(', ')} */`;
}

/** preparedComment as the head of a sql`` template. */
export function preparedOn(...tables: PlannedTable[]): RawBuilder<unknown> {
  return sql.raw(preparedComment(tables));
}

interface Statement {
  name: string;
  tables: PlannedTable[];
}

const statements = new Map<string, Statement>();

function statement(text: string): Statement {
  let found = statements.get(text);
  if (found === undefined) {
    const head = text.slice(PREPARED.length, text.indexOf(' */'));
    found = {
      name: `portal_scim_${createHash('sha256').update(text).digest('base64url').slice(0, 24)}`,
      tables: PLANNED_TABLES.filter((table) => head.split(', ').includes(table)),
    };
    statements.set(text, found);
  }
  return found;
}

// A marked statement is planned on every run until its tables have
// statistics, which costs a create about as much as running it: checking
// every second prepares a first sync's statements within a second of each
// table's ANALYZE (at ANALYZE_AT_ROWS rows). A check is two small queries per
// table still without statistics.
const STATISTICS_CHECK_MS = 1000;
/** Autovacuum's default: a table is analyzed once it has this many rows. */
const ANALYZE_AT_ROWS = 50;

/**
 * Which of the planned tables have column statistics. After a few runs
 * PostgreSQL may reuse a prepared statement's generic plan, made without the
 * parameters' values and kept until the table's next ANALYZE. Without
 * statistics every index led by tenant_id looks alike and that plan can read
 * a whole tenant, so until then marked statements are sent unnamed and
 * planned on every run.
 *
 * A new database would wait for autovacuum's first round (a minute or more,
 * most of Entra's first cycle) or never get one where autovacuum is off: a
 * table without statistics is analyzed here as soon as it has
 * ANALYZE_AT_ROWS rows. The check runs beside the statements, at most once a
 * second, until every table has statistics.
 */
class PlanStatistics {
  private readonly analyzed = new Set<PlannedTable>();
  private checkedAt = 0;
  private checking: Promise<ReadonlySet<PlannedTable>> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private analyzeNewTables: boolean,
  ) {}

  /** Whether the tables had statistics at the last check; starts a new check in the background when it is old. */
  cover(tables: readonly PlannedTable[]): boolean {
    if (tables.every((table) => this.analyzed.has(table))) return true;
    if (Date.now() - this.checkedAt >= STATISTICS_CHECK_MS) void this.check().catch(() => undefined);
    return false;
  }

  /** Checks now, analyzing the tables that have enough rows and no statistics. */
  async check(): Promise<ReadonlySet<PlannedTable>> {
    if (this.analyzed.size === PLANNED_TABLES.length) return this.analyzed;
    this.checking ??= (async () => {
      this.checkedAt = Date.now();
      try {
        for (const table of PLANNED_TABLES) {
          if (this.analyzed.has(table)) continue;
          if (!(await this.hasStatistics(table))) {
            const { rows } = await this.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM (SELECT 1 FROM ${table} LIMIT ${ANALYZE_AT_ROWS}) t`);
            if (!this.analyzeNewTables || (rows[0]?.n ?? 0) < ANALYZE_AT_ROWS) continue;
            try {
              await this.pool.query(`ANALYZE ${table}`);
            } catch {
              // A role that does not own the tables may not analyze them: autovacuum will.
              this.analyzeNewTables = false;
              continue;
            }
            if (!(await this.hasStatistics(table))) continue;
          }
          this.analyzed.add(table);
        }
        return this.analyzed;
      } finally {
        this.checking = undefined;
      }
    })();
    return this.checking;
  }

  private async hasStatistics(table: PlannedTable): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      `SELECT 1 FROM pg_stats WHERE schemaname = current_schema() AND tablename = $1 AND attname = 'tenant_id'`,
      [table],
    );
    return (rowCount ?? 0) > 0;
  }
}

const planStatistics = new WeakMap<pg.Pool, PlanStatistics>();

/** Checks now which tables have statistics, for the pool's marked statements (see PlanStatistics). */
export async function analyzedTables(pool: pg.Pool): Promise<ReadonlySet<PlannedTable>> {
  return (await planStatistics.get(pool)?.check()) ?? new Set();
}

/** pg's error when query_timeout passes without an answer. */
function isQueryTimeout(error: unknown): boolean {
  return error instanceof Error && error.message === 'Query read timeout';
}

/**
 * The plans a session makes for statements with parameters, as this client
 * last set them: PostgreSQL's default choice, or generic plans only. Unknown
 * once something may have changed the setting behind it: a rollback (which
 * undoes a SET made in its transaction, and which a COMMIT of a failed
 * transaction turns into), a SET, RESET or DISCARD of the caller's own, or a
 * SET of this client's that failed.
 */
type PlanMode = 'default' | 'generic' | 'unknown';

const SESSION_CHANGE = /^\s*(rollback|abort|set|reset|discard)\b/i;
const TRANSACTION_END = /^\s*(commit|end)\b/i;

/**
 * Sends the client's marked statements (kysely's query(text, values)) as
 * named ones once their tables have statistics, and ends the client when a
 * query of kysely's gets no answer in time.
 *
 * The named statements run with their generic plans, planned for any values
 * of their parameters: the plans test/query-plans.test.ts checks, led by
 * tenant_id and narrowed by a second column. PostgreSQL's default keeps
 * planning a statement for each run's values when that plan looks cheaper,
 * and for a school added since the last ANALYZE (when the statistics' most
 * common tenants covered every row) it estimates one row: the lookups and
 * guards of its initial sync would then read the school's prefix of the
 * primary key and filter every row of it, until the next ANALYZE. Every other
 * statement keeps the default, which plans an ad hoc query for its values
 * (a partial index it can then prove, a small tenant among large ones). The
 * setting is sent, and answered, before the statement, only when the session
 * may not have it: when a statement of the other kind comes, or after
 * PlanMode became unknown.
 *
 * pg gives up on a query that timed out but keeps the connection, and kysely
 * puts it back in the pool: later queries would queue behind the unanswered
 * one, and a ROLLBACK that timed out in that queue is dropped unsent, so the
 * next request would run inside the failed request's transaction. Ended, the
 * client leaves the pool when kysely releases it, and PostgreSQL rolls back
 * whatever the connection had open once it answers again.
 */
function instrumentClient(client: pg.PoolClient, statistics: PlanStatistics): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const endOnTimeout = (error: unknown): void => {
    if (isQueryTimeout(error)) void client.end().catch(() => undefined);
  };
  let mode: PlanMode = 'default';
  /** Sets the session's plans when it may not have them: the statement goes once that is answered. A failure (in an aborted transaction) leaves the mode unknown, and the statement meets the same error. */
  const planWith = (wanted: Exclude<PlanMode, 'unknown'>, send: () => unknown): unknown => {
    if (mode === wanted) return send();
    mode = wanted;
    const set = query(wanted === 'generic' ? 'SET plan_cache_mode = force_generic_plan' : 'RESET plan_cache_mode') as Promise<unknown>;
    return set.then(send, (error: unknown) => {
      mode = 'unknown';
      endOnTimeout(error);
      return send();
    });
  };
  (client as { query: unknown }).query = (...args: unknown[]) => {
    const [text, values] = args;
    const marked = args.length === 2 && typeof text === 'string' && text.startsWith(PREPARED) && Array.isArray(values) ? statement(text) : undefined;
    let result: unknown;
    if (marked && statistics.cover(marked.tables)) {
      result = planWith('generic', () => query({ name: marked.name, text, values }));
    } else {
      result = Array.isArray(values) && values.length > 0 ? planWith('default', () => query(...args)) : query(...args);
      if (typeof text === 'string') {
        if (SESSION_CHANGE.test(text)) mode = 'unknown';
        // Runs before the caller sees the answer: PostgreSQL answers ROLLBACK to the COMMIT of a failed transaction.
        else if (TRANSACTION_END.test(text) && result instanceof Promise) {
          result.then(
            (answer: { command?: string } | undefined) => {
              if (answer?.command !== 'COMMIT') mode = 'unknown';
            },
            () => {
              mode = 'unknown';
            },
          );
        }
      }
    }
    // kysely's calls return promises; pool.query's own callbacks release the client with the error, which ends it.
    if (result instanceof Promise) result.catch(endOnTimeout);
    return result;
  };
}

export function createDb(url: string, options: DatabaseOptions = {}): { db: Db; pool: pg.Pool } {
  const statementTimeoutMs = options.statementTimeoutMs ?? 15000;
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5000,
    idleTimeoutMillis: 30000,
    statement_timeout: statementTimeoutMs,
    ...(options.lockTimeoutMs === undefined ? {} : { lock_timeout: options.lockTimeoutMs }),
    // The statement timeout is PostgreSQL's: a server that stops answering
    // (stopped, or behind a network black hole) never sends it.
    query_timeout: options.queryTimeoutMs ?? statementTimeoutMs + 1000,
    // Finds connections whose server vanished without closing them.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    application_name: options.applicationName ?? 'portal-scim',
  });
  // An idle client losing its server (restart, failover) must not crash the
  // process; the pool drops it and the next checkout connects again.
  pool.on('error', () => undefined);
  const statistics = new PlanStatistics(pool, options.analyzeNewTables ?? true);
  planStatistics.set(pool, statistics);
  pool.on('connect', (client) => {
    // A checked-out client (a transaction between its statements) whose
    // server goes (a restart, a failover, a terminated backend) emits its
    // error with no query to take it: pg-pool listens only while the client
    // is idle, and an event without a listener would end the process. The
    // client is then not queryable: its next statement fails, the request
    // answers 503, and the pool drops it when it is released.
    client.on('error', () => undefined);
    instrumentClient(client, statistics);
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return { db, pool };
}

/** What runs when a transaction that inTransaction began commits: the observers of what it wrote. */
const commitHooks = new WeakMap<Executor, (() => void)[]>();

/**
 * Runs `hook` once what `db` wrote is committed: at once outside a
 * transaction (the statement committed itself), at the commit of a
 * transaction inTransaction began, and never when that one rolls back.
 */
export function afterCommit(db: Executor, hook: () => void): void {
  const hooks = commitHooks.get(db);
  if (hooks) hooks.push(hook);
  else if (db.isTransaction) throw new Error('afterCommit needs a transaction begun by inTransaction: its commit is not seen otherwise');
  else hook();
}

/** Runs `run` in one transaction, committed when it resolves and rolled back when it throws. */
export async function inTransaction<T>(db: Executor, run: (trx: Executor) => Promise<T>): Promise<T> {
  if (db.isTransaction) return run(db);
  const hooks: (() => void)[] = [];
  const result = await db.transaction().execute((trx) => {
    commitHooks.set(trx, hooks);
    return run(trx);
  });
  for (const hook of hooks) hook();
  return result;
}
