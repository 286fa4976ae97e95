// Entra's request sequences for users, in both PATCH dialects, with the rows
// they must leave in PostgreSQL.
import t from 'tap';
import { testApp } from './helpers/app.js';
import { ENTERPRISE, PORTAL, USER, client, entraUser, patch } from './helpers/scim.js';

t.test('test connection: a filter on a random userName finds nothing', async (t) => {
  const { app, headers } = await testApp(t);
  const res = await client(app, headers)('GET', `/Users?filter=${encodeURIComponent('userName eq "0b0c5a6c-3d3c-4f5a-9d9e-2a1b3c4d5e6f"')}`);
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /application\/scim\+json/);
  t.same(res.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:ListResponse'], totalResults: 0, startIndex: 1, itemsPerPage: 0, Resources: [] });
});

t.test('create, query before create, duplicate, disable, delete', async (t) => {
  const { app, headers, db, tenant } = await testApp(t);
  const scim = client(app, headers);
  const body = entraUser(1, { roles: [{ primary: 'True', type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' }] });

  const created = await scim('POST', '/Users', body);
  t.equal(created.statusCode, 201);
  const user = created.json();
  t.match(user, {
    schemas: [USER, ENTERPRISE],
    userName: 'Pupil1@School.example',
    externalId: '00000000-0000-4000-8000-000000000001',
    active: true,
    name: { givenName: 'Pupil', familyName: 'Number 1' },
    emails: [{ primary: true, type: 'work', value: 'pupil1@school.example' }],
    roles: [{ primary: true, value: 'Teacher' }],
    [ENTERPRISE]: { employeeNumber: '1001', department: 'Norra skolan' },
    meta: { resourceType: 'User', location: `https://scim.example.test/scim/v2/Users/${user.id}`, version: 'W/"1"' },
  });
  t.match(user.id, /^[0-9a-f-]{36}$/);
  t.ok(Date.parse(user.meta.created) && Date.parse(user.meta.lastModified));
  t.equal(created.headers.location, user.meta.location);
  t.equal(created.headers.etag, 'W/"1"');

  const row = await db.selectFrom('accounts').selectAll().where('id', '=', user.id).executeTakeFirstOrThrow();
  t.match(row, {
    tenant_id: tenant.id,
    managed_by: 'sync',
    role: 'teacher',
    user_name: 'Pupil1@School.example',
    email: 'pupil1@school.example',
    given_name: 'Pupil',
    family_name: 'Number 1',
    display_name: 'Pupil 1',
    external_id: '00000000-0000-4000-8000-000000000001',
    active: true,
    deleted_at: null,
  });

  for (const filter of [
    'userName eq "pupil1@school.example"',
    'externalId eq "00000000-0000-4000-8000-000000000001"',
    'emails[type eq "work"].value eq "PUPIL1@school.example"',
  ]) {
    const found = await scim('GET', `/Users?filter=${encodeURIComponent(filter)}`);
    t.equal(found.statusCode, 200, filter);
    t.equal(found.json().totalResults, 1, `${filter} finds exactly one`);
    t.equal(found.json().Resources[0].id, user.id);
  }

  const duplicate = await scim('POST', '/Users', entraUser(1, { userName: 'PUPIL1@school.EXAMPLE', externalId: 'other' }));
  t.equal(duplicate.statusCode, 409);
  t.match(duplicate.json(), { status: '409', scimType: 'uniqueness', detail: /already exists/ });

  const disabled = await scim('PATCH', `/Users/${user.id}`, patch({ op: 'Replace', path: 'active', value: 'False' }));
  t.equal(disabled.statusCode, 200);
  t.equal(disabled.json().active, false);
  t.equal(disabled.json().meta.version, 'W/"2"');
  t.equal((await db.selectFrom('accounts').select('active').where('id', '=', user.id).executeTakeFirstOrThrow()).active, false);
  const stillThere = await scim('GET', `/Users?filter=${encodeURIComponent('userName eq "Pupil1@School.example"')}`);
  t.equal(stillThere.json().totalResults, 1, 'a disabled user is still found');
  t.equal(stillThere.json().Resources[0].active, false);

  const enabled = await scim('PATCH', `/Users/${user.id}`, patch({ op: 'Add', path: 'active', value: 'True' }));
  t.equal(enabled.json().active, true, 'Add active "True" enables');

  const deleted = await scim('DELETE', `/Users/${user.id}`);
  t.equal(deleted.statusCode, 204);
  t.equal(deleted.body, '');
  const again = await scim('DELETE', `/Users/${user.id}`);
  t.equal(again.statusCode, 404);
  t.equal(again.json().status, '404');
  t.equal((await scim('GET', `/Users/${user.id}`)).statusCode, 404);
  const gone = await db.selectFrom('accounts').select('deleted_at').where('id', '=', user.id).executeTakeFirstOrThrow();
  t.type(gone.deleted_at, Date, 'the row is marked deleted');
  const recreated = await scim('POST', '/Users', entraUser(1));
  t.equal(recreated.statusCode, 201, 'the userName is free again after a delete');
  t.not(recreated.json().id, user.id);
});

t.test('default dialect: one operation per attribute, capitalised ops, string booleans', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(2))).json().id as string;
  const res = await scim(
    'PATCH',
    `/Users/${id}`,
    patch(
      { op: 'Replace', path: 'displayName', value: 'Anna Berg' },
      { op: 'Replace', path: 'name.GivenName', value: 'Anna' },
      { op: 'Replace', path: 'name.familyName', value: 'Berg' },
      { op: 'Replace', path: `${ENTERPRISE}:department`, value: 'Södra skolan' },
      { op: 'Add', path: 'Title', value: 'Pupil' },
      { op: 'Replace', path: 'Active', value: 'False' },
    ),
  );
  t.equal(res.statusCode, 200, res.body);
  t.match(res.json(), {
    displayName: 'Anna Berg',
    name: { givenName: 'Anna', familyName: 'Berg', formatted: 'Pupil Number 2' },
    title: 'Pupil',
    active: false,
    [ENTERPRISE]: { department: 'Södra skolan', employeeNumber: '1002' },
  });
  const row = await db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  t.match(row, { display_name: 'Anna Berg', given_name: 'Anna', family_name: 'Berg', active: false, version: 2 });
});

t.test('aadOptscim062020 dialect: path-less replace with dotted and URN keys', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const created = await scim('POST', '/Users?aadOptscim062020', entraUser(3));
  t.equal(created.statusCode, 201, 'the flag on the Tenant URL is tolerated');
  const id = created.json().id as string;
  const res = await scim(
    'PATCH',
    `/Users/${id}?aadOptscim062020`,
    patch({
      op: 'replace',
      value: {
        'name.givenName': 'Ann',
        'name.familyName': 'Lee',
        [`${ENTERPRISE}:employeeNumber`]: '7',
        [`${PORTAL}:grade`]: '5',
        active: false,
        displayName: 'Ann Lee',
      },
    }),
  );
  t.equal(res.statusCode, 200, res.body);
  t.match(res.json(), {
    name: { givenName: 'Ann', familyName: 'Lee', formatted: 'Pupil Number 3' },
    displayName: 'Ann Lee',
    active: false,
    [ENTERPRISE]: { employeeNumber: '7', department: 'Norra skolan' },
    [PORTAL]: { grade: '5' },
  });
  const row = await db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  t.match(row, { given_name: 'Ann', family_name: 'Lee', grade: '5', active: false });
});

