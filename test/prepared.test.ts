// Statements marked PREPARED are prepared once per connection under a name of
// their text and reused; every other statement stays unnamed.
import { sql } from 'kysely';
import t from 'tap';
import { prepare } from '../src/db/database.js';
import { testDatabase } from './helpers/database.js';

t.test('a marked statement is prepared on its connection and reused, others are not', async (t) => {
  const { db } = await testDatabase(t);
  await db.connection().execute(async (connection) => {
    for (const n of [1, 2, 3]) {
      const marked = await sql<{ n: number }>`${prepare} SELECT ${n}::integer AS n`.execute(connection);
      t.same(marked.rows, [{ n }], 'the marked statement answers with its parameters');
    }
    await sql`SELECT 42 AS unmarked`.execute(connection);
    const prepared = await sql<{ name: string; statement: string }>`SELECT name, statement FROM pg_prepared_statements ORDER BY name`.execute(connection);
    t.equal(prepared.rows.length, 1, 'one statement is prepared, once');
    t.match(prepared.rows[0]?.name, /^portal_scim_[\w-]{24}$/);
    t.match(prepared.rows[0]?.statement, /^\/\* prepared \*\/ SELECT \$1::integer AS n$/);
  });
});
