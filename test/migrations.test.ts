// Migrations apply up and down, are safe to start concurrently, and key every
// tenant-owned table by tenant first; the conflict life cycle's migration
// folds the rows earlier versions added per refusal into one per object.
import { type Kysely, sql } from 'kysely';
import t from 'tap';
import { createDb } from '../src/db/database.js';
import { listMigrations, migrateDown, migrateTo, migrateToLatest, migrateToNone } from '../src/db/migrate.js';
import { testDatabase } from './helpers/database.js';

async function tables<T>(db: Kysely<T>): Promise<string[]> {
  const result = await sql<{ name: string }>`
    SELECT table_name AS name FROM information_schema.tables
     WHERE table_schema = 'public' AND table_name NOT LIKE 'kysely_%' ORDER BY table_name`.execute(db);
  return result.rows.map((r) => r.name);
}

t.test('migrations go up, down and up again', async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  t.same(await tables(db), [], 'an empty database');
  const applied = await migrateToLatest(db);
  t.same(
    applied,
    [
      '0001_initial',
      '0002_admin_credentials',
      '0003_request_counts',
      '0004_lookup_indexes',
      '0005_write_rules',
      '0006_domain_owner_and_write_counts',
      '0007_change_feed',
      '0008_conflict_life_cycle',
      '0009_entra_tenant_binding',
      '0010_overrides_and_merges',
      '0011_row_level_feed',
      '0012_domain_checks',
      '0013_hot_account_changes',
      '0014_class_name_turns',
      '0015_tenant_turns',
      '0016_class_departures',
      '0017_feed_of_the_view',
      '0018_conflict_entra_objects',
      '0019_accounts_created_by_sync',
      '0020_status_session_ends',
      '0021_memberships_kept_by_disconnect',
      '0022_feed_horizon_and_pruned',
      '0023_failure_answers',
      '0024_tenant_checks_without_row_locks',
      '0025_tenant_truncate_takes_rows',
    ],
    'every migration is applied in order',
  );
  t.same(await tables(db), [
    'account_aliases',
    'accounts',
    'admin_credentials',
    'admin_session_ends',
    'audit_events',
    'change_events',
    'change_feed_pruned',
    'class_departures',
    'class_memberships',
    'classes',
    'credentials',
    'portal_account_tombstones',
    'portal_accounts',
    'portal_class_memberships',
    'portal_classes',
    'request_counts',
    'sync_conflicts',
    'tenants',
  ]);
  t.same(await migrateToLatest(db), [], 'a second run applies nothing');
  const status = await listMigrations(db);
  t.ok(status.every((m) => m.executedAt instanceof Date), 'every migration is recorded');

  await migrateToNone(db);
  t.same(await tables(db), [], 'down removes everything');
  await migrateToLatest(db);
  const reverted = await migrateDown(db);
  t.equal(reverted.length, 1, 'migrate down reverts one migration');
  await migrateToLatest(db);
  t.equal((await tables(db)).length, 18);
});

t.test('instances starting at once apply each migration exactly once', async (t) => {
  const { url, db } = await testDatabase(t, { migrated: false });
  const others = Array.from({ length: 4 }, () => createDb(url, { poolSize: 2 }).db);
  t.teardown(() => Promise.all(others.map((o) => o.destroy())));
  const results = await Promise.all(others.map((o) => migrateToLatest(o)));
  const applied = results.flat();
  t.equal(applied.filter((n) => n === '0001_initial').length, 1, 'one instance applied it, the others found it done');
  t.equal(applied.filter((n) => n === '0002_admin_credentials').length, 1);
  const rows = await sql<{ n: string }>`SELECT count(*) AS n FROM kysely_migration WHERE name = '0001_initial'`.execute(db);
  t.equal(Number(rows.rows[0]?.n), 1);
});