t.test('a work e-mail is created by a filtered path when the user has none', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const { emails: _emails, ...noEmail } = entraUser(4);
  const id = (await scim('POST', '/Users', noEmail)).json().id as string;
  for (const op of ['Add', 'Replace']) {
    const res = await scim('PATCH', `/Users/${id}`, patch({ op, path: 'emails[type eq "work"].value', value: `${op.toLowerCase()}@school.example` }));
    t.equal(res.statusCode, 200, res.body);
    t.same(res.json().emails, [{ type: 'work', value: `${op.toLowerCase()}@school.example` }], `${op} leaves one work address`);
  }
  const row = await db.selectFrom('accounts').select('email').where('id', '=', id).executeTakeFirstOrThrow();
  t.equal(row.email, 'replace@school.example');
  const res = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'emails[type eq "Work"].value', value: 'case@school.example' }));
  t.same(res.json().emails, [{ type: 'work', value: 'case@school.example' }], 'the filter value matches in any case');
});

t.test('a filtered path may change the very sub-attribute its filter compares, in place', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const emails = [
    { primary: true, type: 'work', value: 'pupil5@school.example' },
    { type: 'home', value: 'home5@example.net' },
  ];
  const id = (await scim('POST', '/Users', entraUser(5, { emails }))).json().id as string;

  const home = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'emails[value eq "HOME5@example.net"].value', value: 'new-home5@example.net' }));
  t.equal(home.statusCode, 200, home.body);
  t.same(home.json().emails, [emails[0], { type: 'home', value: 'new-home5@example.net' }], 'the matched address changes where it stands');
  t.equal(home.json().meta.version, 'W/"2"');

  const work = await scim('PATCH', `/Users/${id}`, patch({ op: 'add', path: 'emails[type eq "work" and value eq "pupil5@school.example"].value', value: 'moved5@school.example' }));
  t.equal(work.statusCode, 200, work.body);
  t.same(work.json().emails, [{ primary: true, type: 'work', value: 'moved5@school.example' }, { type: 'home', value: 'new-home5@example.net' }]);
  const row = await db.selectFrom('accounts').select(['email', 'scim', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
  t.equal(row.email, 'moved5@school.example', 'the link e-mail follows the work address');
  t.same(row.scim.emails, work.json().emails);
  t.equal(row.version, 3);

  const none = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'emails[value co "gone"].value', value: 'x@example.net' }));
  t.equal(none.statusCode, 400, 'a filter that matches nothing and describes no element is still refused');
  t.match(none.json(), { status: '400', scimType: 'noTarget' });
});

