// The plans of the hot queries: Entra's lookups, creates, changes and member
// batches run through the real app on a database seeded with many tenants; every
// statement they send is captured by kysely's query log and explained. None may
// read accounts, classes or class_memberships sequentially, and each reads
// them through an index led by tenant_id. Once the tables have statistics,
// statements the server prepares are also checked in the plan PostgreSQL may
// cache for them, planned without their parameters' values.
import { Kysely, PostgresDialect, sql, type CompiledQuery } from 'kysely';
import type pg from 'pg';
import t, { type Test } from 'tap';
import { buildApp } from '../src/app.js';
import { signingKeys } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { PREPARED, UNIQUE_KEYS, analyzedTables, type Database } from '../src/db/database.js';
import { TEST_SECRET, tenantWithToken, testEnv } from './helpers/app.js';
import { testDatabase, type TestDatabase } from './helpers/database.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

// sync_conflicts: every user create and change looks for its userName's open conflicts (one probe), and closes them on the locked path.
const WATCHED = new Set(['accounts', 'classes', 'class_memberships', 'sync_conflicts']);
const OTHER_TENANTS = 30;
const ACCOUNTS_PER_TENANT = 3000;

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Plans?: PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/** A value as an SQL literal, for EXECUTE: every parameter of a prepared statement is cast in its text. */
function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  const quote = (text: string): string => `'${text.replace(/'/g, "''")}'`;
  if (Array.isArray(value)) return quote(`{${value.map((v) => `"${String(v).replace(/["\\]/g, '\\$&')}"`).join(',')}}`);
  if (value instanceof Date) return quote(value.toISOString());
  if (typeof value === 'number' || typeof value === 'boolean') return quote(String(value));
  return quote(typeof value === 'string' ? value : JSON.stringify(value));
}

/**
 * The plan PostgreSQL caches for a prepared statement once it stops planning
 * it per execution (plan_cache_mode "auto" may choose it after five runs):
 * planned without the parameters' values.
 */
async function genericPlan(pool: pg.Pool, query: CompiledQuery): Promise<PlanNode> {
  const client = await pool.connect();
  try {
    await client.query(`PREPARE generic_check AS ${query.sql}`);
    await client.query('SET plan_cache_mode = force_generic_plan');
    const explained = await client.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
      `EXPLAIN (FORMAT JSON) EXECUTE generic_check(${query.parameters.map(literal).join(', ')})`,
    );
    const plan = explained.rows[0]?.['QUERY PLAN'][0]?.Plan;
    if (!plan) throw new Error(`no generic plan for ${query.sql}`);
    return plan;
  } finally {
    await client.query('DEALLOCATE generic_check');
    await client.query('RESET plan_cache_mode');
    client.release();
  }
}

/** The app on the test database, with every statement it sends captured from kysely's query log. */
async function capturingApp(t: Test, database: TestDatabase) {
  const captured: CompiledQuery[] = [];
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: database.pool }),
    log: (event) => {
      if (event.level === 'query') captured.push(event.query);
    },
  });
  const config = loadConfig(testEnv({ RATE_LIMIT_PER_SECOND: '0' }));
  const keys = signingKeys(TEST_SECRET);
  const app = await buildApp({ config, db, keys });
  t.teardown(() => app.close());
  return { captured, db, config, keys, app };
}

/**
 * With statistics: as a running database has them. Without: a new database
 * before autovacuum's first ANALYZE, when the planner cannot tell a tenant's
 * rows from none and every index led by tenant_id looks as good as the next.
 * Lookups by id and Entra's userName and displayName lookups must still take
 * the narrow index then. The user filters on e-mail and externalId are left
 * out of that pass: the planner sees every new partial index as empty, so they
 * need statistics to prefer their own index, and Entra matches users on
 * userName.
 */
