// Rules 2, 3 and 8 at the HTTP boundary: adoption of manual accounts by
// e-mail or userName (verified domains only), admin accounts never touched,
// deleted or linked accounts never adopted, disconnect and reconnect.
import t from 'tap';
import { tenantWithToken, testApp, type TestApp } from './helpers/app.js';
import { cli } from './helpers/cli.js';
import { manualAccountSql } from './helpers/contract-sql.js';
import { connection } from './helpers/locks.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

async function manualAccount(env: TestApp, values: { user_name: string; email?: string; role?: 'student' | 'teacher' | 'admin'; external_id?: string; deleted?: boolean }) {
  return env.db
    .insertInto('accounts')
    .values({
      tenant_id: env.tenant.id,
      managed_by: 'manual',
      user_name: values.user_name,
      email: values.email ?? null,
      role: values.role ?? 'teacher',
      external_id: values.external_id ?? null,
      given_name: 'Old',
      scim: '{}',
      ...(values.deleted ? { deleted_at: new Date() } : {}),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

t.test("the contract's statement for a manual account makes one Entra adopts, or, for an admin, refuses to touch", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const portal = await connection(t, env);
  const insert = manualAccountSql();
  const teacher = (await portal.query<{ id: string }>(insert, [env.tenant.id, 'teacher', 'lena@school.example', 'pupil1@school.example'])).rows[0]?.id;
  await portal.query(insert, [env.tenant.id, 'admin', 'it.admin', 'pupil2@school.example']);
  const adopted = await scim('POST', '/Users', entraUser(1));
  t.equal(adopted.statusCode, 201);
  t.equal(adopted.json().id, teacher, 'Entra adopts the manual account by its e-mail');
  const refused = await scim('POST', '/Users', entraUser(2));
  t.equal(refused.statusCode, 409, 'and never an admin');
});

// Entra creates a user again when it lost track of it (provisioning
// restarted, the user renamed while out of scope): its lookup by the new
// userName finds nothing. The object id is the person's: the create takes
// over the synced account that has it, which keeps its id, classes and history.
for (const writeStrategy of ['quick', 'locked'] as const) {
  t.test(`a create with the object id of a synced account takes that account over, never a second one (${writeStrategy} path)`, async (t) => {
    const env = await testApp(t, {}, { writeStrategy });
    const scim = client(env.app, env.headers);
    const first = await scim('POST', '/Users', entraUser(1));
    t.equal(first.statusCode, 201);
    const id = first.json().id as string;
    const klass = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A', members: [{ value: id }] })).json().id as string;

    const again = await scim('POST', '/Users', entraUser(1, { userName: 'Anna.Renamed@School.example', displayName: 'Anna Renamed' }));
    t.equal(again.statusCode, 201, again.body);
    t.match(again.json(), { id, userName: 'Anna.Renamed@School.example', externalId: '00000000-0000-4000-8000-000000000001' }, 'the same account, as Entra sent it now');
    const rows = await env.db.selectFrom('accounts').select(['id', 'user_name', 'managed_by', 'version']).where('external_id', '=', '00000000-0000-4000-8000-000000000001').execute();
    t.same(rows, [{ id, user_name: 'Anna.Renamed@School.example', managed_by: 'sync', version: 2 }], 'one account with the object id');
    t.same(await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', klass).execute(), [{ account_id: id }], 'its class kept');
    const audit = await env.db.selectFrom('audit_events').select(['action', 'object_id', 'details']).where('action', '=', 'adopt').executeTakeFirstOrThrow();
    t.match(audit, { object_id: id, details: { matchedBy: 'externalId', portalAccount: { id, userName: 'Pupil1@School.example' } } });
    const feed = await env.db.selectFrom('change_events').select(['action', 'changed']).where('object_id', '=', id).orderBy('position').execute();
    t.same(feed.map((c) => c.action), ['created', 'updated'], 'the portal reads an update of the account it has');
    const lookup = await scim('GET', `/Users?filter=${encodeURIComponent('userName eq "anna.renamed@school.example"')}`);
    t.match(lookup.json(), { totalResults: 1, Resources: [{ id }] });

    // A tenant that matches users on e-mail creates a user again, userName and all, after its mail changed.
    const again2 = await scim('POST', '/Users', entraUser(1, { userName: 'Anna.Renamed@School.example', emails: [{ type: 'work', value: 'anna.new@school.example', primary: true }] }));
    t.equal(again2.statusCode, 201, again2.body);
    t.equal(again2.json().id, id, 'the same account again');
    t.equal((await env.db.selectFrom('accounts').select('id').where('external_id', '=', '00000000-0000-4000-8000-000000000001').execute()).length, 1);

    // The same create once more, as it is now: nothing changes, so nothing is written.
    const counts = async () => ({
      version: (await env.db.selectFrom('accounts').select('version').where('id', '=', id).executeTakeFirstOrThrow()).version,
      feed: (await env.db.selectFrom('change_events').select('position').where('object_id', '=', id).execute()).length,
      audit: (await env.db.selectFrom('audit_events').select('id').where('object_id', '=', id).execute()).length,
    });
    const before = await counts();
    const same = await scim('POST', '/Users', entraUser(1, { userName: 'Anna.Renamed@School.example', emails: [{ type: 'work', value: 'anna.new@school.example', primary: true }] }));
    t.equal(same.statusCode, 201, same.body);
    t.equal(same.json().id, id);
    t.equal(same.json().meta.version, again2.json().meta.version, 'the same version answered');
    t.same(await counts(), before, 'no new version, feed row or audit event');
  });
}

t.test('of two manual accounts made at once with the same e-mail, the one with the lower id is adopted, as the preview says', async (t) => {
  const env = await testApp(t);
  const at = new Date('2024-08-01T08:00:00Z');
  const ids = ['ffffffff-0000-4000-8000-000000000001', '00000000-0000-4000-8000-0000000000aa'];
  for (const id of ids) {
    await env.db
      .insertInto('accounts')
      .values({ tenant_id: env.tenant.id, id, managed_by: 'manual', user_name: `old-${id}@old.example`, email: 'pupil1@school.example', created_at: at, scim: '{}' })
      .execute();
  }
  const created = await client(env.app, env.headers)('POST', '/Users', entraUser(1));
  t.equal(created.statusCode, 201);
  t.equal(created.json().id, ids[1]);
});

t.test('an address is in a verified domain in any case of ASCII letters only: a Kelvin sign is no K', async (t) => {
  const env = await testApp(t);
  const kommun = await tenantWithToken(env.db, env.config, env.keys, 'Kommun', ['kommun.example']);
  const scim = client(env.app, kommun.headers);
  const manualIn = (address: string) =>
    env.db
      .insertInto('accounts')
      .values({ tenant_id: kommun.tenant.id, managed_by: 'manual', user_name: address, email: address, scim: '{}' })
      .returning('id')
      .executeTakeFirstOrThrow();
  const bo = await manualIn('bo@kommun.example');
  const kelvin = await scim('POST', '/Users', entraUser(1, { userName: 'bo@\u212Aommun.example', emails: [{ type: 'work', value: 'bo@\u212Aommun.example', primary: true }] }));
  t.equal(kelvin.statusCode, 201);
  t.not(kelvin.json().id, bo.id, 'not adopted: the domain is not the verified one');
  const eva = await manualIn('eva@kommun.example');
  const ascii = await scim('POST', '/Users', entraUser(2, { userName: 'Eva@KOMMUN.example', emails: [{ type: 'work', value: 'Eva@KOMMUN.example', primary: true }] }));
  t.equal(ascii.json().id, eva.id, 'an address in ASCII capitals is adopted');
});

t.test('a manual account with the same e-mail in a verified domain is adopted', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const old = await manualAccount(env, { user_name: 'lena.teacher', email: 'Pupil1@School.example' });
  const klass = await env.db.insertInto('classes').values({ tenant_id: env.tenant.id, display_name: 'Hand class', scim: '{}' }).returning('id').executeTakeFirstOrThrow();
  await env.db.insertInto('class_memberships').values({ tenant_id: env.tenant.id, class_id: klass.id, account_id: old.id, manual: true }).execute();

  const res = await scim('POST', '/Users', entraUser(1));
  t.equal(res.statusCode, 201, res.body);
  t.equal(res.json().id, old.id, 'the portal account keeps its id');
  const row = await env.db.selectFrom('accounts').selectAll().where('id', '=', old.id).executeTakeFirstOrThrow();
  t.match(row, { managed_by: 'sync', user_name: 'Pupil1@School.example', given_name: 'Pupil', external_id: '00000000-0000-4000-8000-000000000001', role: 'student' });
  t.equal((await env.db.selectFrom('accounts').select('id').where('tenant_id', '=', env.tenant.id).execute()).length, 1, 'no second account');
  t.equal((await env.db.selectFrom('class_memberships').select('account_id').where('account_id', '=', old.id).execute()).length, 1, 'what referenced the account stays');
  const audit = await env.db.selectFrom('audit_events').selectAll().where('action', '=', 'adopt').executeTakeFirstOrThrow();
  t.match(audit, {
    tenant_id: env.tenant.id,
    object_id: old.id,
    credential_id: env.credentialId,
    outcome: 'success',
    details: { matchedBy: 'address', portalAccount: { id: old.id, userName: 'lena.teacher' }, entraObject: { externalId: '00000000-0000-4000-8000-000000000001' } },
  });
  t.match(audit.request_id, /\S/, 'the audit event names the request');
});

t.test('adoption by userName, and never outside the rules', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const byName = await manualAccount(env, { user_name: 'pupil2@school.example' });
  t.equal((await scim('POST', '/Users', entraUser(2))).json().id, byName.id, 'userName match in any case adopts');

  const deleted = await manualAccount(env, { user_name: 'gone', email: 'pupil3@school.example', deleted: true });
  const fresh = await scim('POST', '/Users', entraUser(3));
  t.not(fresh.json().id, deleted.id, 'a deleted account with a reused e-mail is never adopted');
  t.match(await env.db.selectFrom('accounts').selectAll().where('id', '=', deleted.id).executeTakeFirstOrThrow(), { managed_by: 'manual', user_name: 'gone' });

  const outside = await manualAccount(env, { user_name: 'pupil4@elsewhere.example' });
  const other = await scim('POST', '/Users', entraUser(4, { userName: 'pupil4@elsewhere.example', emails: [{ type: 'work', value: 'pupil4@elsewhere.example' }] }));
  t.equal(other.statusCode, 201);
  t.not(other.json().id, outside.id, 'an address outside the verified domains gives a new account');
  t.match(await env.db.selectFrom('accounts').selectAll().where('id', '=', outside.id).executeTakeFirstOrThrow(), { managed_by: 'manual' }, 'the manual one is untouched');

  const linked = await manualAccount(env, { user_name: 'pupil5@school.example', external_id: 'another-entra-object' });
  const fifth = await scim('POST', '/Users', entraUser(5));
  t.not(fifth.json().id, linked.id, 'an account linked to another Entra object is not adopted');
});

t.test('an admin collision is refused with 409, leaves the admin alone, and is visible at once', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const admin = await manualAccount(env, { user_name: 'principal', email: 'pupil6@school.example', role: 'admin' });
  const res = await scim('POST', '/Users', entraUser(6));
  t.equal(res.statusCode, 409);
  t.match(res.json(), { status: '409', scimType: 'uniqueness', detail: /^The userName or e-mail "Pupil6@School.example" belongs to a portal admin account/ });
  t.same(await env.db.selectFrom('accounts').selectAll().where('id', '=', admin.id).executeTakeFirstOrThrow(), admin, 'the admin row is unchanged');
  t.equal((await env.db.selectFrom('accounts').select('id').where('tenant_id', '=', env.tenant.id).execute()).length, 1, 'nothing was created');
  const conflict = await env.db.selectFrom('sync_conflicts').selectAll().executeTakeFirstOrThrow();
  t.match(conflict, { tenant_id: env.tenant.id, kind: 'admin-collision', account_id: admin.id, object_ref: 'Pupil6@School.example', resolved_at: null });

  // A change of a synced user onto an admin's address is refused the same way.
  const id = (await scim('POST', '/Users', entraUser(7))).json().id as string;
  const update = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'userName', value: 'PRINCIPAL' }));
  t.equal(update.statusCode, 409);
  t.equal((await env.db.selectFrom('accounts').select('user_name').where('id', '=', id).executeTakeFirstOrThrow()).user_name, 'Pupil7@School.example');
  t.equal((await env.db.selectFrom('sync_conflicts').select('id').execute()).length, 2);

  // The admin holds the e-mail only: the answer names the e-mail, the conflict the user.
  const byEmail = await scim('POST', '/Users', entraUser(8, { emails: [{ type: 'work', value: 'PUPIL6@school.example', primary: true }] }));
  t.equal(byEmail.statusCode, 409);
  t.match(byEmail.json(), { detail: /^The userName or e-mail "PUPIL6@school.example" belongs to a portal admin account/ });
  t.match(await env.db.selectFrom('sync_conflicts').selectAll().where('object_ref', '=', 'Pupil8@School.example').executeTakeFirstOrThrow(), { account_id: admin.id });
  await env.db.deleteFrom('sync_conflicts').where('object_ref', '=', 'Pupil8@School.example').execute();

  const status = await cli(env, 'status', '--tenant', env.tenant.id, '--json');
  t.equal(status.code, 0, status.out);
  const parsed = JSON.parse(status.out);
  t.match(parsed, { openConflicts24h: 2, openConflicts: 2, classes: 0, accounts: [{ role: 'student', active: true, count: 1 }] });
  t.equal(parsed.conflicts[0].kind, 'admin-collision');
  const text = await cli(env, 'status', '--tenant', env.tenant.id);
  t.match(text.out, /Open conflicts \(24 h\): +2/);
  t.match(text.out, /admin-collision/);
});

