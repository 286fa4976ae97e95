// Column sets named once for the statements that return them, and the
// condition by which statements find live rows by id.
import { sql, type RawBuilder, type Selectable } from 'kysely';
import type { AccountsTable, ClassesTable } from './database.js';

export type AccountRow = Selectable<AccountsTable>;
export type ClassRow = Selectable<ClassesTable>;

/**
 * The columns a SCIM answer is made of (toScimUser) and the role, named for
 * the prepared statements (see PREPARED): fewer columns than the table's are
 * fewer to describe and parse on every run.
 */
export const RESOURCE_COLUMN_NAMES = ['id', 'external_id', 'user_name', 'active', 'scim', 'version', 'created_at', 'updated_at', 'role'] as const satisfies readonly (keyof AccountsTable)[];
export const RESOURCE_COLUMNS = sql.raw(RESOURCE_COLUMN_NAMES.join(', '));
export type AccountResource = Pick<AccountRow, (typeof RESOURCE_COLUMN_NAMES)[number]>;

/** Every column of classes. */
export const CLASS_COLUMN_NAMES = [
  'tenant_id',
  'id',
  'managed_by',
  'display_name',
  'external_id',
  'school_id',
  'scim',
  'version',
  'created_at',
  'updated_at',
] as const satisfies readonly (keyof ClassesTable)[];

/** Every column of classes by name alone: the columns of a statement's own result (a CTE's RETURNING). */
export const CLASS_COLUMN_LIST = sql.raw(CLASS_COLUMN_NAMES.join(', '));

/**
 * A class's version as SCIM shows it (meta.version, ETag, If-Match): the
 * row's version plus the synced members who left with their accounts, whose
 * delete cannot move the row's (migration 0016). `table` names the classes
 * row in the statement.
 */
export function classVersion(table: string): RawBuilder<number> {
  const t = sql.table(table);
  return sql<number>`(${t}.version + (SELECT count(*) FROM class_departures d WHERE d.tenant_id = ${t}.tenant_id AND d.class_id = ${t}.id))::integer`;
}

/** When a class last changed as SCIM shows it (meta.lastModified): its row, or a member who left with their account since. */
export function classUpdatedAt(table: string): RawBuilder<Date> {
  const t = sql.table(table);
  return sql<Date>`greatest(${t}.updated_at, (SELECT max(d.departed_at) FROM class_departures d WHERE d.tenant_id = ${t}.tenant_id AND d.class_id = ${t}.id))`;
}

/** Every column of classes as a read returns them, the version and the time of the last change as SCIM shows them, named for the prepared statements (see PREPARED). */
export function classColumns(table: string): RawBuilder<unknown> {
  const t = sql.table(table);
  const column = (name: (typeof CLASS_COLUMN_NAMES)[number]) => {
    if (name === 'version') return sql`${classVersion(table)} AS version`;
    if (name === 'updated_at') return sql`${classUpdatedAt(table)} AS updated_at`;
    return sql`${t}.${sql.raw(name)}`;
  };
  return sql.join(CLASS_COLUMN_NAMES.map(column));
}

/**
 * "Live" for statements that find accounts by id. `deleted_at IS NULL` would
 * let the planner pick a partial index led by tenant_id instead of the
 * primary key whenever it cannot tell them apart: before the table's first
 * ANALYZE (a new database) or for a tenant the statistics have not seen yet.
 * It then reads every account of the tenant. This form matches no partial
 * index, so the primary key is the only way in.
 */
export const LIVE_BY_ID = sql<boolean>`coalesce(deleted_at, 'infinity') = 'infinity'`;