t.test('manager: every Entra shape, and removal', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(5))).json().id as string;
  const manager = (v: unknown) => (v as Record<string, { manager?: unknown }>)[ENTERPRISE]?.manager;
  // The reference is always the server's own, at PUBLIC_URL, whatever the client sent.
  const ref = (id: string) => `https://scim.example.test/scim/v2/Users/${id}`;
  const shapes: [string, unknown, unknown][] = [
    ['Add', 'boss-1', { value: 'boss-1', $ref: ref('boss-1') }],
    ['Replace', { value: 'boss-2' }, { value: 'boss-2', $ref: ref('boss-2') }],
    ['Replace', [{ $ref: null, value: 'boss-3' }], { value: 'boss-3', $ref: ref('boss-3') }],
    ['Replace', { value: 'boss-4', $ref: '../Users/boss-4' }, { value: 'boss-4', $ref: ref('boss-4') }],
  ];
  for (const [op, value, expected] of shapes) {
    for (const path of [`${ENTERPRISE}:manager`, 'manager']) {
      const res = await scim('PATCH', `/Users/${id}`, patch({ op, path, value }));
      t.equal(res.statusCode, 200, `${op} ${path} ${JSON.stringify(value)}: ${res.body}`);
      t.same(manager(res.json()), expected);
      t.same(manager((await scim('GET', `/Users/${id}`)).json()), expected, 'GET returns the same manager');
    }
  }
  const row = await db.selectFrom('accounts').select('scim').where('id', '=', id).executeTakeFirstOrThrow();
  t.same((row.scim[ENTERPRISE] as Record<string, unknown>).manager, { value: 'boss-4' }, 'only the id is stored: the reference follows PUBLIC_URL');
  const cleared = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: `${ENTERPRISE}:manager`, value: '' }));
  t.equal(manager(cleared.json()), undefined, 'replace with "" removes the manager');
  await scim('PATCH', `/Users/${id}`, patch({ op: 'Add', path: `${ENTERPRISE}:manager`, value: 'boss-4' }));
  const removed = await scim('PATCH', `/Users/${id}`, patch({ op: 'Remove', path: `${ENTERPRISE}:manager` }));
  t.equal(manager(removed.json()), undefined, 'remove removes the manager');
  t.equal(removed.json<Record<string, Record<string, unknown>>>()[ENTERPRISE]?.employeeNumber, '1005', 'other enterprise attributes stay');
});