t.test('every tenant-owned table is keyed by tenant first', async (t) => {
  const { db } = await testDatabase(t);
  const result = await sql<{ table: string; first: string }>`
    SELECT c.relname AS table, a.attname AS first
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
     WHERE i.indisprimary AND c.relname NOT IN ('tenants', 'admin_credentials', 'admin_session_ends') AND c.relname NOT LIKE 'kysely_%'
     ORDER BY c.relname`.execute(db);
  t.same(
    result.rows.map((r) => r.table),
    ['account_aliases', 'accounts', 'audit_events', 'change_events', 'change_feed_pruned', 'class_departures', 'class_memberships', 'classes', 'credentials', 'request_counts', 'sync_conflicts'],
  );
  for (const row of result.rows) t.equal(row.first, 'tenant_id', `${row.table} primary key starts with tenant_id`);

  const indexes = await sql<{ name: string; def: string }>`
    SELECT indexname AS name, indexdef AS def FROM pg_indexes
     WHERE schemaname = 'public' AND tablename IN ('accounts', 'classes', 'class_memberships', 'class_departures', 'audit_events', 'sync_conflicts')`.execute(db);
  for (const index of indexes.rows) {
    t.match(index.def, /\(tenant_id[,)]/, `${index.name} is led by tenant_id`);
  }
});

t.test("0022 marks a feed pruned before it as pruned up to each tenant's oldest change left", async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateToLatest(db);
  const isApplied = async () => (await listMigrations(db)).find((m) => m.name === '0022_feed_horizon_and_pruned')?.executedAt !== undefined;
  while (await isApplied()) await migrateDown(db);
  const [pruned, quiet] = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Pruned School'), ('Quiet School') RETURNING id`.execute(db)).rows.map((r) => r.id);
  await sql`INSERT INTO change_events (tenant_id, object_type, object_id, action) SELECT ${pruned}::uuid, 'account', gen_random_uuid(), 'updated' FROM generate_series(1, 3)`.execute(db);
  const oldest = (await sql<{ p: string }>`SELECT min(position)::text AS p FROM change_events`.execute(db)).rows[0]?.p ?? '';
  await migrateToLatest(db);
  const marks = await sql<{ tenant_id: string; upto: string }>`SELECT tenant_id, upto::text AS upto FROM change_feed_pruned`.execute(db);
  t.same(marks.rows, [{ tenant_id: pruned, upto: (BigInt(oldest) - 1n).toString() }], "just before the tenant's oldest change left; nothing for a tenant without changes");
  t.notOk(marks.rows.some((r) => r.tenant_id === quiet));
  const reader = (await sql<{ behind: boolean }>`SELECT 0 < portal_changes_pruned() AS behind`.execute(db)).rows[0]?.behind;
  t.equal(reader, true, 'a reader from 0 reads the views first');
});

t.test('0008 makes the open conflicts of one object one conflict, keeping the first and counting the rest', async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateToLatest(db);
  const isApplied = async () => (await listMigrations(db)).find((m) => m.name === '0008_conflict_life_cycle')?.executedAt !== undefined;
  while (await isApplied()) await migrateDown(db);

  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Upgraded School') RETURNING id`.execute(db)).rows[0]?.id;
  const conflict = (at: string, ref: string | null, resolved = false) =>
    sql`INSERT INTO sync_conflicts (tenant_id, at, kind, object_type, object_ref, request_id, detail, resolved_at)
        VALUES (${tenant}::uuid, ${at}::timestamptz, 'admin-collision', 'user', ${ref}, ${`r-${at}`}, 'in the way', ${resolved ? at : null}::timestamptz)`.execute(db);
  await conflict('2026-11-01T10:00:00Z', 'Pupil1@School.example');
  await conflict('2026-11-01T11:00:00Z', 'pupil1@school.example');
  await conflict('2026-11-01T12:00:00Z', 'PUPIL1@SCHOOL.EXAMPLE');
  await conflict('2026-11-01T09:00:00Z', 'Pupil1@School.example', true);
  await conflict('2026-11-01T10:30:00Z', 'Pupil2@School.example');
  await conflict('2026-11-01T10:45:00Z', null);

  t.same((await migrateToLatest(db)).slice(0, 1), ['0008_conflict_life_cycle'], 'the upgrade applies 0008');
  const rows = await sql<{ object_ref: string | null; at: Date; last_seen_at: Date; seen_count: number; request_id: string; resolution: string | null; note: string | null }>`
    SELECT object_ref, at, last_seen_at, seen_count, request_id, resolution, note FROM sync_conflicts ORDER BY at`.execute(db);
  t.same(
    rows.rows.map((r) => [r.object_ref, r.at.toISOString(), r.last_seen_at.toISOString(), r.seen_count, r.request_id, r.resolution, r.note]),
    [
      ['Pupil1@School.example', '2026-11-01T09:00:00.000Z', '2026-11-01T09:00:00.000Z', 1, 'r-2026-11-01T09:00:00Z', 'resolved', null],
      ['Pupil1@School.example', '2026-11-01T10:00:00.000Z', '2026-11-01T12:00:00.000Z', 3, 'r-2026-11-01T10:00:00Z', null, null],
      ['Pupil2@School.example', '2026-11-01T10:30:00.000Z', '2026-11-01T10:30:00.000Z', 1, 'r-2026-11-01T10:30:00Z', null, null],
      [null, '2026-11-01T10:45:00.000Z', '2026-11-01T10:45:00.000Z', 1, 'r-2026-11-01T10:45:00Z', 'dismissed', 'no object reference'],
    ],
    'the first open row of an object stays with the count and latest sighting of all; a closed one and other objects are kept',
  );
  await t.rejects(
    sql`INSERT INTO sync_conflicts (tenant_id, kind, object_type, object_ref, detail) VALUES (${tenant}::uuid, 'admin-collision', 'user', 'pupil2@SCHOOL.example', 'again')`.execute(db),
    { code: '23505' },
    'a second open conflict of an object is refused in any case',
  );
});

