// Row types of every table and the Kysely instance over a pg pool. Nothing here
// knows about HTTP or SCIM.
import { Kysely, PostgresDialect, type ColumnType, type Generated } from 'kysely';
import pg from 'pg';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
type Json<T> = ColumnType<T, string | undefined, string>;

export type Role = 'student' | 'teacher' | 'staff' | 'admin';
export type ManagedBy = 'sync' | 'manual';
export type JsonObject = Record<string, unknown>;

export interface TenantsTable {
  id: Generated<string>;
  name: string;
  verified_domains: ColumnType<string[], string[] | undefined, string[]>;
  role_mapping: Json<Record<string, Role>>;
  retention_days: ColumnType<number, number | undefined, number>;
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

export interface ClassMembershipsTable {
  tenant_id: string;
  class_id: string;
  account_id: string;
  synced: ColumnType<boolean, boolean | undefined, boolean>;
  manual: ColumnType<boolean, boolean | undefined, boolean>;
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
}

export interface AdminCredentialsTable {
  id: Generated<string>;
  label: string | null;
  expires_at: NullableTimestamp;
  revoked_at: NullableTimestamp;
  created_at: Generated<Date>;
}

/** SCIM requests per tenant and hour (migration 0004), for the status page. */
export interface RequestCountsTable {
  tenant_id: string;
  hour: Date;
  requests: ColumnType<string, number, number>;
  failures: ColumnType<string, number, number>;
}

export interface Database {
  admin_credentials: AdminCredentialsTable;
  tenants: TenantsTable;
  credentials: CredentialsTable;
  accounts: AccountsTable;
  classes: ClassesTable;
  class_memberships: ClassMembershipsTable;
  audit_events: AuditEventsTable;
  sync_conflicts: SyncConflictsTable;
  request_counts: RequestCountsTable;
}

export type Db = Kysely<Database>;

export interface DatabaseOptions {
  poolSize?: number;
  statementTimeoutMs?: number;
  /** How long to wait for a connection before the request fails with 503. */
  connectionTimeoutMs?: number;
  applicationName?: string;
}

export function createDb(url: string, options: DatabaseOptions = {}): { db: Db; pool: pg.Pool } {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5000,
    idleTimeoutMillis: 30000,
    statement_timeout: options.statementTimeoutMs ?? 15000,
    application_name: options.applicationName ?? 'portal-scim',
  });
  // An idle client losing its server (restart, failover) must not crash the
  // process; the pool drops it and the next checkout connects again.
  pool.on('error', () => undefined);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return { db, pool };
}