async function hotQueries(t: Test, analyzed: boolean): Promise<void> {
  // The server would analyze the tables itself; this pass is about the moments before that.
  const database = await testDatabase(t, { analyzeNewTables: analyzed });
  const preparedTexts = new Set<string>();
  const { captured, db, config, keys, app } = await capturingApp(t, database);
  const { tenant, headers } = await tenantWithToken(db, config, keys, 'Plan School', ['school.example']);
  const scim = client(app, headers);

  // Before the first ANALYZE: autovacuum must not analyze the tables either
  // while this pass seeds and queries them.
  if (!analyzed) {
    for (const table of WATCHED) await sql`ALTER TABLE ${sql.table(table)} SET (autovacuum_enabled = off)`.execute(database.db);
  }

  // Other tenants hold most rows, as in a shared database; the tenant under
  // test has as many as each of them.
  await sql`INSERT INTO tenants (name) SELECT 'Other ' || g FROM generate_series(1, ${OTHER_TENANTS}::int) g`.execute(database.db);
  await sql`
    INSERT INTO accounts (tenant_id, managed_by, user_name, external_id, email, display_name, scim)
    SELECT t.id, 'sync', 'u' || g || '.' || t.n || '@school.example', md5(g || '.' || t.n), 'u' || g || '.' || t.n || '@school.example', 'User ' || g,
           jsonb_build_object('emails', jsonb_build_array(jsonb_build_object('value', 'u' || g || '.' || t.n || '@school.example', 'type', 'work')))
      FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM tenants) t, generate_series(1, ${ACCOUNTS_PER_TENANT}::int) g`.execute(database.db);
  await sql`
    INSERT INTO classes (tenant_id, managed_by, display_name, external_id)
    SELECT t.id, 'sync', 'Class ' || g, md5('class' || g || t.id) FROM tenants t, generate_series(1, 100) g`.execute(database.db);
  await sql`
    INSERT INTO class_memberships (tenant_id, class_id, account_id, synced)
    SELECT c.tenant_id, c.id, a.id, true
      FROM classes c JOIN LATERAL (SELECT id FROM accounts WHERE tenant_id = c.tenant_id ORDER BY id OFFSET (hashtext(c.id::text) & 1023) LIMIT 25) a ON true`.execute(database.db);
  // A history of conflicts, mostly closed, and one open conflict of the user the create below writes.
  await sql`
    INSERT INTO sync_conflicts (tenant_id, at, kind, object_type, object_ref, detail, resolved_at, resolution)
    SELECT t.id, now() - g * interval '1 hour', 'admin-collision', 'user', 'u' || g || '.' || t.n || '@school.example', 'in the way',
           CASE WHEN g % 10 = 0 THEN NULL ELSE now() END, CASE WHEN g % 10 = 0 THEN NULL ELSE 'resolved' END
      FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM tenants) t, generate_series(1, 200) g`.execute(database.db);
  await sql`INSERT INTO sync_conflicts (tenant_id, kind, object_type, object_ref, detail)
    VALUES (${tenant.id}::uuid, 'admin-collision', 'user', 'pupil2@school.example', 'in the way')`.execute(database.db);
  if (analyzed) await sql`ANALYZE`.execute(database.db);
  // Statements are prepared (and their generic plans may be used) only once their tables have statistics.
  t.equal((await analyzedTables(database.pool)).size, analyzed ? 3 : 0, analyzed ? 'statements are prepared' : 'statements are planned on every run');

  // The indexes of the watched tables, and whether each is led by tenant_id.
  const watchedIndexes = new Map(
    (
      await sql<{ name: string; def: string }>`SELECT indexname AS name, indexdef AS def FROM pg_indexes
        WHERE schemaname = 'public' AND tablename IN ('accounts', 'classes', 'class_memberships', 'sync_conflicts')`.execute(database.db)
    ).rows.map((r) => [r.name, { tenantFirst: /\(tenant_id[,)]/.test(r.def), documentPredicate: / WHERE .*\b(scim|several_emails)\b/.test(r.def) }]),
  );
  const userId = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const classId = (await scim('POST', '/Groups', { schemas: [GROUP], externalId: 'e0000000-0000-4000-8000-000000000001', displayName: 'Plan class' })).json().id as string;
  const members = (
    await db.selectFrom('accounts').select('id').where('tenant_id', '=', tenant.id).where('managed_by', '=', 'sync').limit(50).execute()
  ).map((r) => ({ value: r.id }));

  // A lookup must narrow the index beyond the tenant: a condition on a second
  // column, or a partial index on the stored document or a column computed
  // from it (several_emails). A list page reads the tenant's rows in id order
  // and only needs the tenant.
  const cases: [string, () => Promise<{ statusCode: number; body: string }>, number, ('list' | undefined)?][] = [
    ['user lookup by userName filter', () => scim('GET', `/Users?filter=${encodeURIComponent('userName eq "u7.1@school.example"')}`), 200],
    ['user lookup by externalId filter', () => scim('GET', `/Users?filter=${encodeURIComponent('externalId eq "00000000-0000-4000-8000-000000000001"')}`), 200],
    ['user lookup by e-mail filter', () => scim('GET', `/Users?filter=${encodeURIComponent('emails[type eq "work"].value eq "pupil1@school.example"')}`), 200],
    ['user lookup by emails.value filter', () => scim('GET', `/Users?filter=${encodeURIComponent('emails.value eq "pupil1@school.example"')}`), 200],
    ['user create (admin collision and adoption lookups; closes its open conflict)', () => scim('POST', '/Users', entraUser(2)), 201],
    [
      'user create with an e-mail other than its userName',
      () => scim('POST', '/Users', entraUser(3, { emails: [{ primary: true, type: 'work', value: 'third.pupil@school.example' }] })),
      201,
    ],
    ['user read', () => scim('GET', `/Users/${userId}`), 200],
    ['user change', () => scim('PATCH', `/Users/${userId}`, patch({ op: 'Replace', path: 'displayName', value: 'Changed' })), 200],
    ['user list page', () => scim('GET', '/Users?startIndex=1&count=100'), 200, 'list'],
    ['class create (adoption lookup)', () => scim('POST', '/Groups', { schemas: [GROUP], externalId: 'e0000000-0000-4000-8000-000000000002', displayName: 'Plan class 2' }), 201],
    ['class lookup by displayName', () => scim('GET', `/Groups?excludedAttributes=members&filter=${encodeURIComponent('displayName eq "Plan class"')}`), 200],
    ['class lookup by externalId', () => scim('GET', `/Groups?excludedAttributes=members&filter=${encodeURIComponent('externalId eq "e0000000-0000-4000-8000-000000000001"')}`), 200],
    ['membership add', () => scim('PATCH', `/Groups/${classId}`, patch({ op: 'Add', path: 'members', value: members })), 204],
    ['membership list', () => scim('GET', `/Groups/${classId}`), 200],
    ['membership remove', () => scim('PATCH', `/Groups/${classId}`, patch({ op: 'Remove', path: 'members', value: members.slice(0, 10) })), 204],
    ['class list page with members', () => scim('GET', '/Groups?startIndex=1&count=20'), 200, 'list'],
    ['user delete', () => scim('DELETE', `/Users/${userId}`), 204],
  ];

  for (const [name, request, status, kind] of cases) {
    if (!analyzed && /^user lookup by (e-mail|emails|externalId)/.test(name)) continue;
    await t.test(name, async (t) => {
      captured.length = 0;
      const response = await request();
      t.equal(response.statusCode, status, response.statusCode === status ? `answers ${status}` : response.body.slice(0, 500));
      const statements = captured.filter((q) => /^\s*(\/\*[^*]*\*\/\s*)?(select|insert|update|delete|with)\b/i.test(q.sql));
      t.ok(statements.length > 0, 'the request ran queries');
      let indexed = 0;
      const indexesRead = new Set<string>();
      const check = (plan: PlanNode, sqlText: string, generic: boolean): void => {
        const label = `${generic ? 'generic plan of' : 'plan of'}: ${sqlText}`;
        for (const node of nodes(plan)) {
          if (node['Relation Name'] && WATCHED.has(node['Relation Name'])) {
            t.not(node['Node Type'], 'Seq Scan', `no sequential scan of ${node['Relation Name']} in the ${label}`);
          }
          const index = node['Index Name'];
          if (index !== undefined) indexesRead.add(index);
          const known = index === undefined ? undefined : watchedIndexes.get(index);
          if (index === undefined || known === undefined) continue;
          t.ok(known.tenantFirst, `${index} is led by tenant_id`);
          if (kind !== 'list') {
            const narrowed = / AND /.test(node['Index Cond'] ?? '') || known.documentPredicate;
            t.ok(narrowed, `${index} is searched by more than the tenant (${node['Index Cond'] ?? 'no condition'}) in the ${label}`);
          }
          indexed++;
        }
      };
      for (const query of statements) {
        const explained = await database.pool.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(`EXPLAIN (FORMAT JSON) ${query.sql}`, [...query.parameters]);
        const plan = explained.rows[0]?.['QUERY PLAN'][0]?.Plan;
        if (!plan) throw new Error(`no plan for ${query.sql}`);
        check(plan, query.sql, false);
        // A statement that names no table is prepared before any statistics exist.
        if (query.sql.startsWith(PREPARED) && (analyzed || query.sql.startsWith(`${PREPARED}${UNIQUE_KEYS} */`))) {
          check(await genericPlan(database.pool, query), query.sql, true);
          preparedTexts.add(query.sql);
        }
      }
      t.ok(indexed > 0, 'an index led by tenant_id is read');
      // A user write closes its userName's open conflicts by one probe of the partial index of open conflicts.
      if (/^user (create|change)/.test(name)) t.ok(indexesRead.has('sync_conflicts_open_object_idx'), 'the open conflicts of the userName are found by their index');
    });
  }
  // class_name_is_free (migration 0014) looks the name up in a query that
  // PL/pgSQL plans apart from the statement and may keep as a generic plan
  // from its sixth run, statistics or not: its plan, from the function's own text.
  await t.test('the class-name lookup inside class_name_is_free', async (t) => {
    const source = (await sql<{ src: string }>`SELECT prosrc AS src FROM pg_proc WHERE proname = 'class_name_is_free'`.execute(database.db)).rows[0]?.src ?? '';
    const lookup = /NOT EXISTS \(([\s\S]*?)\);/.exec(source)?.[1];
    t.ok(lookup, 'the function has its lookup');
    const text = (lookup ?? '').replace(/\bp_tenant\b/g, '$1').replace(/\bp_name\b/g, '$2').replace(/\bp_except\b/g, '$3');
    const client = await database.pool.connect();
    try {
      await client.query(`PREPARE name_check(uuid, text, uuid) AS ${text}`);
      await client.query('SET plan_cache_mode = force_generic_plan');
      const explained = await client.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(`EXPLAIN (FORMAT JSON) EXECUTE name_check('${tenant.id}', 'Plan class', NULL)`);
      const plan = explained.rows[0]?.['QUERY PLAN'][0]?.Plan;
      const reads = plan ? nodes(plan).filter((node) => node['Relation Name'] === 'classes' || node['Index Name'] !== undefined) : [];
      t.ok(reads.length > 0, 'the generic plan reads classes');
      for (const node of reads) {
        t.not(node['Node Type'], 'Seq Scan', 'no sequential scan of classes');
        t.equal(node['Index Name'], 'classes_display_name_idx', 'the name is searched in its index');
        t.match(node['Index Cond'] ?? '', /tenant_id.* AND .*lower\(display_name\)/, `by tenant and name (${node['Index Cond'] ?? 'no condition'})`);
      }
    } finally {
      await client.query('DEALLOCATE name_check').catch(() => undefined);
      await client.query('RESET plan_cache_mode');
      client.release();
    }
  });
  const settled = await sql<{ resolution: string | null }>`SELECT resolution FROM sync_conflicts WHERE tenant_id = ${tenant.id}::uuid AND object_ref = 'pupil2@school.example'`.execute(database.db);
  t.same(settled.rows, [{ resolution: 'succeeded' }], 'the create closed the open conflict of its userName');
  // Entra's create, read, change and delete of a user, the create of a class,
  // the userName and displayName lookups and the member batch are prepared statements.
  if (analyzed) t.ok(preparedTexts.size >= 8, `the generic plans of ${preparedTexts.size} prepared statements were checked`);
  else t.ok(preparedTexts.size >= 2, `the generic plans of ${preparedTexts.size} statements prepared without statistics were checked (the class create and the member batch)`);
}

