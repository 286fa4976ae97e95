// docs/database-contract.md and the views the portal reads stay in step: a
// migration that changes the surface fails here until the document follows.
import { readFile } from 'node:fs/promises';
import { sql } from 'kysely';
import t from 'tap';
import { testDatabase } from './helpers/database.js';

/** The "| column | type | meaning |" table under each "### name" heading, of the views or of the functions' results. */
function documented(markdown: string, part: 'views' | 'functions'): Map<string, [string, string][]> {
  const views = new Map<string, [string, string][]>();
  let current: string | undefined;
  let inFunctions = false;
  for (const line of markdown.split('\n')) {
    if (/^## /.test(line)) inFunctions = /^## Functions\s*$/.test(line);
    const heading = /^### (\w+)\s*$/.exec(line);
    if (heading?.[1]) {
      current = inFunctions === (part === 'functions') ? heading[1] : undefined;
      if (current) views.set(current, []);
      continue;
    }
    const row = /^\| (\w+) \| ([\w ]+) \| .* \|$/.exec(line);
    if (current && row?.[1] && row[2] && row[1] !== 'column') views.get(current)?.push([row[1], row[2].trim()]);
  }
  return views;
}

t.test('the documented views are exactly the database surface', async (t) => {
  const { db } = await testDatabase(t);
  const doc = documented(await readFile('docs/database-contract.md', 'utf8'), 'views');
  t.same([...doc.keys()].sort(), ['portal_account_tombstones', 'portal_accounts', 'portal_class_memberships', 'portal_classes']);
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

t.test('the documented functions are exactly the functions the portal calls, with their result columns', async (t) => {
  const { db } = await testDatabase(t);
  const doc = documented(await readFile('docs/database-contract.md', 'utf8'), 'functions');
  t.same([...doc.keys()].sort(), ['portal_changes', 'portal_changes_horizon', 'portal_changes_pruned', 'portal_sign_in_account']);
  const functions = await sql<{ name: string }>`
    SELECT DISTINCT routine_name AS name FROM information_schema.routines
     WHERE routine_schema = 'public' AND routine_name LIKE 'portal\\_%' ORDER BY 1`.execute(db);
  t.same(functions.rows.map((f) => f.name), [...doc.keys()].sort(), 'every function the portal calls is documented');
  const results = await sql<{ name: string; column_name: string; data_type: string }>`
    SELECT r.routine_name AS name, p.parameter_name AS column_name, p.data_type
      FROM information_schema.routines r JOIN information_schema.parameters p ON p.specific_name = r.specific_name
     WHERE r.routine_schema = 'public' AND p.parameter_mode = 'OUT'
     ORDER BY r.routine_name, p.ordinal_position`.execute(db);
  for (const [fn, columns] of doc) {
    const actual = results.rows.filter((r) => r.name === fn).map((r) => [r.column_name, r.data_type]);
    t.same(actual, columns, `${fn}: result columns, order and types match the document`);
  }
});
