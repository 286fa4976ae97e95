// A database whose ctype is C (initdb without a locale, as where LANG is
// unset) folds only ASCII letters in lower(). Every check of a class name or
// an address folds it in PostgreSQL, as the unique indexes do, so the locked
// path's lookup and the statement's guard agree on a name with other
// letters: a second class of the name is a 409, not a guard that fails on
// every try (503), and an admin's address is refused (rule 3) and a manual
// account's adopted (rule 2) as with ASCII letters.
import { sql } from 'kysely';
import pg from 'pg';
import t from 'tap';
import { createDb } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../src/cli.js';
import { testApp, testEnv } from './helpers/app.js';
import { entraExport } from './helpers/entra-export.js';
import { adminUrl, databaseUrl } from './helpers/database.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

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

  // "åk 7a" is another name here; renaming it to the first class's name in another case is a rename onto that name.
  const lower = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'åk 7a', externalId: 'g-d' });
  t.equal(lower.statusCode, 201, 'a name that differs in a letter lower() leaves as it is');
  const recase = await scim('PATCH', `/Groups/${lower.json().id}`, patch({ op: 'Replace', path: 'displayName', value: 'ÅK 7a' }));
  t.equal(recase.statusCode, 409, 'a change in case only is checked against the other names');

  const names = await env.db.selectFrom('classes').select('display_name').where('tenant_id', '=', env.tenant.id).orderBy('display_name').execute();
  t.same(names, [{ display_name: 'Class 8B' }, { display_name: 'ÅK 7A' }, { display_name: 'åk 7a' }]);
});

for (const writeStrategy of ['quick', 'locked'] as const) {
  t.test(`an address with non-ASCII capitals meets rules 3 and 2 (${writeStrategy} path)`, async (t) => {
    const env = await testApp(t, {}, { writeStrategy });
    const scim = client(env.app, env.headers);
    const manual = (user_name: string, role: 'admin' | 'teacher') =>
      env.db
        .insertInto('accounts')
        .values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name, role, scim: '{}' })
        .returningAll()
        .executeTakeFirstOrThrow();
    const admin = await manual('ÅSA.REKTOR@school.example', 'admin');

    const create = await scim('POST', '/Users', entraUser(1, { userName: 'Åsa.Rektor@School.example' }));
    t.equal(create.statusCode, 409, create.body);
    t.match(create.json(), { status: '409', scimType: 'uniqueness', detail: /belongs to a portal admin account/ });
    t.same(await env.db.selectFrom('accounts').selectAll().where('id', '=', admin.id).executeTakeFirstOrThrow(), admin, 'the admin row is unchanged');

    const pupil = (await scim('POST', '/Users', entraUser(2))).json().id as string;
    const rename = await scim('PATCH', `/Users/${pupil}`, patch({ op: 'replace', path: 'userName', value: 'ÅSA.REKTOR@SCHOOL.EXAMPLE' }));
    t.equal(rename.statusCode, 409, 'a change onto the address is refused too');
    t.equal((await env.db.selectFrom('accounts').select('user_name').where('id', '=', pupil).executeTakeFirstOrThrow()).user_name, 'Pupil2@School.example');

    // The admin's e-mail differs from the new user's name in a letter lower() leaves as it is here: both are checked.
    const other = await env.db
      .insertInto('accounts')
      .values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'vice.principal', email: 'åke@school.example', role: 'admin', scim: '{}' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const byEmail = await scim('POST', '/Users', entraUser(4, { userName: 'ÅKE@school.example', emails: [{ type: 'work', value: 'åke@school.example', primary: true }] }));
    t.equal(byEmail.statusCode, 409, byEmail.body);
    t.match(await env.db.selectFrom('sync_conflicts').select('account_id').where('account_id', '=', other.id).execute(), [{ account_id: other.id }]);

    const teacher = await manual('ÖRJAN.LARARE@school.example', 'teacher');
    const adopted = await scim('POST', '/Users', entraUser(3, { userName: 'Örjan.Larare@School.example' }));
    t.equal(adopted.statusCode, 201, adopted.body);
    t.equal(adopted.json().id, teacher.id, 'the manual account is adopted');
    t.match(await env.db.selectFrom('accounts').selectAll().where('id', '=', teacher.id).executeTakeFirstOrThrow(), { managed_by: 'sync', user_name: 'Örjan.Larare@School.example' });
    const rows = await env.db.selectFrom('accounts').select('id').where('tenant_id', '=', env.tenant.id).execute();
    t.equal(rows.length, 4, 'the admins, the pupil and the adopted teacher: nothing else was created');
  });
}

t.test('the first-sync preview folds addresses as the server does', async (t) => {
  const env = await testApp(t);
  const manual = (user_name: string, role: 'admin' | 'teacher') =>
    env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name, role, scim: '{}' }).returning('id').executeTakeFirstOrThrow();
  const admin = await manual('ÅSA.REKTOR@school.example', 'admin');
  const teacher = await manual('ÖRJAN.LARARE@school.example', 'teacher');
  const user = (n: number, userPrincipalName: string) => ({
    userPrincipalName,
    displayName: `User ${n}`,
    givenName: 'User',
    surname: String(n),
    mail: `user${n}@school.example`,
    objectId: `0c0c0c0c-0000-4000-8000-${String(n).padStart(12, '0')}`,
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'portal-scim-c-locale-'));
  const file = path.join(dir, 'users.csv');
  await writeFile(file, entraExport([user(1, 'Åsa.Rektor@School.example'), user(2, 'Örjan.Larare@School.example')]));
  const out: string[] = [];
  const code = await runCli(['preview', '--tenant', env.tenant.id, '--entra-users', file, '--json'], {
    out: (s) => out.push(s),
    err: (s) => out.push(s),
    env: testEnv({ DATABASE_URL: env.database.url }),
  });
  t.equal(code, 0, out.join('\n'));
  const report = JSON.parse(out.join('\n'));
  t.match(report.users, [
    { row: 2, outcome: 'admin-collision', rule: 3, account: { id: admin.id } },
    { row: 3, outcome: 'adopt', rule: 2, matchedBy: 'userName', account: { id: teacher.id } },
  ]);
});

t.test('filters fold a value with non-ASCII capitals as the column is folded', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const id = (await scim('POST', '/Users', entraUser(1, { userName: 'Åsa.Lind@Skolan.Å' }))).json().id as string;
  await scim('POST', '/Users', entraUser(2));
  for (const filter of ['userName sw "ÅSA.L"', 'userName co "Å"', 'userName ew "SKOLAN.Å"', 'userName eq "ÅSA.LIND@SKOLAN.Å"']) {
    const res = await scim('GET', `/Users?filter=${encodeURIComponent(filter)}`);
    t.equal(res.statusCode, 200, filter);
    t.same((res.json().Resources as { id: string }[]).map((r) => r.id), [id], filter);
  }
});