t.test('hot queries use indexes led by tenant_id, never a sequential scan', (t) => hotQueries(t, true));
t.test('before the first ANALYZE, lookups still narrow the index beyond the tenant', (t) => hotQueries(t, false));

// A school added to a deployment whose last ANALYZE counted every tenant it
// had: the statistics' most common tenants cover every row, and PostgreSQL
// estimates one row for the new one. A plan made for its values would read
// the tenant's prefix of an index led by tenant_id and filter every row of
// it, so each lookup and guard of its initial sync would cost more than the
// last, until the next ANALYZE. The server's named statements run with their
// generic plans (the plans checked above), whatever PostgreSQL estimates.
t.test('a tenant the statistics have not seen: the statements run with their generic plans, which stay narrow', async (t) => {
  const database = await testDatabase(t);
  const { captured, db, config, keys, app } = await capturingApp(t, database);
  // No analyze but the one below while this test runs.
  await sql`ALTER TABLE accounts SET (autovacuum_enabled = off)`.execute(database.db);
  await sql`INSERT INTO tenants (name) SELECT 'Known ' || g FROM generate_series(1, 5) g`.execute(database.db);
  await sql`
    INSERT INTO accounts (tenant_id, managed_by, user_name, email, scim)
    SELECT t.id, 'sync', 'k' || g || '.' || t.id || '@known.example', 'k' || g || '.' || t.id || '@known.example', '{}'::jsonb
      FROM tenants t, generate_series(1, ${ACCOUNTS_PER_TENANT}::int) g`.execute(database.db);
  await sql`ANALYZE`.execute(database.db);
  t.ok((await analyzedTables(database.pool)).has('accounts'), 'statements on accounts are prepared');
  // The new school: created after the ANALYZE, with as many accounts as the others.
  const { tenant, headers } = await tenantWithToken(db, config, keys, 'New School', ['school.example']);
  await sql`
    INSERT INTO accounts (tenant_id, managed_by, user_name, external_id, email, scim)
    SELECT ${tenant.id}::uuid, 'sync', 'u' || g || '@school.example', md5(g::text), 'u' || g || '@school.example', '{}'::jsonb
      FROM generate_series(1, ${ACCOUNTS_PER_TENANT}::int) g`.execute(database.db);
  const estimate = await database.pool.query<{ 'QUERY PLAN': { Plan: { 'Plan Rows': number } }[] }>(
    `EXPLAIN (FORMAT JSON) SELECT 1 FROM accounts WHERE tenant_id = '${tenant.id}'`,
  );
  t.ok((estimate.rows[0]?.['QUERY PLAN'][0]?.Plan['Plan Rows'] ?? 0) < 10, 'PostgreSQL believes the new tenant has almost no accounts');

  // Entra's initial sync of the school: a lookup before each create, then changes; more runs than PostgreSQL plans for their values.
  const scim = client(app, headers);
  captured.length = 0;
  const ids: string[] = [];
  for (let n = 1; n <= 8; n++) {
    const lookup = await scim('GET', `/Users?filter=${encodeURIComponent(`userName eq "pupil${n}@school.example"`)}`);
    t.equal(lookup.statusCode, 200);
    const created = await scim('POST', '/Users', entraUser(n));
    t.equal(created.statusCode, 201);
    ids.push(created.json().id as string);
  }
  for (const [i, id] of ids.entries()) {
    t.equal((await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: `Changed ${i}` }))).statusCode, 200);
  }

  // What the pool's connections ran: every named statement only with its generic plan.
  const clients = await Promise.all(Array.from({ length: 5 }, () => database.pool.connect()));
  const runs = new Map<string, { generic: number; custom: number }>();
  try {
    for (const c of clients) {
      const { rows } = await c.query<{ statement: string; generic: number; custom: number }>(
        `SELECT statement, generic_plans::int AS generic, custom_plans::int AS custom FROM pg_prepared_statements WHERE name LIKE 'portal_scim_%'`,
      );
      for (const row of rows) {
        const seen = runs.get(row.statement) ?? { generic: 0, custom: 0 };
        runs.set(row.statement, { generic: seen.generic + row.generic, custom: seen.custom + row.custom });
      }
    }
  } finally {
    for (const c of clients) c.release();
  }
  const onAccounts = [...runs].filter(([text]) => /\baccounts\b/.test(text));
  t.ok(onAccounts.length >= 3, `${onAccounts.length} named statements on accounts ran (the lookup, the create, the change)`);
  for (const [text, count] of onAccounts) {
    t.equal(count.custom, 0, `never planned for a run's values: ${text.slice(0, 160)}`);
    t.ok(count.generic > 0, 'planned for any values');
  }
  // And those generic plans search by more than the tenant, for this tenant as for any.
  for (const query of captured.filter((q) => q.sql.startsWith(PREPARED) && /\baccounts\b/.test(q.sql))) {
    const plan = await genericPlan(database.pool, query);
    for (const node of nodes(plan)) {
      if (node['Relation Name'] !== 'accounts') continue;
      t.not(node['Node Type'], 'Seq Scan', 'no sequential scan of accounts');
      if (node['Index Name'] !== undefined) t.match(node['Index Cond'] ?? '', / AND /, `${node['Index Name']} is searched by more than the tenant (${node['Index Cond'] ?? 'no condition'})`);
    }
  }
});
