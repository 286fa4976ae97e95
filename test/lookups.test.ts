// Entra's lookups (userName, externalId or displayName eq a value) run as
// statements of their own. They must answer exactly as the general filter
// path does for the same condition: here each is compared with an equivalent
// filter that takes the general path (the condition twice, joined by "and"),
// over live, deleted, manual and foreign-tenant rows, in both statement states
// (planned per run, and prepared once the tables have statistics).
import { sql } from 'kysely';
import t from 'tap';
import { analyzedTables } from '../src/db/database.js';
import { tenantWithToken, testApp } from './helpers/app.js';
import { GROUP, client, entraUser } from './helpers/scim.js';

t.test('lookups answer as the general filter path does', async (t) => {
  const { app, db, headers, tenant, config, keys, database } = await testApp(t);
  const scim = client(app, headers);
  const other = await tenantWithToken(db, config, keys, 'Other School', ['other.example']);
  const otherScim = client(app, other.headers);

  for (const n of [1, 2, 3]) t.equal((await scim('POST', '/Users', entraUser(n))).statusCode, 201);
  t.equal((await otherScim('POST', '/Users', entraUser(1))).statusCode, 201, 'the same user in another tenant');
  const gone = (await scim('POST', '/Users', entraUser(4))).json().id as string;
  t.equal((await scim('DELETE', `/Users/${gone}`)).statusCode, 204);
  await sql`INSERT INTO accounts (tenant_id, managed_by, user_name, external_id) VALUES (${tenant.id}::uuid, 'manual', 'Manual@School.example', 'manual-1')`.execute(db);
  // Class names repeat across the schools of this tenant (the setting that allows it).
  await sql`UPDATE tenants SET class_names = 'repeat' WHERE id = ${tenant.id}::uuid`.execute(db);
  for (const name of ['Class 7A', 'class 7a', 'Class 7B']) {
    t.equal((await scim('POST', '/Groups', { schemas: [GROUP], displayName: name, externalId: `ext-${name}` })).statusCode, 201);
  }
  t.equal((await otherScim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', externalId: 'ext-Class 7A' })).statusCode, 201);

  const cases: [string, string, number][] = [
    ['/Users', 'userName eq "Pupil1@School.example"', 1],
    ['/Users', 'userName eq "pupil1@school.example"', 1],
    ['/Users', 'USERNAME eq "PUPIL2@SCHOOL.EXAMPLE"', 1],
    ['/Users', 'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "pupil3@school.example"', 1],
    ['/Users', 'userName eq "pupil4@school.example"', 0],
    ['/Users', 'userName eq "manual@school.example"', 0],
    ['/Users', 'userName eq "nobody@school.example"', 0],
    ['/Users', 'externalId eq "00000000-0000-4000-8000-000000000002"', 1],
    ['/Users', 'externalId eq "00000000-0000-4000-8000-00000000000A"', 0],
    ['/Users', 'externalId eq "manual-1"', 0],
    ['/Groups', 'displayName eq "class 7a"', 2],
    ['/Groups', 'displayName eq "Class 7B"', 1],
    ['/Groups', 'externalId eq "ext-Class 7A"', 1],
    ['/Groups', 'externalId eq "EXT-CLASS 7A"', 0],
  ];
  const ask = async (endpoint: string, filter: string, extra = '') => {
    const response = await scim('GET', `${endpoint}?filter=${encodeURIComponent(filter)}${extra}`);
    t.equal(response.statusCode, 200, `${endpoint} ${filter}${extra}: 200`);
    const body = response.json<{ totalResults: number; Resources: { id: string }[] }>();
    return { total: body.totalResults, ids: body.Resources.map((r) => r.id), body: body.Resources };
  };
  const compare = async (state: string) => {
    for (const [endpoint, filter, expected] of cases) {
      const lookup = await ask(endpoint, filter);
      const general = await ask(endpoint, `${filter} and ${filter}`);
      t.equal(lookup.total, expected, `${state}, ${endpoint} ${filter}: ${expected} found`);
      t.same(lookup, general, `${state}, ${endpoint} ${filter}: the same resources as the general path`);
      const one = await ask(endpoint, filter, '&count=1');
      t.equal(one.total, expected, `${state}, ${endpoint} ${filter}, count=1: the total counts every match`);
      t.same(one.ids, lookup.ids.slice(0, 1), `${state}, ${endpoint} ${filter}, count=1: the first of them`);
    }
  };

  await compare('planned per run');
  // More rows, so the server analyzes every table and prepares its statements.
  await sql`INSERT INTO accounts (tenant_id, managed_by, user_name) SELECT ${other.tenant.id}::uuid, 'sync', 'filler' || g || '@other.example' FROM generate_series(1, 60) g`.execute(db);
  await sql`INSERT INTO classes (tenant_id, managed_by, display_name) SELECT ${other.tenant.id}::uuid, 'sync', 'Filler ' || g FROM generate_series(1, 60) g`.execute(db);
  await sql`INSERT INTO class_memberships (tenant_id, class_id, account_id, synced)
    SELECT c.tenant_id, c.id, a.id, true FROM classes c JOIN accounts a ON a.tenant_id = c.tenant_id WHERE c.tenant_id = ${other.tenant.id}::uuid LIMIT 60`.execute(db);
  t.equal((await analyzedTables(database.pool)).size, 3, 'every table has statistics now');
  await compare('prepared');
});
