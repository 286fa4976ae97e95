// Rule 11, local overrides: role and grade set in the portal on a synced
// account win over what sync writes until they are cleared, and then what
// Entra last sent shows again. And the merge that repairs a first sync which
// made a new account for a person the portal already had: the old account
// takes over, and Entra's requests for the new account's id keep reaching it.
import { sql } from 'kysely';
import t from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { runCli } from '../src/cli.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { createTenant } from '../src/db/tenants.js';
import { testApp, testEnv, type TestApp } from './helpers/app.js';
import { handMembershipSql, overrideSql } from './helpers/contract-sql.js';
import { connection } from './helpers/locks.js';
import { GROUP, PORTAL, client, entraUser, patch } from './helpers/scim.js';

async function cli(env: TestApp, ...argv: string[]) {
  const out: string[] = [];
  const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => out.push(s), env: testEnv({ DATABASE_URL: env.database.url }) });
  return { code, out: out.join('\n') };
}

async function admin(env: TestApp) {
  const credential = await createAdminCredential(env.db, 'repairs', null);
  const token = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  return (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, body?: unknown) =>
    env.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    });
}

const portalView = async (env: TestApp, id: string) =>
  (
    await sql<{ role: string; grade: string | null; role_source: string; grade_source: string; synced_role: string; synced_grade: string | null }>`
      SELECT role, grade, role_source, grade_source, synced_role, synced_grade FROM portal_accounts WHERE id = ${id}::uuid`.execute(env.db)
  ).rows[0];

const feed = async (env: TestApp, id: string) =>
  (await env.db.selectFrom('change_events').select(['action', 'changed', 'related_id']).where('object_id', '=', id).orderBy('position').execute()).map(
    (c) => [c.action, c.changed.join(','), c.related_id ?? ''].filter((part) => part !== '').join(' '),
  );

t.test("the contract's statements and the portal team's tools write only a change, so the feed has no empty one", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const portal = await connection(t, env);
  const { set, clear } = overrideSql();
  const { add, remove } = handMembershipSql();
  const id = (await scim('POST', '/Users', entraUser(1, { [PORTAL]: { role: 'Student', grade: '7' } }))).json().id as string;
  const klass = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A', members: [{ value: id }] })).json().id as string;
  const accountFeed = () => feed(env, id);
  const membershipFeed = async () =>
    (await env.db.selectFrom('change_events').select(['action', 'changed']).where('object_id', '=', klass).where('related_id', '=', id).orderBy('position').execute()).map(
      (c) => `${c.action} ${c.changed.join(',')}`.trim(),
    );
  const before = await accountFeed();

  for (let i = 0; i < 2; i++) await portal.query(set, [env.tenant.id, id, 'teacher', '8']);
  t.match(await portalView(env, id), { role: 'teacher', grade: '8', role_source: 'override', grade_source: 'override' });
  t.equal((await cli(env, 'account', 'set', id, '--role', 'teacher')).code, 0, 'the CLI sets what is set already');
  for (let i = 0; i < 2; i++) await portal.query(clear, [env.tenant.id, id]);
  t.same((await accountFeed()).slice(before.length), ['updated role,grade,role_source,grade_source', 'updated role,grade,role_source,grade_source'], 'one row for the set, one for the clear');
  t.equal((await env.db.selectFrom('audit_events').select('id').where('action', '=', 'override').execute()).length, 0, 'and no audit event for a change that changed nothing');

  const memberships = (await membershipFeed()).length;
  for (let i = 0; i < 2; i++) await portal.query(add, [env.tenant.id, klass, id]);
  for (let i = 0; i < 2; i++) {
    await portal.query('BEGIN');
    for (const statement of remove) await portal.query(statement, [env.tenant.id, klass, id]);
    await portal.query('COMMIT');
  }
  t.same((await membershipFeed()).slice(memberships), ['updated manual', 'updated manual'], 'one row for the add, one for the removal');

  t.equal((await scim('DELETE', `/Users/${id}`)).statusCode, 204);
  const deleted = (await accountFeed()).length;
  t.equal((await portal.query(clear, [env.tenant.id, id])).rowCount, 0, 'a deleted account has no override to clear');
  await env.db.updateTable('accounts').set({ role_override: null, grade: '9' }).where('id', '=', id).execute();
  t.equal((await accountFeed()).length, deleted, "and a deleted account's row writes nothing more to the feed");
});

