// What a SCIM write is, once the school rules have decided it: a write plan.
// The planners (src/scim/user-writes.ts, class-writes.ts) make plans; the
// statement builder (write-statements.ts) renders each into one SQL
// statement whose guards make it write nothing if the rows it was planned
// from have changed. The write columns are named here once, checked against
// the row types, so a column cannot be left out of one statement.
import type { Selectable } from 'kysely';
import type { AccountsTable, ClassesTable, JsonObject, Role } from './database.js';
import type { PlannedAuditEvent, PlannedSettle } from './audit.js';

/** The account columns a SCIM write sets. */
export const ACCOUNT_WRITE_COLUMNS = [
  'user_name',
  'external_id',
  'email',
  'given_name',
  'family_name',
  'display_name',
  'school_id',
  'grade',
  'active',
  'role',
  'scim',
] as const satisfies readonly (keyof AccountsTable)[];

/** The class columns a SCIM write sets. */
export const CLASS_WRITE_COLUMNS = ['display_name', 'external_id', 'school_id', 'scim'] as const satisfies readonly (keyof ClassesTable)[];

type AccountWriteColumn = (typeof ACCOUNT_WRITE_COLUMNS)[number];
type ClassWriteColumn = (typeof CLASS_WRITE_COLUMNS)[number];

/** Columns the server keeps itself: keys, ownership, version and times; the portal's overrides, which sync never writes (rule 11); and what PostgreSQL computes. */
type AccountServerColumn =
  | 'tenant_id'
  | 'id'
  | 'managed_by'
  | 'version'
  | 'created_at'
  | 'updated_at'
  | 'deleted_at'
  | 'created_by_sync'
  | 'role_override'
  | 'grade_override'
  | 'several_emails';
type ClassServerColumn = 'tenant_id' | 'id' | 'managed_by' | 'version' | 'created_at' | 'updated_at';

/**
 * Every column of a table is a write column or a server column: a migration
 * that adds a column fails the typecheck here until it is listed in one.
 */
type Covers<Table, Listed extends keyof Table> = Exclude<keyof Table, Listed> extends never ? true : { unlisted: Exclude<keyof Table, Listed> };
const accountColumnsCovered: Covers<AccountsTable, AccountWriteColumn | AccountServerColumn> = true;
const classColumnsCovered: Covers<ClassesTable, ClassWriteColumn | ClassServerColumn> = true;
void accountColumnsCovered;
void classColumnsCovered;

/** The SQL type of each write column, for the statements' parameters. */
export const ACCOUNT_COLUMN_TYPES: Readonly<Record<AccountWriteColumn, 'text' | 'boolean' | 'jsonb'>> = {
  user_name: 'text',
  external_id: 'text',
  email: 'text',
  given_name: 'text',
  family_name: 'text',
  display_name: 'text',
  school_id: 'text',
  grade: 'text',
  active: 'boolean',
  role: 'text',
  scim: 'jsonb',
};

export const CLASS_COLUMN_TYPES: Readonly<Record<ClassWriteColumn, 'text' | 'jsonb'>> = {
  display_name: 'text',
  external_id: 'text',
  school_id: 'text',
  scim: 'jsonb',
};

/** The columns a SCIM write sets, derived from the resource by the mapper; scim as an object, and never the admin role. */
export type AccountValues = Omit<Pick<Selectable<AccountsTable>, AccountWriteColumn>, 'role' | 'scim'> & { role: Exclude<Role, 'admin'>; scim: JsonObject };

export type ClassValues = Omit<Pick<Selectable<ClassesTable>, ClassWriteColumn>, 'scim'> & { scim: JsonObject };

// The values types carry exactly the write columns.
const accountValuesMatch: Covers<AccountValues, AccountWriteColumn> = true;
const classValuesMatch: Covers<ClassValues, ClassWriteColumn> = true;
void accountValuesMatch;
void classValuesMatch;

/**
 * Where a plan runs: a statement of its own (quick), or inside the locked
 * path's transaction after its rows were read and locked.
 */
export type ExecutionPath = 'quick' | 'locked';

/**
 * The events a write records in its own statement, beside the write and
 * only when it writes. Each kind of event is rendered by one helper.
 */
export interface WriteEvents {
  /** Written when the write writes; its object id and reference are the written row's. */
  audit?: PlannedAuditEvent | undefined;
  /**
   * A user write that succeeds closes the open conflicts of its userName
   * (rule 3's refusals), each with an audit event. Few writes have any to
   * close: the quick statement only requires that there is none, and a write
   * that finds one is done on the locked path, which closes them.
   */
  settles?: PlannedSettle | undefined;
}

/** A delete of an account or a class: of the version read, or (undefined) of whatever version is live. */
export interface DeletePlan {
  kind: 'delete';
  tenantId: string;
  id: string;
  guards: { version: number | undefined };
  events: WriteEvents;
}

/**
 * Rule 3's guard: no live admin account of the tenant (but the row itself)
 * has one of these addresses, in any case lower() folds. A change that takes
 * no new address has none to guard.
 */
export type AdminGuard = readonly [] | readonly [string] | readonly [string, string];

export type AccountPlan =
  | {
      kind: 'create';
      tenantId: string;
      /** The new account's id, chosen by the planner so the plan is complete before it runs. */
      id: string;
      values: AccountValues;
      guards: {
        noAdmin: AdminGuard;
        /** Rules 2 and 8: nothing a create would adopt instead: no manual account with an adoptable address (one in a verified domain, per address) or with the Entra object id. */
        nothingToAdopt: { adoptable: readonly boolean[] };
      };
      events: WriteEvents;
    }
  | {
      kind: 'update';
      tenantId: string;
      id: string;
      values: AccountValues;
      /** Adoption (rules 2 and 8): a manual account becomes managed by sync. */
      adopt: boolean;
      guards: { version: number; noAdmin: AdminGuard };
      events: WriteEvents;
    }
  | DeletePlan;

/** An account's create or change: the plans that write its values. */
export type AccountWritePlan = Exclude<AccountPlan, DeletePlan>;

/**
 * The synced members of a class after a write, as a set operation that never
 * reads the member list: either an edit of the current set (remove some,
 * then add some; disjoint) or a replacement of it. Manual memberships stay.
 */
export type MemberChange = { kind: 'edit'; remove: readonly string[]; add: readonly string[] } | { kind: 'replace'; members: readonly string[] };

export type ClassPlan =
  | {
      kind: 'create';
      tenantId: string;
      id: string;
      values: ClassValues;
      /** The synced members the class starts with. */
      members: readonly string[];
      guards: {
        /** Rule 8: no manual class has the Entra object id (it would be adopted instead). */
        nothingToAdopt: boolean;
        /** No other synced class of the tenant has the name, in any case. */
        uniqueName: boolean;
        /** Rule 5: these ids (every one the request names to add) are synced, live users of the tenant. */
        usersExist: readonly string[];
      };
      events: WriteEvents;
    }
  | {
      kind: 'update';
      tenantId: string;
      id: string;
      /** undefined: the members alone change; the row's version moves only if they do. */
      values: ClassValues | undefined;
      /** Adoption (rule 8): a manual class becomes managed by sync. */
      adopt: boolean;
      members: MemberChange | undefined;
      guards: { version: number | undefined; uniqueName: boolean; usersExist: readonly string[] };
      events: WriteEvents;
    }
  | DeletePlan;
