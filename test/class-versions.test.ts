// A class's version (meta.version, ETag, If-Match) moves with every change of
// the class as SCIM shows it, including a member who leaves because their
// account was deleted: that delete never writes the class row (it would wait
// in a circle with class writes), so each such departure is counted beside
// the row's version (migration 0016).
import { Writable } from 'node:stream';
import t from 'tap';
import { loadConfig } from '../src/config.js';
import { findSyncedClass } from '../src/db/classes.js';
import { executeClassPlan } from '../src/db/write-statements.js';
import { createLogger } from '../src/logger.js';
import { planClassDelete } from '../src/scim/class-writes.js';
import { runCli } from '../src/cli.js';
import { runHourlyJob } from '../src/server.js';
import { testApp, testEnv } from './helpers/app.js';
import { connection, holder, untilBlocked, watcher } from './helpers/locks.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

t.test('a member whose account is deleted moves the class version, and stale validators stop matching', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const [leaving, staying] = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  const created = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: leaving }, { value: staying }] });
  t.equal(created.statusCode, 201);
  const id = created.json().id as string;
  t.equal(created.headers.etag, 'W/"1"');

  const modified = Date.parse(created.json().meta.lastModified as string);
  t.equal((await scim('DELETE', `/Users/${leaving}`)).statusCode, 204);
  const read = await scim('GET', `/Groups/${id}`);
  t.ok(Date.parse(read.json().meta.lastModified as string) > modified, 'lastModified moved with it');
  const since = await scim('GET', `/Groups?filter=${encodeURIComponent(`meta.lastModified gt "${new Date(modified).toISOString()}"`)}&excludedAttributes=members`);
  t.same((since.json().Resources as { id: string }[]).map((r) => r.id), [id], 'a filter on lastModified finds it as shown');
  t.same((read.json().members as { value: string }[]).map((m) => m.value), [staying], 'the member left');
  t.equal(read.headers.etag, 'W/"2"', 'and the version moved');
  t.match(read.json(), { meta: { version: 'W/"2"' } });
  t.equal((await scim('GET', `/Groups/${id}`, undefined, { 'if-none-match': 'W/"1"' })).statusCode, 200, 'the old version is no longer current');
  t.equal((await scim('GET', `/Groups/${id}`, undefined, { 'if-none-match': 'W/"2"' })).statusCode, 304);
  const listed = await scim('GET', `/Groups?filter=${encodeURIComponent('displayName eq "Class 7A"')}&excludedAttributes=members`);
  t.match(listed.json().Resources, [{ id, meta: { version: 'W/"2"' } }], 'the lookup shows the same version');

  for (const writeStrategy of ['quick', 'locked'] as const) {
    const other = await testApp(t, {}, { writeStrategy });
    const otherScim = client(other.app, other.headers);
    const member = (await otherScim('POST', '/Users', entraUser(3))).json().id as string;
    const klass = (await otherScim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 8B', members: [{ value: member }] })).json().id as string;
    await otherScim('DELETE', `/Users/${member}`);
    const stale = await otherScim('PATCH', `/Groups/${klass}`, patch({ op: 'Replace', path: 'displayName', value: 'Class 8C' }), { 'if-match': 'W/"1"' });
    t.equal(stale.statusCode, 412, `${writeStrategy}: If-Match of the version before the departure is refused`);
    t.match(stale.json(), { status: '412', detail: /its version is W\/"2", not W\/"1"/ });
    const current = await otherScim('PATCH', `/Groups/${klass}`, patch({ op: 'Replace', path: 'displayName', value: 'Class 8C' }), { 'if-match': 'W/"2"' });
    t.equal(current.statusCode, 204, `${writeStrategy}: the current version is accepted`);
    t.equal((await otherScim('GET', `/Groups/${klass}`)).headers.etag, 'W/"3"', `${writeStrategy}: and the write moves it on`);
    const put = await otherScim('PUT', `/Groups/${klass}`, { schemas: [GROUP], displayName: 'Class 8D', members: [] }, { 'if-match': 'W/"3"' });
    t.equal(put.statusCode, 200, put.body);
    t.match(put.json(), { meta: { version: 'W/"4"' } }, `${writeStrategy}: a write's answer shows the version as reads do`);
    t.equal((await otherScim('DELETE', `/Groups/${klass}`, undefined, { 'if-match': 'W/"1"' })).statusCode, 412);
    t.equal((await otherScim('DELETE', `/Groups/${klass}`, undefined, { 'if-match': 'W/"4"' })).statusCode, 204);
    t.same(await other.db.selectFrom('class_departures').selectAll().where('class_id', '=', klass).execute(), [], `${writeStrategy}: the class's delete takes its departures`);
  }
});

t.test('only members SCIM shows count: a member kept by hand only, or a manual class, moves nothing', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const [synced, handOnly] = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: synced }] })).json().id as string;
  await env.db.insertInto('class_memberships').values({ tenant_id: env.tenant.id, class_id: id, account_id: handOnly, synced: false, manual: true }).execute();
  t.equal((await scim('DELETE', `/Users/${handOnly}`)).statusCode, 204);
  t.equal((await scim('GET', `/Groups/${id}`)).headers.etag, 'W/"1"', 'SCIM never showed that member');
  t.same(await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', id).execute(), [{ account_id: synced }], 'though the row went with the account');
  t.same(
    await env.db.selectFrom('class_departures').select(['tenant_id', 'class_id', 'account_id']).execute(),
    [],
    'no departure was counted',
  );
  t.equal((await scim('DELETE', `/Users/${synced}`)).statusCode, 204);
  t.same(await env.db.selectFrom('class_departures').select(['tenant_id', 'class_id', 'account_id']).execute(), [{ tenant_id: env.tenant.id, class_id: id, account_id: synced }]);
});