t.test('0012 keeps refusing the values its domains check, with the check violation of before', async (t) => {
  const { db } = await testDatabase(t);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Checked School') RETURNING id`.execute(db)).rows[0]?.id;
  const account = (column: string, value: string) =>
    sql`INSERT INTO accounts (tenant_id, user_name, scim, ${sql.ref(column)}) VALUES (${tenant}::uuid, ${`u-${column}@school.example`}, '{}', ${value})`.execute(db);
  await t.rejects(account('managed_by', 'entra'), { code: '23514' }, 'managed_by is sync or manual');
  await t.rejects(account('role_override', 'admin'), { code: '23514' }, 'an override never makes an admin');
  await t.rejects(account('grade_override', 'x'.repeat(513)), { code: '23514' }, 'a grade override is at most 512 characters');
  await t.rejects(
    sql`INSERT INTO audit_events (tenant_id, action, object_type, outcome) VALUES (${tenant}::uuid, 'create', 'user', 'maybe')`.execute(db),
    { code: '23514' },
    'an audit outcome is success, failure or conflict',
  );
  await t.rejects(
    sql`INSERT INTO change_events (tenant_id, object_type, object_id, action) VALUES (${tenant}::uuid, 'account', gen_random_uuid(), 'renamed')`.execute(db),
    { code: '23514' },
    'a change is one of the actions of the contract',
  );
  await t.resolves(account('role_override', 'teacher'), 'a valid override is written');
  const views = await sql<{ column: string; type: string }>`
    SELECT c.relname || '.' || a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     WHERE c.relname IN ('portal_accounts', 'portal_classes') AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY 1`.execute(db);
  t.notOk(
    views.rows.some((r) => ['row_manager', 'override_role', 'override_grade'].includes(r.type)),
    'no view column shows a domain: the views keep the types of the contract',
  );
});

t.test('0013 makes a change of names and SCIM document a HOT update, and keeps several_emails with the document', async (t) => {
  const { db } = await testDatabase(t);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Hot School') RETURNING id`.execute(db)).rows[0]?.id;
  const options = (await sql<{ options: string[] | null }>`SELECT reloptions AS options FROM pg_class WHERE oid = 'accounts'::regclass`.execute(db)).rows[0]?.options;
  t.same(options, ['fillfactor=90'], 'accounts pages keep room for a changed row');
  await db.transaction().execute(async (trx) => {
    const emails = (n: number) => JSON.stringify({ emails: Array.from({ length: n }, (_, i) => ({ value: `pupil${i}@school.example` })) });
    const id = (
      await sql<{ id: string }>`INSERT INTO accounts (tenant_id, managed_by, user_name, email, display_name, scim)
        VALUES (${tenant}::uuid, 'sync', 'pupil@school.example', 'pupil0@school.example', 'Pupil', ${emails(1)}::jsonb) RETURNING id`.execute(trx)
    ).rows[0]?.id;
    const hot = async () =>
      Number((await sql<{ n: string }>`SELECT pg_stat_get_xact_tuples_hot_updated('accounts'::regclass) AS n`.execute(trx)).rows[0]?.n);
    const several = async () => (await sql<{ several: boolean }>`SELECT several_emails AS several FROM accounts WHERE id = ${id}::uuid`.execute(trx)).rows[0]?.several;
    t.equal(await several(), false, 'one address');
    await sql`UPDATE accounts SET display_name = 'Changed', given_name = 'Given', scim = scim || '{"displayName": "Changed"}', version = version + 1
      WHERE id = ${id}::uuid`.execute(trx);
    t.equal(await hot(), 1, 'a change of names and document adds no index entries');
    await sql`UPDATE accounts SET scim = ${emails(2)}::jsonb WHERE id = ${id}::uuid`.execute(trx);
    t.equal(await several(), true, 'a second address sets several_emails');
    t.equal(await hot(), 1, 'and that change updates the index of such accounts');
  });
});

