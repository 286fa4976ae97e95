// Statements marked by preparedOn are prepared once per connection under a
// name of their text and reused, but only once the tables they name have
// statistics; the server analyzes a table without them as soon as it has 50
// rows. Every other statement stays unnamed.
import { randomBytes } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import t, { type Test } from 'tap';
import { PREPARED, UNIQUE_KEYS, analyzedTables, createDb, fixedStatement, preparedOn, type Database } from '../src/db/database.js';
import { testDatabase } from './helpers/database.js';

/** Runs the marked statements on one connection; the statements then prepared on it. */
async function preparedAfter(db: Kysely<Database>, run: (connection: Kysely<Database>) => Promise<void>): Promise<string[]> {
  return db.connection().execute(async (connection) => {
    await run(connection);
    return (await sql<{ statement: string; name: string }>`SELECT name, statement FROM pg_prepared_statements ORDER BY statement`.execute(connection)).rows.map(
      (r) => `${/^portal_scim_[\w-]{24}$/.test(r.name) ? 'named' : r.name}: ${r.statement}`,
    );
  });
}

const onAccounts = (connection: Kysely<Database>, n: number) => sql<{ n: number }>`${preparedOn('accounts')} SELECT ${n}::integer AS n`.execute(connection);
const onAccountsAndMemberships = (connection: Kysely<Database>, n: number) =>
  sql<{ n: number }>`${preparedOn('accounts', 'class_memberships')} SELECT ${n}::integer + 1 AS n`.execute(connection);

async function runMarked(t: Test, connection: Kysely<Database>): Promise<void> {
  for (const n of [1, 2, 3]) {
    t.same((await onAccounts(connection, n)).rows, [{ n }], 'the marked statement answers with its parameters');
    t.same((await onAccountsAndMemberships(connection, n)).rows, [{ n: n + 1 }], 'so does the one on two tables');
  }
  await sql`SELECT 42 AS unmarked`.execute(connection);
}