t.test('an override wins over what sync writes until it is cleared; then what Entra last sent shows', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const id = (await scim('POST', '/Users', entraUser(1, { [PORTAL]: { role: 'Student', grade: '7' } }))).json().id as string;
  t.match(await portalView(env, id), { role: 'student', grade: '7', role_source: 'sync', grade_source: 'sync' });

  const set = await cli(env, 'account', 'set', id, '--role', 'teacher', '--grade', '8');
  t.equal(set.code, 0, set.out);
  t.match(set.out, /Role: +teacher, from override \(Entra sent student\)\nGrade: +8, from override \(Entra sent 7\)/);
  t.same(await portalView(env, id), { role: 'teacher', grade: '8', role_source: 'override', grade_source: 'override', synced_role: 'student', synced_grade: '7' });

  // Entra keeps sending its values: sync writes them, the override still wins.
  const changed = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: `${PORTAL}:grade`, value: '9' }));
  t.equal(changed.statusCode, 200);
  t.equal(changed.json()[PORTAL].grade, '9', 'Entra sees what it sent');
  t.same(await portalView(env, id), { role: 'teacher', grade: '8', role_source: 'override', grade_source: 'override', synced_role: 'student', synced_grade: '9' });
  const row = await env.db.selectFrom('accounts').select(['role', 'grade', 'role_override', 'grade_override']).where('id', '=', id).executeTakeFirstOrThrow();
  t.same(row, { role: 'student', grade: '9', role_override: 'teacher', grade_override: '8' }, 'sync never wrote over the override');

  const cleared = await cli(env, 'account', 'set', id, '--clear-overrides', '--json');
  t.equal(cleared.code, 0, cleared.out);
  t.match(JSON.parse(cleared.out), { role: 'student', roleSource: 'sync', grade: '9', gradeSource: 'sync' });
  t.same(await portalView(env, id), { role: 'student', grade: '9', role_source: 'sync', grade_source: 'sync', synced_role: 'student', synced_grade: '9' }, 'what Entra last sent shows again');

  t.same(await feed(env, id), [
    'created',
    'updated role,grade,role_source,grade_source',
    'updated synced_grade',
    'updated role,grade,role_source,grade_source',
  ], "the feed has each change the portal can see, and a sync under an override changes no role or grade there");
  const events = await env.db.selectFrom('audit_events').select(['action', 'object_id', 'details']).where('action', '=', 'override').orderBy('id').execute();
  t.match(events, [
    { object_id: id, details: { changed: ['role', 'grade'], cleared: false, via: 'cli' } },
    { object_id: id, details: { changed: ['role', 'grade'], cleared: true, via: 'cli' } },
  ]);
});

t.test('overrides through the admin API, and what is refused', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const call = await admin(env);
  const id = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const set = await call('PATCH', `/admin/accounts/${id}/overrides`, { role: 'staff' });
  t.equal(set.statusCode, 200, set.body);
  t.match(set.json(), { id, role: 'staff', roleSource: 'override', syncedRole: 'student', gradeSource: 'sync' });
  const clearRole = await call('PATCH', `/admin/accounts/${id}/overrides`, { role: null, grade: '5' });
  t.match(clearRole.json(), { role: 'student', roleSource: 'sync', grade: '5', gradeSource: 'override' });
  t.match((await call('DELETE', `/admin/accounts/${id}/overrides`)).json(), { grade: null, gradeSource: 'sync' });
  t.match((await call('GET', `/admin/accounts/${id}`)).json(), { id, userName: 'Pupil1@School.example', managedBySync: true });

  const refusals: [unknown, number, RegExp][] = [
    [{ role: 'admin' }, 400, /never makes an admin/],
    [{ colour: 'red' }, 400, /Unknown field colour/],
    [{}, 400, /Nothing to change/],
  ];
  for (const [body, status, detail] of refusals) {
    const res = await call('PATCH', `/admin/accounts/${id}/overrides`, body);
    t.equal(res.statusCode, status, JSON.stringify(body));
    t.match(res.json(), { scimType: 'invalidValue', detail });
  }
  const manual = await env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'hand@school.example', scim: '{}' }).returning('id').executeTakeFirstOrThrow();
  const onManual = await call('PATCH', `/admin/accounts/${manual.id}/overrides`, { role: 'teacher' });
  t.equal(onManual.statusCode, 409);
  t.match(onManual.json().detail, /not managed by sync; change its role and grade in the portal directly/);
  t.equal((await call('PATCH', '/admin/accounts/6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11/overrides', { role: 'teacher' })).statusCode, 404);
  const cliRefusal = await cli(env, 'account', 'set', id, '--role', 'admin');
  t.not(cliRefusal.code, 0);
  t.match(cliRefusal.out, /never makes an admin/);
  t.equal((await env.db.selectFrom('accounts').select('role_override').where('id', '=', manual.id).executeTakeFirstOrThrow()).role_override, null, 'nothing written');
});

