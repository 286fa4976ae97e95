// A database whose ctype is C (initdb without a locale, as where LANG is
// unset) folds only ASCII letters in lower(). Every check of a class name
// folds it in PostgreSQL, so the locked path's lookup and the statement's
// guard agree on a name with other letters: a second class of the name is a
// 409, not a guard that fails on every try (503).
import { sql } from 'kysely';
import pg from 'pg';
import t from 'tap';
import { createDb } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { testApp } from './helpers/app.js';
import { adminUrl, databaseUrl } from './helpers/database.js';
import { GROUP, client, patch } from './helpers/scim.js';

// This file's databases are cloned from a template of its own, made with ctype C.
const template = `portal_scim_c_template_${process.pid}`;
process.env.TEST_TEMPLATE_DATABASE = template;

async function admin(statement: string): Promise<void> {
  const connection = new pg.Client({ connectionString: adminUrl() });
  await connection.connect();
  try {
    await connection.query(statement);
  } finally {
    await connection.end();
  }
}

t.before(async () => {
  await admin(`CREATE DATABASE ${template} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`);
  const { db } = createDb(databaseUrl(template), { poolSize: 1 });
  await migrateToLatest(db).finally(() => db.destroy());
});
t.teardown(() => admin(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`));

t.test('a second class of a name with non-ASCII letters answers 409 uniqueness, on create and on rename', async (t) => {
  const env = await testApp(t);
  const { rows } = await sql<{ datctype: string }>`SELECT datctype FROM pg_database WHERE datname = current_database()`.execute(env.db);
  t.same(rows, [{ datctype: 'C' }], 'the database folds ASCII only');
  const scim = client(env.app, env.headers);

  const first = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'ÅK 7A', externalId: 'g-a' });
  t.equal(first.statusCode, 201);
  const second = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'ÅK 7A', externalId: 'g-b' });
  t.equal(second.statusCode, 409);
  t.match(second.json(), { status: '409', scimType: 'uniqueness', detail: /displayName "ÅK 7A" already exists/ });
  t.equal(second.headers['retry-after'], undefined);

  const other = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 8B', externalId: 'g-c' });
  t.equal(other.statusCode, 201);
  const rename = await scim('PATCH', `/Groups/${other.json().id}`, patch({ op: 'Replace', path: 'displayName', value: 'Åk 7a' }));
  t.equal(rename.statusCode, 409, 'the ASCII letters fold as before');
  t.match(rename.json(), { scimType: 'uniqueness' });

  const names = await env.db.selectFrom('classes').select('display_name').where('tenant_id', '=', env.tenant.id).orderBy('display_name').execute();
  t.same(names, [{ display_name: 'Class 8B' }, { display_name: 'ÅK 7A' }]);
});