t.test('a marked statement is planned on every run until its tables have statistics, then prepared once and reused', async (t) => {
  const { db, pool } = await testDatabase(t);
  t.same([...(await analyzedTables(pool))], [], 'a new database has no statistics');
  t.same(await preparedAfter(db, (c) => runMarked(t, c)), [], 'nothing is prepared without statistics');

  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Statistics School') RETURNING id`.execute(db)).rows[0]?.id;
  const addAccounts = (from: number, to: number) =>
    sql`INSERT INTO accounts (tenant_id, managed_by, user_name)
        SELECT ${tenant}::uuid, 'sync', 'a' || g || '@school.example' FROM generate_series(${from}::int, ${to}::int) g`.execute(db);
  await addAccounts(1, 49);
  t.same([...(await analyzedTables(pool))], [], '49 accounts are not yet analyzed');
  await addAccounts(50, 50);
  t.same([...(await analyzedTables(pool))], ['accounts'], 'at 50 accounts the server analyzes the table');
  const stats = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stats WHERE tablename = 'accounts' AND attname = 'tenant_id'`.execute(db);
  t.equal(stats.rows[0]?.n, 1, 'PostgreSQL has statistics on accounts');

  const prepared = await preparedAfter(db, (c) => runMarked(t, c));
  t.same(prepared, ['named: /* prepared on accounts */ SELECT $1::integer AS n'], 'only the statement on accounts alone is prepared, once');
});

t.test('a marked statement that names no table is prepared at its first run, before any statistics', async (t) => {
  const { db, pool } = await testDatabase(t);
  t.same([...(await analyzedTables(pool))], [], 'a new database has no statistics');
  const onUniqueKeys = (connection: Kysely<Database>, n: number) => sql<{ n: number }>`${preparedOn()} SELECT ${n}::integer * 2 AS n`.execute(connection);
  const expected = [`named: ${PREPARED}${UNIQUE_KEYS} */ SELECT $1::integer * 2 AS n`];
  t.same(await preparedAfter(db, async (connection) => void (await onUniqueKeys(connection, 1))), expected, 'its first run prepares it');
  const prepared = await preparedAfter(db, async (connection) => {
    for (const n of [1, 2, 3]) t.same((await onUniqueKeys(connection, n)).rows, [{ n: n * 2 }], 'it answers with its parameters');
    await runMarked(t, connection);
  });
  t.same(prepared, expected, 'it alone is prepared, once');
});

t.test('a role that may not analyze the tables leaves that to autovacuum, and statements stay unprepared', async (t) => {
  const { db, url } = await testDatabase(t);
  const role = `scim_writer_${process.pid}_${Math.floor(Math.random() * 1e6)}`;
  const password = randomBytes(12).toString('hex');
  await sql`CREATE ROLE ${sql.id(role)} LOGIN PASSWORD ${sql.lit(password)}`.execute(db);
  await sql`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${sql.id(role)}`.execute(db);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Writer School') RETURNING id`.execute(db)).rows[0]?.id;
  await sql`INSERT INTO accounts (tenant_id, managed_by, user_name)
    SELECT ${tenant}::uuid, 'sync', 'w' || g || '@school.example' FROM generate_series(1, 60) g`.execute(db);

  const asRole = new URL(url);
  asRole.username = role;
  asRole.password = password;
  const writer = createDb(asRole.toString(), { poolSize: 2 });
  t.teardown(async () => {
    await writer.db.destroy();
    await sql`DROP OWNED BY ${sql.id(role)}`.execute(db);
    await sql`DROP ROLE ${sql.id(role)}`.execute(db);
  });
  t.same([...(await analyzedTables(writer.pool))], [], 'the ANALYZE it may not run is no error');
  const stats = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stats WHERE tablename = 'accounts'`.execute(db);
  t.equal(stats.rows[0]?.n, 0, 'accounts has no statistics');
  const prepared = await preparedAfter(writer.db, (c) => runMarked(t, c));
  t.same(prepared, [], 'nothing is prepared');
});

t.test('a fixed statement is compiled once and binds each run its own values, a transaction too', async (t) => {
  const database = await testDatabase(t, { migrated: false });
  let builds = 0;
  const sum = fixedStatement<{ a: number; b: number; label: string }, { total: number; label: string; again: string }>((p) => {
    builds++;
    return sql`SELECT ${p.a}::integer + ${p.b}::integer AS total, ${p.label}::text AS label, ${p.label}::text AS again`;
  });
  t.same((await sum(database.db, { a: 1, b: 2, label: 'one' })).rows, [{ total: 3, label: 'one', again: 'one' }]);
  t.same((await sum(database.db, { a: 40, b: 2, label: 'two' })).rows, [{ total: 42, label: 'two', again: 'two' }]);
  const inTransaction = await database.db.transaction().execute((trx) => sum(trx, { a: 5, b: 5, label: 'three' }));
  t.same(inTransaction.rows, [{ total: 10, label: 'three', again: 'three' }]);
  t.equal(builds, 1, 'the template was built and compiled once');

  const withValue = fixedStatement<{ a: number }, { n: number }>((p) => sql`SELECT ${p.a}::integer + ${1}::integer AS n`);
  await t.rejects(withValue(database.db, { a: 1 }), /takes every value as a parameter/, 'a value that is not a parameter is refused');
});

t.test('named statements run with generic plans only; every other statement with parameters keeps the default', async (t) => {
  const database = await testDatabase(t);
  const { db } = createDb(database.url, { poolSize: 1 });
  t.teardown(() => db.destroy());
  // One connection, so each statement sees what the one before it left.
  await db.connection().execute(async (connection) => {
    const named = async (): Promise<string | undefined> =>
      (await sql<{ mode: string }>`${preparedOn()} SELECT current_setting('plan_cache_mode') AS mode, ${1}::integer AS n`.execute(connection)).rows[0]?.mode;
    const adHoc = async (): Promise<string | undefined> =>
      (await sql<{ mode: string }>`SELECT current_setting('plan_cache_mode') AS mode, ${1}::integer AS n`.execute(connection)).rows[0]?.mode;
    t.equal(await adHoc(), 'auto', 'an ad hoc statement first');
    t.equal(await named(), 'force_generic_plan', 'a named statement');
    t.equal(await named(), 'force_generic_plan', 'and the next');
    t.equal(await adHoc(), 'auto', 'an ad hoc statement after it');
    // A rollback undoes what the transaction set: the next statement of the same kind sets it again.
    t.equal(await named(), 'force_generic_plan');
    await sql`BEGIN`.execute(connection);
    t.equal(await adHoc(), 'auto', 'ad hoc in a transaction');
    await sql`ROLLBACK`.execute(connection);
    t.equal(await adHoc(), 'auto', 'ad hoc after the rollback of a transaction that had reset it');
    // A setting changed by hand.
    await sql`SET plan_cache_mode = force_custom_plan`.execute(connection);
    t.equal(await adHoc(), 'auto', 'ad hoc after a SET by hand');
    // A COMMIT of a failed transaction is a rollback too.
    await sql`BEGIN`.execute(connection);
    t.equal(await named(), 'force_generic_plan', 'named in a transaction');
    await t.rejects(sql`SELECT 1 / 0`.execute(connection), /division by zero/);
    await sql`COMMIT`.execute(connection);
    t.equal(await named(), 'force_generic_plan', 'named after a COMMIT that PostgreSQL answered with ROLLBACK');
    const counts = await sql<{ generic: number; custom: number }>`SELECT sum(generic_plans)::int AS generic, sum(custom_plans)::int AS custom
      FROM pg_prepared_statements WHERE name LIKE 'portal_scim_%'`.execute(connection);
    t.same(counts.rows, [{ generic: 5, custom: 0 }], 'PostgreSQL made only generic plans for the named statement');
  });
});