t.test('roles: app roles, then the school extension, then userType, through the tenant mapping', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const role = async (id: string) => (await env.db.selectFrom('accounts').select('role').where('id', '=', id).executeTakeFirstOrThrow()).role;
  const PORTAL = 'urn:ietf:params:scim:schemas:extension:portal:2.0:User';
  const cases: [Record<string, unknown>, string][] = [
    [{ roles: [{ primary: 'True', value: 'Teacher', type: 'WindowsAzureActiveDirectoryRole' }], [PORTAL]: { role: 'Student' }, userType: 'Student' }, 'teacher'],
    [{ [PORTAL]: { role: 'Teacher' }, userType: 'Student' }, 'teacher'],
    [{ userType: 'faculty' }, 'teacher'],
    [{ userType: 'Guest' }, 'student'],
    [{ roles: [{ value: 'Admin' }] }, 'student'],
    [{ [PORTAL]: { role: 'Janitor' } }, 'student'],
  ];
  let n = 10;
  for (const [extra, expected] of cases) {
    const res = await scim('POST', '/Users', entraUser(n++, extra));
    t.equal(await role(res.json().id as string), expected, JSON.stringify(extra));
  }
  const set = await cli(env, 'tenant', 'set', env.tenant.id, '--role-map', 'Janitor=staff', '--role-map', 'Guest=teacher');
  t.equal(set.code, 0, set.out);
  const refused = await cli(env, 'tenant', 'set', env.tenant.id, '--role-map', 'Boss=admin');
  t.equal(refused.code, 1, 'the mapping can never grant admin');
  t.match(refused.out, /sync never grants admin/);
  // A new credential lookup reads the new mapping (the test cache is off).
  const staff = await scim('POST', '/Users', entraUser(n++, { [PORTAL]: { role: 'janitor' } }));
  t.equal(await role(staff.json().id as string), 'staff');
  const id = (await scim('POST', '/Users', entraUser(n))).json().id as string;
  await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'userType', value: 'Guest' }));
  t.equal(await role(id), 'teacher', 'a change of role is applied');
});