/** What a migration's down must restore: columns, constraints, indexes, views with their grants and comments, domains, statistics objects. */
async function schema<T>(db: Kysely<T>): Promise<string[]> {
  const { rows } = await sql<{ line: string }>`
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
           || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') AS line
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid AND c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v')
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL SELECT 'relation ' || relname || ' ' || coalesce(reloptions::text, '') || ' ' || coalesce(relacl::text, '') || ' ' || coalesce(obj_description(oid, 'pg_class'), '')
      FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v')
    UNION ALL SELECT 'view ' || viewname || ' ' || definition FROM pg_views WHERE schemaname = 'public'
    UNION ALL SELECT 'type ' || typname FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typtype = 'd'
    UNION ALL SELECT 'statistics ' || stxname FROM pg_statistic_ext WHERE stxnamespace = 'public'::regnamespace
    UNION ALL SELECT 'function ' || pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prokind = 'f'
    UNION ALL SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal
    ORDER BY 1`.execute(db);
  return rows.map((r) => r.line);
}

t.test('0012 and 0013 go down to the schema they came from, keeping the views\' grants and comments', async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateTo(db, '0011_row_level_feed');
  await sql`GRANT SELECT ON portal_accounts TO PUBLIC`.execute(db);
  await sql`COMMENT ON VIEW portal_classes IS 'The classes the portal shows'`.execute(db);
  const before = await schema(db);
  t.same(await migrateTo(db, '0013_hot_account_changes'), ['0012_domain_checks', '0013_hot_account_changes']);
  const acl = (await sql<{ acl: string }>`SELECT relacl::text AS acl FROM pg_class WHERE oid = 'portal_accounts'::regclass`.execute(db)).rows[0]?.acl;
  t.match(acl, /(^|[{,])=r\//, 'the view made again keeps its grant');
  const comment = (await sql<{ comment: string }>`SELECT obj_description('portal_classes'::regclass, 'pg_class') AS comment`.execute(db)).rows[0]?.comment;
  t.equal(comment, 'The classes the portal shows', 'and its comment');
  await migrateTo(db, '0011_row_level_feed');
  t.same(await schema(db), before, 'down restores every column, constraint, index, view and grant');
});

t.test('0014 adds the function that takes a class name\'s turn, and goes down to the schema it came from', async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateTo(db, '0013_hot_account_changes');
  const before = await schema(db);
  t.same(await migrateTo(db, '0014_class_name_turns'), ['0014_class_name_turns']);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Turns') RETURNING id`.execute(db)).rows[0]?.id ?? '';
  await sql`INSERT INTO classes (tenant_id, managed_by, display_name) VALUES (${tenant}::uuid, 'sync', 'Class 7A'), (${tenant}::uuid, 'manual', 'Class 8B')`.execute(db);
  const free = async (name: string) =>
    (await sql<{ free: boolean }>`SELECT class_name_is_free(${tenant}::uuid, ${name}, gen_random_uuid()) AS free`.execute(db)).rows[0]?.free;
  t.equal(await free('CLASS 7a'), false, 'a synced class holds its name in any case');
  t.equal(await free('Class 8B'), true, 'a manual class holds none');
  t.equal(await free('Class 9C'), true, 'nor does a name no class has');
  await migrateTo(db, '0013_hot_account_changes');
  t.same(await schema(db), before, 'down drops the function and nothing else');
});

