// docs/database-contract.md and the views the portal reads stay in step: a
// migration that changes the surface fails here until the document follows.
import { readFile } from 'node:fs/promises';
import { sql } from 'kysely';
import t from 'tap';
import { testDatabase } from './helpers/database.js';

/** The "| column | type | meaning |" table under each "### view" heading. */
function documented(markdown: string): Map<string, [string, string][]> {
  const views = new Map<string, [string, string][]>();
  let current: string | undefined;
  for (const line of markdown.split('\n')) {
    const heading = /^### (\w+)\s*$/.exec(line);
    if (heading?.[1]) {
      current = heading[1];
      views.set(current, []);
      continue;
    }
    const row = /^\| (\w+) \| ([\w ]+) \| .* \|$/.exec(line);
    if (current && row?.[1] && row[2] && row[1] !== 'column') views.get(current)?.push([row[1], row[2].trim()]);
  }
  return views;
}

t.test('the documented views are exactly the database surface', async (t) => {
  const { db } = await testDatabase(t);
  const doc = documented(await readFile('docs/database-contract.md', 'utf8'));
  t.same([...doc.keys()].sort(), ['portal_accounts', 'portal_class_memberships', 'portal_classes']);
  const live = await sql<{ table_name: string; column_name: string; data_type: string }>`
    SELECT table_name, column_name, data_type FROM information_schema.columns
     WHERE table_schema = 'public' AND table_name LIKE 'portal\\_%'
     ORDER BY table_name, ordinal_position`.execute(db);
  const views = await sql<{ name: string }>`SELECT table_name AS name FROM information_schema.views WHERE table_schema = 'public' ORDER BY 1`.execute(db);
  t.same(views.rows.map((v) => v.name), [...doc.keys()].sort(), 'every view the portal reads is documented');
  for (const [view, columns] of doc) {
    const actual = live.rows.filter((r) => r.table_name === view).map((r) => [r.column_name, r.data_type]);
    t.same(actual, columns, `${view}: columns, order and types match the document`);
  }
});