t.test('the hourly job removes the departures of classes that no longer exist', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const member = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: member }] })).json().id as string;
  await scim('DELETE', `/Users/${member}`);
  // What a delete racing the class's delete can leave behind.
  const gone = '00000000-0000-4000-8000-00000000dead';
  await env.db.insertInto('class_departures').values({ tenant_id: env.tenant.id, class_id: gone, account_id: member }).execute();
  const lines: string[] = [];
  const logger = createLogger('info', new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
  await runHourlyJob(env.db, loadConfig(testEnv()), logger);
  t.same((await env.db.selectFrom('class_departures').select('class_id').execute()).map((d) => d.class_id), [id], "the live class keeps its own");
  t.match(lines.join(''), /"departures":1,"msg":"removed the departures of deleted classes"/);
  t.equal((await scim('GET', `/Groups/${id}`)).headers.etag, 'W/"2"');
});

t.test('a class with departures is adopted again after a disconnect, its version moving on', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const [leaving, staying] = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a', members: [{ value: leaving }, { value: staying }] })).json().id as string;
  await scim('DELETE', `/Users/${leaving}`);
  t.equal((await scim('GET', `/Groups/${id}`)).headers.etag, 'W/"2"');

  const cli = async (...argv: string[]) => {
    const out: string[] = [];
    const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => out.push(s), env: testEnv({ DATABASE_URL: env.database.url }) });
    return { code, out: out.join('\n') };
  };
  t.equal((await cli('tenant', 'disconnect', env.tenant.id)).code, 0);
  t.equal((await cli('tenant', 'connect', env.tenant.id)).code, 0);
  const issued = await cli('token', 'issue', '--tenant', env.tenant.id, '--json');
  const again = client(env.app, { authorization: `Bearer ${JSON.parse(issued.out).token as string}`, 'content-type': 'application/scim+json' });
  const regroup = await again('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a' });
  t.equal(regroup.statusCode, 201, regroup.body);
  t.equal(regroup.json().id, id, 'the class is adopted again');
  t.equal(regroup.headers.etag, 'W/"4"', 'its version moves on from where it was: the departure, the disconnect and the adoption');
});

// A rename on the locked path holds the class from its read to its write. A
// member deleted meanwhile moves the version SCIM shows but not the row's:
// the rename writes on its first attempt, and the version counts both. With
// If-Match the client asked for the version it named: that is gone, so 412.
for (const ifMatch of [undefined, 'W/"1"'] as const) {
  t.test(`a locked rename meets a member's delete while it waits for the name (${ifMatch ?? 'no If-Match'})`, async (t) => {
    const env = await testApp(t, {}, { writeStrategy: 'locked' });
    const scim = client(env.app, env.headers);
    const member = (await scim('POST', '/Users', entraUser(1))).json().id as string;
    const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: member }] })).json().id as string;

    const blockedBy = watcher(await connection(t, env));
    const { hold, pid } = await holder(t, env);
    await hold.query(`SELECT pg_advisory_xact_lock(hashtextextended('class name ' || $1::text || ' ' || lower($2), 0))`, [env.tenant.id, 'Class 8B']);
    const renamed = scim('PATCH', `/Groups/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Class 8B' }), ifMatch === undefined ? {} : { 'if-match': ifMatch });
    t.ok(await untilBlocked(blockedBy, pid, 1, renamed), 'the rename holds the class and waits for the name');
    t.equal((await scim('DELETE', `/Users/${member}`)).statusCode, 204, 'the delete does not wait for the class');
    await hold.query('COMMIT');

    const answer = await renamed;
    const row = await env.db.selectFrom('classes').select(['display_name', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
    if (ifMatch === undefined) {
      t.equal(answer.statusCode, 204, answer.body);
      t.same(row, { display_name: 'Class 8B', version: 2 });
      t.equal((await scim('GET', `/Groups/${id}`)).headers.etag, 'W/"3"', 'the rename and the departure');
    } else {
      t.equal(answer.statusCode, 412, answer.body);
      t.match(answer.json(), { detail: /its version is W\/"2", not W\/"1"/ });
      t.same(row, { display_name: 'Class 7A', version: 1 });
    }
  });
}

// The rule the locked path writes by: a plan made from the class row its
// transaction holds is written without checking the version again ('held'),
// as a member's delete since moves only the version SCIM shows; one that
// must check it ('guard': the quick path, or If-Match) writes nothing then.
t.test('a class plan made before a departure: guarded it writes nothing, held it writes', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const member = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: member }] })).json().id as string;
  const row = await findSyncedClass(env.db, env.tenant.id, id);
  t.equal(row?.version, 1);
  await scim('DELETE', `/Users/${member}`);
  const plan = planClassDelete({ tenantId: env.tenant.id, credentialId: env.credentialId, requestId: 'r-1' }, id, row);
  t.equal(await executeClassPlan(env.db, plan, 'guard'), undefined, 'the version it was planned from is gone');
  t.equal((await findSyncedClass(env.db, env.tenant.id, id))?.version, 2, 'nothing was written');
  t.match(await executeClassPlan(env.db, plan, 'held'), { row: { id } }, 'held, it writes');
  t.equal(await findSyncedClass(env.db, env.tenant.id, id), undefined);
});