t.test('deactivation keeps everything and reactivation restores it exactly', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '4B', members: [{ value: id }] })).json().id as string;
  const before = await env.db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'False' }));
  const off = await env.db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  t.match(off, { active: false, deleted_at: null });
  t.equal((await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', group).execute()).length, 1, 'memberships stay');
  await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'True' }));
  const after = await env.db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const { version: _v1, updated_at: _u1, ...a } = before;
  const { version: _v2, updated_at: _u2, ...b } = after;
  t.same(b, a, 'the account is exactly as before');
  const actions = (await env.db.selectFrom('audit_events').select(['action', 'details']).where('object_id', '=', id).orderBy('id').execute()).map((e) => e.action);
  t.same(actions, ['create', 'deactivate', 'reactivate']);
});

t.test('deleted accounts are purged after the retention period', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const keep = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const drop = (await scim('POST', '/Users', entraUser(2))).json().id as string;
  await scim('DELETE', `/Users/${drop}`);
  t.equal((await cli(env, 'purge')).out, 'Purged 0 deleted accounts.', 'within the retention period nothing goes');
  t.equal((await cli(env, 'tenant', 'set', env.tenant.id, '--retention-days', '0')).code, 0);
  t.equal((await cli(env, 'purge', '--tenant', env.tenant.id)).out, 'Purged 1 deleted account.');
  t.same((await env.db.selectFrom('accounts').select('id').where('tenant_id', '=', env.tenant.id).execute()).map((r) => r.id), [keep]);
  const purge = await env.db.selectFrom('audit_events').selectAll().where('action', '=', 'purge').executeTakeFirstOrThrow();
  t.same(purge.details, { accounts: 1 });
  for (const bad of [['--retention-days', '-1'], ['--retention-days', '9999'], ['--domain', 'no domain']]) {
    t.equal((await cli(env, 'tenant', 'set', env.tenant.id, ...bad)).code, 1, bad.join(' '));
  }
});