t.test("0015 adds the functions of a tenant's turn, and goes down to the schema it came from", async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateTo(db, '0014_class_name_turns');
  const before = await schema(db);
  t.same(await migrateTo(db, '0015_tenant_turns'), ['0015_tenant_turns']);
  const tenant = async (disconnected: boolean) =>
    (await sql<{ id: string }>`INSERT INTO tenants (name, disconnected_at) VALUES ('Turns', ${disconnected ? new Date() : null}) RETURNING id`.execute(db)).rows[0]?.id ?? '';
  const connected = async (id: string) => (await sql<{ ok: boolean }>`SELECT tenant_is_connected(${id}::uuid) AS ok`.execute(db)).rows[0]?.ok;
  t.equal(await connected(await tenant(false)), true, 'a connected tenant');
  t.equal(await connected(await tenant(true)), false, 'a disconnected tenant');
  t.equal(await connected('00000000-0000-4000-8000-000000000000'), false, 'no tenant');
  const turn = await sql<{ result: string }>`SELECT tenant_disconnect_turn(gen_random_uuid())::text AS result`.execute(db);
  t.same(turn.rows, [{ result: '' }], 'the disconnect takes its turn');
  await migrateTo(db, '0014_class_name_turns');
  t.same(await schema(db), before, 'down drops the functions and nothing else');
});

t.test('0016 counts the synced members an account delete takes from a class, and goes down to the schema it came from', async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateTo(db, '0015_tenant_turns');
  const before = await schema(db);
  t.same(await migrateTo(db, '0016_class_departures'), ['0016_class_departures']);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Departures') RETURNING id`.execute(db)).rows[0]?.id ?? '';
  const klass = (await sql<{ id: string }>`INSERT INTO classes (tenant_id, managed_by, display_name) VALUES (${tenant}::uuid, 'sync', 'Class 7A') RETURNING id`.execute(db)).rows[0]?.id ?? '';
  const account = async (name: string) =>
    (await sql<{ id: string }>`INSERT INTO accounts (tenant_id, managed_by, user_name) VALUES (${tenant}::uuid, 'sync', ${name}) RETURNING id`.execute(db)).rows[0]?.id ?? '';
  const [synced, hand] = [await account('a@school.example'), await account('b@school.example')];
  await sql`INSERT INTO class_memberships (tenant_id, class_id, account_id, synced, manual)
    VALUES (${tenant}::uuid, ${klass}::uuid, ${synced}::uuid, true, true), (${tenant}::uuid, ${klass}::uuid, ${hand}::uuid, false, true)`.execute(db);
  await sql`UPDATE accounts SET deleted_at = now() WHERE tenant_id = ${tenant}::uuid`.execute(db);
  const departures = await sql<{ account_id: string }>`SELECT account_id FROM class_departures WHERE class_id = ${klass}::uuid`.execute(db);
  t.same(departures.rows, [{ account_id: synced }], 'the synced member departs; the one held by hand only does not count');
  t.equal((await sql<{ n: number }>`SELECT count(*)::int AS n FROM class_memberships`.execute(db)).rows[0]?.n, 0, 'both memberships went');
  const departed = (await sql<{ at: string }>`SELECT departed_at::text AS at FROM class_departures WHERE class_id = ${klass}::uuid`.execute(db)).rows[0]?.at;
  await migrateTo(db, '0015_tenant_turns');
  t.same(await schema(db), before, 'down restores the trigger function and drops the table');
  const row = await sql<{ version: number; updated_at: string }>`SELECT version, updated_at::text AS updated_at FROM classes WHERE id = ${klass}::uuid`.execute(db);
  t.same(row.rows, [{ version: 2, updated_at: departed }], 'and the departure moved the row: no version is shown again for another state, no time goes back');
});

