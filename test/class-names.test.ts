// Microsoft's SCIM guidance makes group displayNames unique (Entra matches
// groups on them by default, and the SCIM Validator creates a duplicate and
// expects 409). By default a tenant's synced class names are unique in any
// case, on create, rename and PUT; a tenant whose class names repeat across
// its schools allows repeats. Manual classes never count.
import { sql } from 'kysely';
import t from 'tap';
import { migrateDown, migrateToLatest } from '../src/db/migrate.js';
import { signAdminToken } from '../src/auth/tokens.js';
import { runCli } from '../src/cli.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { testApp, testEnv } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';
import { GROUP, client, patch } from './helpers/scim.js';

const group = (displayName: string, externalId: string) => ({ schemas: [GROUP], displayName, externalId });

t.test('a second synced class with the same name, in any case, answers 409 uniqueness on create, rename and PUT', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const first = await scim('POST', '/Groups', group('Class 7A', 'g-1'));
  t.equal(first.statusCode, 201);
  const duplicate = await scim('POST', '/Groups', group('class 7a', 'g-2'));
  t.equal(duplicate.statusCode, 409);
  t.match(duplicate.json(), { status: '409', scimType: 'uniqueness', detail: 'A group with displayName "class 7a" already exists (group names are unique in this tenant, in any case).' });
  t.match(String(duplicate.headers['content-type']), /^application\/scim\+json/);

  const other = await scim('POST', '/Groups', group('Class 7B', 'g-3'));
  t.equal(other.statusCode, 201);
  const otherId = other.json().id as string;
  const rename = await scim('PATCH', `/Groups/${otherId}`, patch({ op: 'Replace', path: 'displayName', value: 'CLASS 7A' }));
  t.equal(rename.statusCode, 409);
  t.equal(rename.json().scimType, 'uniqueness');
  const put = await scim('PUT', `/Groups/${otherId}`, group('Class 7a', 'g-3'));
  t.equal(put.statusCode, 409);
  const rows = await env.db.selectFrom('classes').select(['display_name', 'external_id', 'version']).where('tenant_id', '=', env.tenant.id).orderBy('external_id').execute();
  t.same(rows, [
    { display_name: 'Class 7A', external_id: 'g-1', version: 1 },
    { display_name: 'Class 7B', external_id: 'g-3', version: 1 },
  ], 'nothing was written by the refused requests');
  const failures = await env.db.selectFrom('audit_events').select(['action', 'object_type', 'outcome']).where('outcome', '=', 'failure').orderBy('id').execute();
  t.same(failures, [
    { action: 'create', object_type: 'group', outcome: 'failure' },
    { action: 'update', object_type: 'group', outcome: 'failure' },
    { action: 'update', object_type: 'group', outcome: 'failure' },
  ], 'each refusal is a failed write in the audit log');

  // The class takes its own name in another case: checked, and its own name is no conflict.
  const recase = await scim('PATCH', `/Groups/${first.json().id as string}`, patch({ op: 'Replace', path: 'displayName', value: 'CLASS 7A' }));
  t.equal(recase.statusCode, 204);
  t.equal((await env.db.selectFrom('classes').select('display_name').where('external_id', '=', 'g-1').executeTakeFirstOrThrow()).display_name, 'CLASS 7A');
});

t.test('manual classes never count, and a tenant that repeats class names allows repeats', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  await env.db.insertInto('classes').values({ tenant_id: env.tenant.id, display_name: 'Class 7A', scim: '{}' }).execute();
  t.equal((await scim('POST', '/Groups', group('Class 7A', 'g-1'))).statusCode, 201, 'a manual class of that name is no conflict');

  const out: string[] = [];
  const set = await runCli(['tenant', 'set', env.tenant.id, '--class-names', 'repeat'], { out: (line) => out.push(line), err: (line) => out.push(line), env: testEnv({ DATABASE_URL: env.database.url }) });
  t.equal(set.valueOf(), 0, out.join('\n'));
  t.match(out.join('\n'), /Updated tenant .*: class names\.[\s\S]*Class names: +may repeat/);
  t.equal((await env.db.selectFrom('tenants').select('class_names').where('id', '=', env.tenant.id).executeTakeFirstOrThrow()).class_names, 'repeat');
  const again = await scim('POST', '/Groups', group('Class 7A', 'g-2'));
  t.equal(again.statusCode, 201, 'a repeated name is accepted');
  const third = await scim('POST', '/Groups', group('Class 7B', 'g-3'));
  t.equal((await scim('PATCH', `/Groups/${third.json().id as string}`, patch({ op: 'Replace', path: 'displayName', value: 'class 7a' }))).statusCode, 204);
  const names = await env.db.selectFrom('classes').select('display_name').where('tenant_id', '=', env.tenant.id).where('managed_by', '=', 'sync').orderBy('external_id').execute();
  t.same(names.map((r) => r.display_name), ['Class 7A', 'Class 7A', 'class 7a']);

  const bad = await runCli(['tenant', 'set', env.tenant.id, '--class-names', 'sometimes'], { out: (line) => out.push(line), err: (line) => out.push(line), env: testEnv({ DATABASE_URL: env.database.url }) });
  t.not(bad, 0, 'a value other than unique or repeat is a usage error');
  t.match(out.join('\n'), /"sometimes" is not unique or repeat/);
});

