// The value checks of the columns every SCIM write touches become domains.
// PostgreSQL reads a table's CHECK constraints from their stored text and
// plans them again for each statement that writes a row (ExecRelCheck), so
// every create, change and delete paid for them, and each change-feed row
// paid for its two once more; a domain's check is read once per connection
// and kept. The rules are the same: the same values, the same error (23514),
// now named after the domain (row_manager_check, ...).
//
// Each column first takes a domain without a check, which needs no rewrite
// of the table; the check is then added to the domain, which only reads the
// rows to validate them. The changed columns lose their statistics, so the
// tables that have rows are analyzed again at the end.
//
// The columns the portal's views show as they are (accounts.role and
// user_name, classes.display_name) keep their CHECK constraints, so the views
// keep the contract's column types. Views that read a changed column are made
// again from their own definition, with their options, comment and grants;
// a view of the portal's own built on them stops the migration with its name.
// Frozen once merged.
import { type Kysely, sql } from 'kysely';

interface Check {
  table: string;
  column: string;
  domain: string;
  /** The check, on VALUE for the domain and on the column for the table. */
  rule: (subject: string) => string;
}

const among = (values: readonly string[]) => (subject: string) => `${subject} IN (${values.map((v) => `'${v}'`).join(', ')})`;

const CHECKS: readonly Check[] = [
  { table: 'accounts', column: 'managed_by', domain: 'row_manager', rule: among(['sync', 'manual']) },
  { table: 'accounts', column: 'role_override', domain: 'override_role', rule: among(['student', 'teacher', 'staff']) },
  { table: 'accounts', column: 'grade_override', domain: 'override_grade', rule: (s) => `length(${s}) <= 512` },
  { table: 'classes', column: 'managed_by', domain: 'row_manager', rule: among(['sync', 'manual']) },
  { table: 'audit_events', column: 'outcome', domain: 'audit_outcome', rule: among(['success', 'failure', 'conflict']) },
  { table: 'change_events', column: 'object_type', domain: 'change_object_type', rule: among(['account', 'class', 'membership']) },
  {
    table: 'change_events',
    column: 'action',
    domain: 'change_action',
    rule: among(['created', 'updated', 'adopted', 'deactivated', 'reactivated', 'deleted', 'purged', 'disconnected', 'merged']),
  },
];

const TABLES = [...new Set(CHECKS.map((c) => c.table))];
const DOMAINS = [...new Map(CHECKS.map((c) => [c.domain, c])).values()];

/** The views that read the changed columns: ALTER COLUMN TYPE refuses a column a view uses. */
const VIEWS = ['portal_accounts', 'portal_classes'] as const;

interface SavedView {
  name: string;
  definition: string;
  options: string[] | null;
  comment: string | null;
  grants: string[] | null;
}

/** Drops the views, runs `change`, and makes them again as they were. */
async function aroundViews(db: Kysely<unknown>, change: () => Promise<void>): Promise<void> {
  const saved: SavedView[] = [];
  for (const name of VIEWS) {
    const dependents = await sql<{ name: string }>`
      SELECT DISTINCT v.oid::regclass::text AS name
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
       WHERE d.refobjid = ${name}::regclass AND v.oid <> ${name}::regclass`.execute(db);
    if (dependents.rows.length > 0) {
      const names = dependents.rows.map((r) => r.name).join(', ');
      throw new Error(`${names} depends on the view ${name}, which this upgrade makes again: drop it, upgrade, and create it again`);
    }
    const { rows } = await sql<SavedView>`
      SELECT c.relname AS name, pg_get_viewdef(c.oid) AS definition, c.reloptions AS options, obj_description(c.oid, 'pg_class') AS comment,
             (SELECT array_agg(format('GRANT %s ON %I TO %s%s', g.privilege_type, c.relname,
                                      CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                                      CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END))
                FROM aclexplode(c.relacl) g WHERE g.grantee <> c.relowner) AS grants
        FROM pg_class c WHERE c.oid = ${name}::regclass`.execute(db);
    const view = rows[0];
    if (view === undefined) throw new Error(`no view ${name}`);
    saved.push(view);
    await sql.raw(`DROP VIEW ${name}`).execute(db);
  }
  await change();
  for (const view of saved) {
    const options = view.options ? ` WITH (${view.options.join(', ')})` : '';
    await sql.raw(`CREATE VIEW ${view.name}${options} AS ${view.definition}`).execute(db);
    if (view.comment !== null) await sql`COMMENT ON VIEW ${sql.id(view.name)} IS ${sql.lit(view.comment)}`.execute(db);
    for (const grant of view.grants ?? []) await sql.raw(grant).execute(db);
  }
}

/**
 * Analyzes the tables again, those with rows: an empty table analyzed would
 * no longer count as never analyzed, whose plans the planner makes with care
 * (and the server analyzes a new table itself once it has rows).
 */
export async function analyzeWithRows(db: Kysely<unknown>, tables: readonly string[]): Promise<void> {
  for (const table of tables) {
    const { rows } = await sql.raw<{ any: boolean }>(`SELECT EXISTS (SELECT 1 FROM ${table}) AS any`).execute(db);
    if (rows[0]?.any) await sql.raw(`ANALYZE ${table}`).execute(db);
  }
}

const analyze = (db: Kysely<unknown>) => analyzeWithRows(db, TABLES);

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const d of DOMAINS) await sql.raw(`CREATE DOMAIN ${d.domain} AS text`).execute(db);
  await aroundViews(db, async () => {
    for (const table of TABLES) {
      const checks = CHECKS.filter((c) => c.table === table);
      const changes = checks.flatMap((c) => [`DROP CONSTRAINT ${c.table}_${c.column}_check`, `ALTER COLUMN ${c.column} TYPE ${c.domain}`]);
      await sql.raw(`ALTER TABLE ${table} ${changes.join(', ')}`).execute(db);
    }
  });
  for (const d of DOMAINS) await sql.raw(`ALTER DOMAIN ${d.domain} ADD CONSTRAINT ${d.domain}_check CHECK (${d.rule('VALUE')})`).execute(db);
  await analyze(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await aroundViews(db, async () => {
    for (const table of TABLES) {
      const checks = CHECKS.filter((c) => c.table === table);
      const changes = checks.flatMap((c) => [`ALTER COLUMN ${c.column} TYPE text`, `ADD CONSTRAINT ${c.table}_${c.column}_check CHECK (${c.rule(c.column)})`]);
      await sql.raw(`ALTER TABLE ${table} ${changes.join(', ')}`).execute(db);
    }
  });
  for (const d of DOMAINS) await sql.raw(`DROP DOMAIN ${d.domain}`).execute(db);
  await analyze(db);
}