t.test('disconnect turns synced data manual and revokes; connect lets Entra adopt it again', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const user = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a', members: [{ value: user }] })).json().id as string;
  const left = (await scim('POST', '/Users', entraUser(2))).json().id as string;
  t.equal((await scim('DELETE', `/Users/${left}`)).statusCode, 204);

  const out = await cli(env, 'tenant', 'disconnect', env.tenant.id);
  t.equal(out.code, 0, out.out);
  t.match(out.out, /1 account and 1 class are now manual/, 'the deleted account is not counted');
  t.match(await env.db.selectFrom('accounts').selectAll().where('id', '=', left).executeTakeFirstOrThrow(), { managed_by: 'sync' }, 'and stays as it was deleted');
  const feed = await env.db.selectFrom('change_events').select(['object_id', 'action']).where('tenant_id', '=', env.tenant.id).where('action', '=', 'disconnected').execute();
  t.same(feed.map((c) => c.object_id).sort(), [user, group].sort(), 'the feed has the live account and the class, not the deleted account');
  t.equal((await scim('GET', '/Users')).statusCode, 401, 'the credential is revoked');
  t.match(await env.db.selectFrom('accounts').selectAll().where('id', '=', user).executeTakeFirstOrThrow(), { managed_by: 'manual', deleted_at: null });
  t.match(await env.db.selectFrom('classes').selectAll().where('id', '=', group).executeTakeFirstOrThrow(), { managed_by: 'manual' });
  t.match(await env.db.selectFrom('class_memberships').selectAll().where('class_id', '=', group).executeTakeFirstOrThrow(), { manual: true });
  t.equal((await cli(env, 'token', 'issue', '--tenant', env.tenant.id)).code, 1, 'no token for a disconnected tenant');

  t.equal((await cli(env, 'tenant', 'connect', env.tenant.id)).code, 0);
  const issued = await cli(env, 'token', 'issue', '--tenant', env.tenant.id, '--json');
  const again = client(env.app, { authorization: `Bearer ${JSON.parse(issued.out).token as string}`, 'content-type': 'application/scim+json' });
  const readopted = await again('POST', '/Users', entraUser(1, { emails: [{ type: 'work', value: 'changed@unverified.example' }] }));
  t.equal(readopted.json().id, user, 'the account is adopted again by Entra object id');
  const regroup = await again('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a' });
  t.equal(regroup.statusCode, 201);
  t.equal(regroup.json().id, group, 'the class is adopted again by external id');
  t.same(regroup.json().members, [], 'its hand-kept members are not shown as synced');
  const actions = (await env.db.selectFrom('audit_events').select('action').orderBy('id').execute()).map((r) => r.action);
  t.same(actions.filter((a) => ['disconnect', 'connect', 'adopt'].includes(a)), ['disconnect', 'connect', 'adopt', 'adopt']);
});