t.test('merge: the old account takes over, and every later Entra request for the absorbed id reaches it', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  // The portal's account for the pupil, under an address Entra does not know: the first sync made a new one.
  const old = await env.db
    .insertInto('accounts')
    .values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'anna.old@oldschool.example', email: 'anna.old@oldschool.example', given_name: 'Anna', scim: '{}' })
    .returning(['id', 'created_at'])
    .executeTakeFirstOrThrow();
  const handClass = await env.db.insertInto('classes').values({ tenant_id: env.tenant.id, display_name: 'Chess club', scim: '{}' }).returning('id').executeTakeFirstOrThrow();
  await env.db.insertInto('class_memberships').values({ tenant_id: env.tenant.id, class_id: handClass.id, account_id: old.id, manual: true }).execute();

  const created = await scim('POST', '/Users', entraUser(1));
  t.equal(created.statusCode, 201);
  const fresh = created.json().id as string;
  t.not(fresh, old.id, 'the first sync made a new account');
  const klass = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A', externalId: 'c-7a', members: [{ value: fresh }] })).json().id as string;
  const other = (await scim('POST', '/Users', entraUser(2))).json().id as string;

  const merged = await cli(env, 'account', 'merge', '--keep', old.id, '--absorb', fresh);
  t.equal(merged.code, 0, merged.out);
  t.match(merged.out, new RegExp(`Merged ${fresh} into ${old.id}`));
  const kept = await env.db.selectFrom('accounts').selectAll().where('id', '=', old.id).executeTakeFirstOrThrow();
  t.match(kept, { managed_by: 'sync', user_name: 'Pupil1@School.example', external_id: '00000000-0000-4000-8000-000000000001', given_name: 'Pupil', deleted_at: null });
  t.same(kept.created_at, old.created_at, 'the kept account keeps its history');
  t.type((await env.db.selectFrom('accounts').select('deleted_at').where('id', '=', fresh).executeTakeFirstOrThrow()).deleted_at, Date, 'the new account is deleted');
  const memberships = await env.db.selectFrom('class_memberships').select(['class_id', 'account_id', 'synced', 'manual']).where('tenant_id', '=', env.tenant.id).orderBy('class_id').execute();
  t.same(
    memberships.map((m) => [m.class_id === klass ? '7A' : 'Chess club', m.account_id, m.synced, m.manual]).sort(),
    [
      ['7A', old.id, true, false],
      ['Chess club', old.id, false, true],
    ],
    "memberships united on the kept account, each keeping where it came from",
  );
  t.same((await feed(env, old.id)).filter((c) => c.startsWith('merged')), [`merged ${fresh}`], 'the feed names both');
  const mergedRow = await env.db.selectFrom('change_events').selectAll().where('action', '=', 'merged').executeTakeFirstOrThrow();
  t.match(mergedRow, { tenant_id: env.tenant.id, object_type: 'account', object_id: old.id, related_id: fresh });
  const merge = await env.db
    .selectFrom('change_events')
    .select(['object_type', 'object_id', 'related_id', 'action'])
    .where('tenant_id', '=', env.tenant.id)
    .where('position', '>=', mergedRow.position)
    .orderBy('position')
    .execute();
  t.same(
    merge.map((c) => `${c.action} ${c.object_type} ${c.object_id === old.id ? 'kept' : c.object_id === fresh ? 'absorbed' : c.object_id === klass ? '7A' : c.object_id}`),
    ['merged account kept', 'created membership 7A', 'deleted membership 7A', 'deleted account absorbed', 'adopted account kept'],
    'the merged row first: a portal re-points its rows before it reads the deletion',
  );
  const audit = await env.db.selectFrom('audit_events').select(['action', 'object_id', 'details']).where('action', '=', 'merge').executeTakeFirstOrThrow();
  t.match(audit, { object_id: old.id, details: { kept: { id: old.id, userName: 'anna.old@oldschool.example' }, absorbed: { id: fresh, userName: 'Pupil1@School.example' }, via: 'cli' } });

  // Entra goes on with the id it knows.
  const read = await scim('GET', `/Users/${fresh}`);
  t.equal(read.statusCode, 200);
  t.match(read.json(), { id: old.id, userName: 'Pupil1@School.example' });
  const lookup = await scim('GET', `/Users?filter=${encodeURIComponent('userName eq "pupil1@school.example"')}`);
  t.match(lookup.json(), { totalResults: 1, Resources: [{ id: old.id }] }, 'a filter returns the kept account once');
  const byExternal = await scim('GET', `/Users?filter=${encodeURIComponent('externalId eq "00000000-0000-4000-8000-000000000001"')}`);
  t.match(byExternal.json(), { totalResults: 1, Resources: [{ id: old.id }] });

  const patched = await scim('PATCH', `/Users/${fresh}`, patch({ op: 'Replace', path: 'displayName', value: 'Anna Pupil' }));
  t.equal(patched.statusCode, 200, patched.body);
  t.equal(patched.json().id, old.id);
  t.equal((await env.db.selectFrom('accounts').select('display_name').where('id', '=', old.id).executeTakeFirstOrThrow()).display_name, 'Anna Pupil');
  const put = await scim('PUT', `/Users/${fresh}`, { ...entraUser(1), title: 'Pupil' });
  t.equal(put.statusCode, 200, put.body);
  t.equal((await env.db.selectFrom('accounts').select('scim').where('id', '=', old.id).executeTakeFirstOrThrow()).scim.title, 'Pupil');

  // Member values with the absorbed id reach the kept account too.
  const klass2 = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7B', externalId: 'c-7b' })).json().id as string;
  t.equal((await scim('PATCH', `/Groups/${klass2}`, patch({ op: 'Add', path: 'members', value: [{ value: fresh }, { value: other }] }))).statusCode, 204);
  const in7b = await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', klass2).orderBy('account_id').execute();
  t.same(in7b.map((m) => m.account_id).sort(), [old.id, other].sort());
  t.equal((await scim('PATCH', `/Groups/${klass}`, patch({ op: 'Remove', path: 'members', value: [{ value: fresh }] }))).statusCode, 204);
  t.same(await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', klass).execute(), [], 'a removal by the absorbed id removes the kept account');
  const members = (await scim('GET', `/Groups/${klass2}`)).json().members as { value: string }[];
  t.same(members.map((m) => m.value).sort(), [old.id, other].sort());
  t.equal((await scim('PUT', `/Groups/${klass2}`, { schemas: [GROUP], displayName: '7B', externalId: 'c-7b', members: [{ value: fresh }] })).statusCode, 200);
  t.same((await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', klass2).execute()).map((m) => m.account_id), [old.id]);

  t.equal((await scim('DELETE', `/Users/${fresh}`)).statusCode, 204, 'a delete by the absorbed id deletes the kept account');
  t.type((await env.db.selectFrom('accounts').select('deleted_at').where('id', '=', old.id).executeTakeFirstOrThrow()).deleted_at, Date);
  t.equal((await scim('GET', `/Users/${fresh}`)).statusCode, 404);
});

t.test("a merge keeps the overrides set on either account, the kept account's own first (rule 11)", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const manual = async (name: string) =>
    (await env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: name, scim: '{}' }).returning('id').executeTakeFirstOrThrow()).id;
  const [oldAnna, oldBo] = [await manual('anna.old@oldschool.example'), await manual('bo.old@oldschool.example')];
  const [anna, bo] = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  // The portal set overrides on the accounts the first sync made, before anyone saw the duplicates.
  t.equal((await cli(env, 'account', 'set', anna, '--role', 'teacher', '--grade', '9')).code, 0);
  t.equal((await cli(env, 'account', 'set', bo, '--grade', '9')).code, 0);
  t.equal((await cli(env, 'account', 'merge', '--keep', oldAnna, '--absorb', anna)).code, 0);
  t.match(await portalView(env, oldAnna), { role: 'teacher', grade: '9', role_source: 'override', grade_source: 'override' }, "the absorbed account's overrides carry over");

  // An override of the kept account's own wins over the absorbed one's.
  t.equal((await cli(env, 'account', 'merge', '--keep', oldBo, '--absorb', bo)).code, 0);
  t.equal((await cli(env, 'account', 'set', oldBo, '--grade', '8')).code, 0);
  const bo2 = (await scim('POST', '/Users', entraUser(3))).json().id as string;
  t.equal((await cli(env, 'account', 'set', bo2, '--role', 'staff', '--grade', '7')).code, 0);
  await env.db.updateTable('accounts').set({ managed_by: 'manual', external_id: null }).where('id', '=', oldBo).execute();
  t.equal((await cli(env, 'account', 'merge', '--keep', oldBo, '--absorb', bo2)).code, 0);
  t.match(await portalView(env, oldBo), { role: 'staff', grade: '8' }, 'its own grade; the role only the absorbed one had');
});