t.test('the admin API sets the class-name policy too', async (t) => {
  const env = await testApp(t);
  const credential = await createAdminCredential(env.db, 'class names', null);
  const token = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  const change = (body: unknown) =>
    env.app.inject({ method: 'PATCH', url: `/admin/tenants/${env.tenant.id}`, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
  const repeat = await change({ classNames: 'repeat' });
  t.equal(repeat.statusCode, 200, repeat.body);
  t.match(repeat.json(), { classNames: 'repeat', changed: ['classNames'] });
  const wrong = await change({ classNames: 'often' });
  t.equal(wrong.statusCode, 400);
  t.match(wrong.json(), { scimType: 'invalidValue', detail: 'classNames must be "unique" or "repeat".' });
  const scim = client(env.app, env.headers);
  t.equal((await scim('POST', '/Groups', group('Class 7A', 'g-1'))).statusCode, 201);
  t.equal((await scim('POST', '/Groups', group('Class 7A', 'g-2'))).statusCode, 201, 'repeats are allowed at once');
  t.equal((await change({ classNames: 'unique' })).statusCode, 200);
  t.equal((await scim('POST', '/Groups', group('Class 7A', 'g-3'))).statusCode, 409, 'unique again: a third one is refused');
  const events = await env.db.selectFrom('audit_events').select(['action', 'details']).where('action', '=', 'settings').orderBy('id').execute();
  t.match(events, [{ details: { changed: ['classNames'] } }, { details: { changed: ['classNames'] } }], 'each change is audited');
});

t.test('parallel creates of one name make one class', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => scim('POST', '/Groups', group(i % 2 === 0 ? 'Race class' : 'RACE CLASS', `g-${i}`))));
  t.same(answers.map((a) => a.statusCode).sort(), [201, 409, 409, 409, 409, 409, 409, 409]);
  const rows = await env.db.selectFrom('classes').select('id').where('tenant_id', '=', env.tenant.id).execute();
  t.equal(rows.length, 1, 'one class row');
});

t.test('a create waits for the name\'s turn and then sees the class a write ahead of it committed', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const tenant = env.tenant.id;
  // Another writer of the name: takes its turn, writes the class, and holds the turn until told.
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  let taken = (): void => undefined;
  const turnTaken = new Promise<void>((resolve) => (taken = resolve));
  const first = env.db.transaction().execute(async (trx) => {
    await sql`SELECT class_name_is_free(${tenant}::uuid, 'Turn class', gen_random_uuid())`.execute(trx);
    await sql`INSERT INTO classes (tenant_id, managed_by, display_name) VALUES (${tenant}::uuid, 'sync', 'Turn class')`.execute(trx);
    taken();
    await held;
  });
  await turnTaken;
  let answered = false;
  const second = scim('POST', '/Groups', group('TURN CLASS', 'g-turn')).then((answer) => {
    answered = true;
    return answer;
  });
  // The create is waiting once PostgreSQL shows the name's lock not granted (in this database: other test files run beside this one).
  const waiting = async () =>
    (
      await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks
        WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND (classid::bigint << 32 | objid::bigint) = hashtextextended(${`class name ${tenant} turn class`}, 0)`.execute(env.db)
    ).rows[0]?.n ?? 0;
  for (let i = 0; i < 500 && (await waiting()) === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  t.equal(await waiting(), 1, 'the create waits for the name');
  t.notOk(answered, 'and has not answered');
  release();
  await first;
  const answer = await second;
  t.equal(answer.statusCode, 409, 'then finds the name taken');
  t.equal(answer.json().scimType, 'uniqueness');
  const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM classes WHERE tenant_id = ${tenant}::uuid AND lower(display_name) = 'turn class'`.execute(env.db);
  t.equal(rows.rows[0]?.n, 1, 'one class of the name');
});

t.test('a tenant that already held repeated class names keeps repeating them after the upgrade', async (t) => {
  const { db } = await testDatabase(t);
  // Back to before the rule, with one tenant holding repeated names and one not.
  while (!(await migrateDown(db)).includes('0005_write_rules'));
  const tenants = await sql<{ id: string; name: string }>`INSERT INTO tenants (name) VALUES ('Repeats'), ('Unique') RETURNING id, name`.execute(db);
  const id = (name: string) => tenants.rows.find((r) => r.name === name)?.id;
  await sql`INSERT INTO classes (tenant_id, managed_by, display_name) VALUES
    (${id('Repeats')}::uuid, 'sync', 'Class 7A'), (${id('Repeats')}::uuid, 'sync', 'class 7a'),
    (${id('Unique')}::uuid, 'sync', 'Class 7A'), (${id('Unique')}::uuid, 'manual', 'Class 7A')`.execute(db);
  await migrateToLatest(db);
  const settings = await sql<{ name: string; class_names: string }>`SELECT name, class_names FROM tenants ORDER BY name`.execute(db);
  t.same(settings.rows, [
    { name: 'Repeats', class_names: 'repeat' },
    { name: 'Unique', class_names: 'unique' },
  ], 'repeated synced names keep repeating; a manual class of the same name does not count');
});
