// The value checks of the columns every SCIM write touches become domains.
// PostgreSQL reads a table's CHECK constraints from their stored text and
// plans them again for each statement that writes a row (ExecRelCheck), so
// every create, change and delete paid for them, and each change-feed row
// paid for its two once more; a domain's check is read once per connection
// and kept. The rules are the same: the same values, the same error (23514).
//
// The columns the portal's views show as they are (accounts.role and
// user_name, classes.display_name) keep their CHECK constraints, so the views'
// column types stay those of the database contract. Views that read a changed
// column are made again from their own definition, with their grants.
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

/** The views that read the changed columns: ALTER COLUMN TYPE refuses a column a view uses. */
const VIEWS = ['portal_accounts', 'portal_classes'] as const;

/** Drops the views, runs `change`, and makes them again from their definitions, with the grants they had. */
async function aroundViews(db: Kysely<unknown>, change: () => Promise<void>): Promise<void> {
  const saved: { name: string; definition: string; grants: string[] }[] = [];
  for (const name of VIEWS) {
    const { rows } = await sql<{ definition: string; grants: string[] | null }>`
      SELECT pg_get_viewdef(c.oid) AS definition,
             (SELECT array_agg(format('GRANT %s ON %I TO %s', g.privilege_type, c.relname,
                                      CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END))
                FROM aclexplode(c.relacl) g WHERE g.grantee <> c.relowner) AS grants
        FROM pg_class c WHERE c.oid = ${name}::regclass`.execute(db);
    const row = rows[0];
    if (row === undefined) throw new Error(`no view ${name}`);
    saved.push({ name, definition: row.definition, grants: row.grants ?? [] });
    await sql.raw(`DROP VIEW ${name}`).execute(db);
  }
  await change();
  for (const view of saved) {
    await sql.raw(`CREATE VIEW ${view.name} AS ${view.definition}`).execute(db);
    for (const grant of view.grants) await sql.raw(grant).execute(db);
  }
}

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const domain of new Map(CHECKS.map((c) => [c.domain, c])).values()) {
    await sql.raw(`CREATE DOMAIN ${domain.domain} AS text CHECK (${domain.rule('VALUE')})`).execute(db);
  }
  await aroundViews(db, async () => {
    for (const c of CHECKS) {
      await sql.raw(`ALTER TABLE ${c.table} DROP CONSTRAINT ${c.table}_${c.column}_check, ALTER COLUMN ${c.column} TYPE ${c.domain}`).execute(db);
    }
  });
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await aroundViews(db, async () => {
    for (const c of CHECKS) {
      await sql.raw(`ALTER TABLE ${c.table} ALTER COLUMN ${c.column} TYPE text, ADD CONSTRAINT ${c.table}_${c.column}_check CHECK (${c.rule(c.column)})`).execute(db);
    }
  });
  for (const domain of new Set(CHECKS.map((c) => c.domain))) await sql.raw(`DROP DOMAIN ${domain}`).execute(db);
}