t.test('0017 signs in with the role the portal sees, keeps deleted rows out of the feed, lists the sources an adoption moves, and goes down to the schema it came from', async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateTo(db, '0016_class_departures');
  const before = await schema(db);
  t.same(await migrateTo(db, '0017_feed_of_the_view'), ['0017_feed_of_the_view']);
  const entra = '7a1b2c3d-0000-4000-8000-000000000017';
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name, entra_tenant_id) VALUES ('Feed', ${entra}::uuid) RETURNING id`.execute(db)).rows[0]?.id ?? '';
  const account = async (name: string, managedBy: string, oid: string | null) =>
    (
      await sql<{ id: string }>`INSERT INTO accounts (tenant_id, managed_by, user_name, external_id, role)
        VALUES (${tenant}::uuid, ${managedBy}, ${name}, ${oid}, 'teacher') RETURNING id`.execute(db)
    ).rows[0]?.id ?? '';
  const overridden = await account('a@school.example', 'sync', 'oid-a');
  await sql`UPDATE accounts SET role_override = 'student' WHERE id = ${overridden}::uuid`.execute(db);
  const signIn = async () => (await sql<{ role: string }>`SELECT role FROM portal_sign_in_account(${entra}::uuid, 'oid-a')`.execute(db)).rows;
  t.same(await signIn(), [{ role: 'student' }], 'the override, as portal_accounts shows it');

  const manual = await account('b@school.example', 'manual', null);
  const gone = await account('c@school.example', 'sync', 'oid-c');
  await sql`UPDATE accounts SET deleted_at = now() WHERE id = ${gone}::uuid`.execute(db);
  const mark = (await sql<{ n: number }>`SELECT count(*)::int AS n FROM change_events`.execute(db)).rows[0]?.n ?? 0;
  await sql`UPDATE accounts SET managed_by = 'sync' WHERE id = ${manual}::uuid`.execute(db);
  await sql`UPDATE accounts SET managed_by = 'manual', role_override = NULL WHERE id = ${gone}::uuid`.execute(db);
  const rows = await sql<{ object_id: string; action: string; changed: string[] }>`
    SELECT object_id, action, changed FROM change_events ORDER BY position OFFSET ${mark}`.execute(db);
  t.same(
    rows.rows,
    [{ object_id: manual, action: 'adopted', changed: ['managed_by_sync', 'role_source', 'grade_source'] }],
    "an adoption lists the sources it moves; the deleted account's changes write nothing",
  );

  await migrateTo(db, '0016_class_departures');
  t.same(await schema(db), before, 'down restores both functions and the trigger');
  t.same(await signIn(), [{ role: 'teacher' }], 'and the sign-in answers the synced role again');
});

t.test('0018 keeps the Entra objects of a conflict, and goes down to the schema it came from', async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateTo(db, '0017_feed_of_the_view');
  const before = await schema(db);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Conflicts') RETURNING id`.execute(db)).rows[0]?.id ?? '';
  await sql`INSERT INTO sync_conflicts (tenant_id, kind, object_type, object_ref, detail) VALUES (${tenant}::uuid, 'admin-collision', 'user', 'a@school.example', 'x')`.execute(db);
  t.same(await migrateTo(db, '0018_conflict_entra_objects'), ['0018_conflict_entra_objects']);
  t.same((await sql<{ entra_objects: string[] }>`SELECT entra_objects FROM sync_conflicts`.execute(db)).rows, [{ entra_objects: [] }], 'a conflict from before has none');
  await migrateTo(db, '0017_feed_of_the_view');
  t.same(await schema(db), before);
});

t.test('0019 adds where the sync says it created an account, unset on the rows there are, and goes down to the schema it came from', async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateTo(db, '0018_conflict_entra_objects');
  const before = await schema(db);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Origins') RETURNING id`.execute(db)).rows[0]?.id ?? '';
  await sql`INSERT INTO accounts (tenant_id, managed_by, user_name) VALUES (${tenant}::uuid, 'sync', 'created@school.example')`.execute(db);
  t.same(await migrateTo(db, '0019_accounts_created_by_sync'), ['0019_accounts_created_by_sync']);
  t.same((await sql<{ created_by_sync: boolean | null }>`SELECT created_by_sync FROM accounts`.execute(db)).rows, [{ created_by_sync: null }], 'a row from before: not recorded, the audit log says');
  // An instance of the previous release, during a rolling deploy, inserts without it.
  await sql`INSERT INTO accounts (tenant_id, managed_by, user_name) VALUES (${tenant}::uuid, 'sync', 'old.release@school.example')`.execute(db);
  t.equal((await sql<{ n: number }>`SELECT count(*)::int AS n FROM accounts WHERE created_by_sync IS NULL`.execute(db)).rows[0]?.n, 2);
  await migrateTo(db, '0018_conflict_entra_objects');
  t.same(await schema(db), before);
});

t.test("a view of the portal's own on portal_accounts stops 0012 with its name, and nothing changes", async (t) => {
  const { db } = await testDatabase(t, { migrated: false });
  await migrateTo(db, '0011_row_level_feed');
  await sql`CREATE VIEW portal_report AS SELECT id, role FROM portal_accounts`.execute(db);
  await t.rejects(migrateToLatest(db), /portal_report depends on the view portal_accounts/);
  const applied = (await listMigrations(db)).filter((m) => m.executedAt !== undefined).map((m) => m.name);
  t.equal(applied.at(-1), '0011_row_level_feed', 'the failed migration left nothing applied');
  t.equal((await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_type WHERE typname = 'row_manager'`.execute(db)).rows[0]?.n, 0, 'and no domain behind');
});