t.test('the audit log names changed attributes, never their values; failures are counted', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', value: { 'name.givenName': 'Secretvalue', title: 'Pupil' } }));
  const update = await env.db.selectFrom('audit_events').selectAll().where('action', '=', 'update').executeTakeFirstOrThrow();
  t.same(update.details, { changed: ['name', 'title'] });
  t.match(update, { object_ref: 'Pupil1@School.example', credential_id: env.credentialId });
  const all = JSON.stringify(await env.db.selectFrom('audit_events').selectAll().execute());
  t.notMatch(all, /Secretvalue/, 'no attribute values in the audit log');
  t.notMatch(all, new RegExp(env.token), 'no token in the audit log');

  await scim('POST', '/Users', { schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName: 5 });
  await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'nosuch', value: 1 }));
  const failures = await env.db.selectFrom('audit_events').selectAll().where('outcome', '=', 'failure').orderBy('id').execute();
  t.match(failures, [
    { action: 'create', object_type: 'user', details: { status: 400 } },
    { action: 'update', object_type: 'user', object_id: id, details: { status: 400 } },
  ]);
  const status = JSON.parse((await cli(env, 'status', '--tenant', env.tenant.id, '--json')).out);
  t.equal(status.failures24h, 2);
  t.type(status.lastRequestAt, 'string', 'the last request time is recorded');
});