t.test('roles with a string primary, and a path on roles[primary eq "True"]', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(6))).json().id as string;
  t.equal((await db.selectFrom('accounts').select('role').where('id', '=', id).executeTakeFirstOrThrow()).role, 'student');
  const add = await scim('PATCH', `/Users/${id}`, patch({ op: 'Add', path: 'roles', value: [{ primary: 'True', type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' }] }));
  t.equal(add.statusCode, 200, add.body);
  t.same(add.json().roles, [{ primary: true, type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' }]);
  t.equal((await db.selectFrom('accounts').select('role').where('id', '=', id).executeTakeFirstOrThrow()).role, 'teacher', 'the role change is applied');
  const replace = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'roles[primary eq "True"].value', value: 'Student' }));
  t.equal(replace.statusCode, 200, replace.body);
  t.equal(replace.json().roles[0].value, 'Student');
  t.equal((await db.selectFrom('accounts').select('role').where('id', '=', id).executeTakeFirstOrThrow()).role, 'student');
});

t.test('empty Operations is a no-op', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(7))).json().id as string;
  const res = await scim('PATCH', `/Users/${id}`, patch());
  t.equal(res.statusCode, 200);
  t.equal(res.json().meta.version, 'W/"1"', 'nothing changed');
});

t.test('a PUT of the account as it is writes nothing: same version, no event, nothing in the feed', async (t) => {
  const { app, headers, db, tenant } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(8))).json().id as string;
  const count = async (table: 'audit_events' | 'change_events') =>
    (await db.selectFrom(table).select((eb) => eb.fn.countAll<string>().as('n')).where('tenant_id', '=', tenant.id).executeTakeFirstOrThrow()).n;
  const [events, changes] = [await count('audit_events'), await count('change_events')];
  const same = await scim('PUT', `/Users/${id}`, entraUser(8));
  t.equal(same.statusCode, 200, same.body);
  t.equal(same.headers.etag, 'W/"1"');
  t.match(same.json(), { id, userName: entraUser(8).userName, meta: { version: 'W/"1"' } });
  t.equal((await db.selectFrom('accounts').select('version').where('id', '=', id).executeTakeFirstOrThrow()).version, 1);
  t.equal(await count('audit_events'), events, 'no audit event');
  t.equal(await count('change_events'), changes, 'nothing in the change feed');
  const changed = await scim('PUT', `/Users/${id}`, entraUser(8, { displayName: 'Renamed' }));
  t.equal(changed.headers.etag, 'W/"2"', 'a PUT that changes something writes');
});

for (const writeStrategy of ['quick', 'locked'] as const) {
  t.test(`a PUT that changes nothing is answered before rule 3 is read, and one that takes an admin's address is refused (${writeStrategy} path)`, async (t) => {
    const { app, headers, db, tenant } = await testApp(t, {}, { writeStrategy });
    const scim = client(app, headers);
    const id = (await scim('POST', '/Users', entraUser(8))).json().id as string;
    // An admin made by hand later with an address the pupil is about to get.
    await db.insertInto('accounts').values({ tenant_id: tenant.id, managed_by: 'manual', role: 'admin', user_name: 'head', email: 'pupil8.new@school.example', scim: '{}' }).execute();
    const same = await scim('PUT', `/Users/${id}`, entraUser(8));
    t.equal(same.statusCode, 200, same.body);
    t.equal(same.headers.etag, 'W/"1"', 'nothing was written');
    const changed = await scim('PUT', `/Users/${id}`, entraUser(8, { displayName: 'Renamed', emails: [{ primary: true, type: 'work', value: 'Pupil8.New@school.example' }] }));
    t.equal(changed.statusCode, 409);
    t.match(changed.json(), { scimType: 'uniqueness' });
  });
}

t.test('PUT replaces the resource', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(8))).json().id as string;
  const res = await scim('PUT', `/Users/${id}`, { schemas: [USER], userName: 'renamed@school.example', active: false, name: { givenName: 'Re' } });
  t.equal(res.statusCode, 200, res.body);
  t.match(res.json(), { id, userName: 'renamed@school.example', active: false, name: { givenName: 'Re' } });
  t.notOk(res.json().emails, 'attributes left out are removed');
  const row = await db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  t.match(row, { user_name: 'renamed@school.example', email: null, given_name: 'Re', family_name: null, active: false });
});