t.test('a merge is refused for admins, two tenants, a manual account to absorb, or a kept account linked elsewhere', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const call = await admin(env);
  const synced = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const synced2 = (await scim('POST', '/Users', entraUser(2))).json().id as string;
  const manual = (await env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'm@school.example', scim: '{}' }).returning('id').executeTakeFirstOrThrow()).id;
  const adminAccount = (await env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', role: 'admin', user_name: 'boss@school.example', scim: '{}' }).returning('id').executeTakeFirstOrThrow()).id;
  // An old portal account that rule 2 adopted, and one the sync took over by object id after a disconnect (rule 8).
  const old = (await env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'old@school.example', scim: '{}' }).returning('id').executeTakeFirstOrThrow()).id;
  const adopted = await scim('POST', '/Users', entraUser(3, { userName: 'old@school.example' }));
  t.equal(adopted.json().id, old, 'rule 2 adopted the old account');
  const reconnected = (await env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'back@school.example', external_id: 'entra-back', scim: '{}' }).returning('id').executeTakeFirstOrThrow()).id;
  t.equal((await scim('POST', '/Users', entraUser(4, { userName: 'back.again@school.example', externalId: 'entra-back' }))).json().id, reconnected, 'rule 8 took the account back by object id');
  const other = await createTenant(env.db, { name: 'Other', verifiedDomains: ['other.example'] });
  const foreign = (await env.db.insertInto('accounts').values({ tenant_id: other.id, managed_by: 'manual', user_name: 'f@other.example', scim: '{}' }).returning('id').executeTakeFirstOrThrow()).id;

  const cases: [string, string, RegExp][] = [
    [adminAccount, synced, /portal admin/],
    [foreign, synced, /different tenants/],
    [synced, manual, /not managed by sync: there is no Entra account to take over/],
    [synced, synced2, /linked to another Entra object/],
    [manual, old, /was the portal's before the sync took it over \(rules 2 and 8\): it has history of its own/],
    [manual, reconnected, /was the portal's before the sync took it over/],
  ];
  for (const [keep, absorb, detail] of cases) {
    const res = await call('POST', '/admin/accounts/merge', { keep, absorb });
    t.equal(res.statusCode, 409, res.body);
    t.match(res.json(), { status: '409', detail });
    const viaCli = await cli(env, 'account', 'merge', '--keep', keep, '--absorb', absorb);
    t.equal(viaCli.code, 1);
    t.match(viaCli.out, detail);
  }
  t.equal((await call('POST', '/admin/accounts/merge', { keep: synced, absorb: synced })).statusCode, 400);
  t.equal((await call('POST', '/admin/accounts/merge', { keep: manual, absorb: '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11' })).statusCode, 404);
  t.same(await env.db.selectFrom('account_aliases').selectAll().execute(), [], 'no refused merge wrote anything');
  t.equal((await env.db.selectFrom('accounts').select('id').where('deleted_at', 'is not', null).execute()).length, 0);

  // The sync's create says so on the row. Of a row that does not (from before migration 0019, or made by an
  // instance of the previous release during a rolling deploy) the audit log's create event does.
  const origin = async (id: string) => (await env.db.selectFrom('accounts').select('created_by_sync').where('id', '=', id).executeTakeFirstOrThrow()).created_by_sync;
  t.same([await origin(synced), await origin(old), await origin(reconnected)], [true, null, null]);
  await sql`UPDATE accounts SET created_by_sync = NULL WHERE id = ${synced}::uuid`.execute(env.db);

  // Through the API, the same merge as the CLI, audited with the admin credential.
  const ok = await call('POST', '/admin/accounts/merge', { keep: manual, absorb: synced });
  t.equal(ok.statusCode, 200, ok.body);
  t.match(ok.json(), { kept: { id: manual, managedBySync: true, userName: 'Pupil1@School.example' }, absorbedId: synced });
  t.match(await env.db.selectFrom('audit_events').select('details').where('action', '=', 'merge').executeTakeFirstOrThrow(), { details: { via: 'admin-api' } });
  t.equal(ok.json().alreadyMerged, false);

  // The same merge again is no error and writes nothing, through the API and the CLI; another pair still is.
  const auditRows = async () => Number((await env.db.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n);
  const before = await auditRows();
  const again = await call('POST', '/admin/accounts/merge', { keep: manual, absorb: synced });
  t.equal(again.statusCode, 200, again.body);
  t.match(again.json(), { kept: { id: manual, managedBySync: true }, absorbedId: synced, alreadyMerged: true });
  const viaCli = await cli(env, 'account', 'merge', '--keep', manual, '--absorb', synced);
  t.equal(viaCli.code, 0, viaCli.out);
  t.match(viaCli.out, `${synced} was already merged into ${manual}; nothing changed.`);
  t.equal(await auditRows(), before, 'no audit event for a merge already done');
  t.same(
    await env.db.selectFrom('account_aliases').select(['alias_id', 'account_id']).execute(),
    [{ alias_id: synced, account_id: manual }],
    'one alias, as after the first merge',
  );
  const elsewhere = await call('POST', '/admin/accounts/merge', { keep: old, absorb: synced });
  t.equal(elsewhere.statusCode, 404, 'the absorbed id merged into another account is still no account to merge');
});

t.test('merge --dry-run (and dryRun in the API) shows what a merge would leave and changes nothing; a pair that looks like two people is named', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const call = await admin(env);
  // A teacher's old account, and a pupil Entra created: a wrong pair, one id pasted for another.
  const lena = (
    await env.db
      .insertInto('accounts')
      .values({ tenant_id: env.tenant.id, managed_by: 'manual', role: 'teacher', user_name: 'lena@old.example', email: 'lena@old.example', display_name: 'Lena Lärare', scim: '{}' })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
  // And the right pair: the pupil's old account, under an old address with the same name.
  const oldPupil = (
    await env.db
      .insertInto('accounts')
      .values({ tenant_id: env.tenant.id, managed_by: 'manual', role: 'student', user_name: 'p1@old.example', display_name: 'Pupil 1', scim: '{}' })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
  const pupil = (await scim('POST', '/Users', entraUser(1))).json<{ id: string }>().id;

  // Finding the two ids: by address, in any case, or by the Entra object id.
  const byAddress = await cli(env, 'account', 'find', '--tenant', env.tenant.id, 'PUPIL1@school.example');
  t.equal(byAddress.code, 0, byAddress.out);
  t.match(byAddress.out, new RegExp(`${pupil}\\s+Pupil1@School\\.example\\s+pupil1@school\\.example\\s+Pupil 1\\s+student\\s+yes\\s+sync`));
  const byObject = await cli(env, 'account', 'find', '--tenant', env.tenant.id, '00000000-0000-4000-8000-000000000001', '--json');
  t.match(JSON.parse(byObject.out), [{ id: pupil, createdBySync: true, externalId: '00000000-0000-4000-8000-000000000001' }]);
  const found = await call('GET', `/admin/tenants/${env.tenant.id}/accounts?find=${encodeURIComponent('p1@old.example')}`);
  t.equal(found.statusCode, 200, found.body);
  t.match(found.json(), { accounts: [{ id: oldPupil, managedBySync: false, createdBySync: false, displayName: 'Pupil 1' }] });
  t.same((await call('GET', `/admin/tenants/${env.tenant.id}/accounts?find=nobody@school.example`)).json(), { accounts: [] });
  t.equal((await call('GET', `/admin/tenants/${env.tenant.id}/accounts`)).statusCode, 400, 'find is needed');
  t.equal((await call('GET', `/admin/tenants/${env.tenant.id}/accounts?find=%20`)).statusCode, 400, 'and not empty');
  const none = await cli(env, 'account', 'find', '--tenant', env.tenant.id, 'nobody@school.example');
  t.equal(none.code, 0);
  t.match(none.out, /No account of tenant .* has the userName, e-mail or Entra object id nobody@school\.example\./);

  const state = async () => ({
    accounts: await env.db.selectFrom('accounts').selectAll().orderBy('id').execute(),
    aliases: await env.db.selectFrom('account_aliases').selectAll().execute(),
    audit: await env.db.selectFrom('audit_events').select('id').execute(),
    feed: await env.db.selectFrom('change_events').select('position').execute(),
  });
  const before = await state();

  const wrong = await cli(env, 'account', 'merge', '--keep', lena, '--absorb', pupil, '--dry-run');
  t.equal(wrong.code, 0, wrong.out);
  t.match(wrong.out, `Would merge ${pupil} into ${lena}; nothing was changed.`);
  t.match(wrong.out, new RegExp(`Absorbed:?\\s+Pupil1@School\\.example "Pupil 1" \\(${pupil}\\)`), 'and the account it would absorb');
  t.match(wrong.out, /Account:?\s+Pupil1@School\.example/, 'the kept account as the merge would leave it');
  t.match(wrong.out, `Caution: The two accounts share no name and no address: lena@old.example "Lena Lärare" and Pupil1@School.example "Pupil 1". Check that they are one person.`);
  t.match(wrong.out, `Caution: Account ${lena} is a teacher and ${pupil} a student: the kept account takes Entra's role, student.`);
  const viaApi = await call('POST', '/admin/accounts/merge', { keep: lena, absorb: pupil, dryRun: true });
  t.equal(viaApi.statusCode, 200, viaApi.body);
  t.match(viaApi.json(), {
    dryRun: true,
    alreadyMerged: false,
    kept: { id: lena, userName: 'Pupil1@School.example', role: 'student' },
    absorbed: { id: pupil, userName: 'Pupil1@School.example' },
    cautions: [/share no name and no address/, /is a teacher and/],
  });
  t.same(await state(), before, 'nothing was written: accounts, aliases, audit events, the feed');

  const right = await cli(env, 'account', 'merge', '--keep', oldPupil, '--absorb', pupil, '--dry-run', '--json');
  t.equal(right.code, 0, right.out);
  t.match(JSON.parse(right.out), { dryRun: true, cautions: [], kept: { id: oldPupil } }, 'the same name: no caution');
  t.same(await state(), before);

  t.equal((await call('POST', '/admin/accounts/merge', { keep: oldPupil, absorb: pupil, dryRun: 'yes' })).statusCode, 400, 'dryRun is true or false');
  const done = await cli(env, 'account', 'merge', '--keep', oldPupil, '--absorb', pupil);
  t.equal(done.code, 0, done.out);
  t.match(done.out, `Merged ${pupil} into ${oldPupil}`);
  t.notMatch(done.out, /Caution/);
  t.equal((await env.db.selectFrom('account_aliases').select('account_id').where('alias_id', '=', pupil).executeTakeFirstOrThrow()).account_id, oldPupil, 'then made for real');
});
