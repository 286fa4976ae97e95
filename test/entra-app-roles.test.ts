// App role assignments in the shapes Entra sends them (recorded under
// test/fixtures/entra/): the role as JSON text in a PATCH without
// aadOptscim062020, display spelled displayName in a POST. They are stored as
// SCIM roles {value, display, type, primary} and decide the portal role (rule 4).
import t from 'tap';
import { testApp } from './helpers/app.js';
import { fixture } from './helpers/fixtures.js';
import { USER, client, entraUser, patch } from './helpers/scim.js';

type Json = Record<string, unknown>;

const TEACHER = { value: 'Teacher', display: 'Teacher', type: 'WindowsAzureActiveDirectoryRole', primary: false };
const STUDENT = { value: 'Student', display: 'Student', type: 'WindowsAzureActiveDirectoryRole', primary: false };

t.test('PATCH add, replace and remove of app roles sent as JSON text', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json<Json>().id as string;
  const row = () => db.selectFrom('accounts').select(['role', 'scim', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
  t.equal((await row()).role, 'student');

  const added = await scim('PATCH', `/Users/${id}`, fixture('entra-patch-app-role-add'));
  t.equal(added.statusCode, 200, added.body);
  t.same(added.json<Json>().roles, [TEACHER], 'the JSON text becomes the role element');
  t.same((await scim('GET', `/Users/${id}`)).json<Json>().roles, [TEACHER], 'and reads back so');
  t.match(await row(), { role: 'teacher', scim: { roles: [TEACHER] }, version: 2 });

  const again = await scim('PATCH', `/Users/${id}`, fixture('entra-patch-app-role-add'));
  t.same(again.json<Json>().roles, [TEACHER], 'the same role added twice is kept once');
  t.equal(again.headers.etag, added.headers.etag, 'and changes nothing: no new version');
  t.match(await row(), { version: 2 });

  const replaced = await scim('PATCH', `/Users/${id}`, fixture('entra-patch-app-role-replace'));
  t.equal(replaced.statusCode, 200, replaced.body);
  t.same(replaced.json<Json>().roles, [STUDENT]);
  t.match(await row(), { role: 'student', scim: { roles: [STUDENT] } });

  await scim('PATCH', `/Users/${id}`, fixture('entra-patch-app-role-add'));
  t.equal((await row()).role, 'student', 'of two non-primary roles the first recognised one decides');
  const removed = await scim('PATCH', `/Users/${id}`, {
    ...patch({ op: 'Remove', path: 'roles', value: [{ value: JSON.stringify({ id: '9d2c4e6f-1a3b-4c5d-8e7f-0a1b2c3d4e5f', value: 'Student', displayName: 'Student' }) }] }),
  });
  t.equal(removed.statusCode, 200, removed.body);
  t.same(removed.json<Json>().roles, [TEACHER], 'removal names the role by its value');
  t.equal((await row()).role, 'teacher', 'the role change is applied');

  const last = await scim('PATCH', `/Users/${id}`, fixture('entra-patch-app-role-remove'));
  t.equal(last.statusCode, 200, last.body);
  t.notOk('roles' in last.json<Json>(), 'no roles are left');
  t.equal((await row()).role, 'student', 'without roles the default applies');
});

t.test('an app role as JSON text on the filtered path, and plain values that are not such JSON', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(2))).json<Json>().id as string;
  const filtered = await scim(
    'PATCH',
    `/Users/${id}`,
    patch({ op: 'Add', path: 'roles[primary eq "True"].value', value: JSON.stringify({ id: 'x', value: 'Teacher', displayName: 'Lärare' }) }),
  );
  t.equal(filtered.statusCode, 200, filtered.body);
  t.same(filtered.json<Json>().roles, [{ primary: true, value: 'Teacher' }]);
  t.equal((await db.selectFrom('accounts').select('role').where('id', '=', id).executeTakeFirstOrThrow()).role, 'teacher');

  for (const plain of ['{not json', '{"id":"x"}', '["Teacher"]', '{"value": 7}', ' Teacher ']) {
    const res = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'roles', value: [{ value: plain, primary: 'True' }] }));
    t.equal(res.statusCode, 200, res.body);
    t.same(res.json<Json>().roles, [{ value: plain, primary: true }], `${plain} stays a plain role value`);
  }
});

t.test('POST and PUT: app roles as JSON text and AppRoleAssignmentsComplex elements', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const created = await scim('POST', '/Users', fixture('entra-create-user-app-roles'));
  t.equal(created.statusCode, 201, created.body);
  t.same(created.json<Json>().roles, [{ primary: false, type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher', display: 'Teacher' }], 'displayName is read as display');
  const id = created.json<Json>().id as string;
  t.equal((await db.selectFrom('accounts').select('role').where('id', '=', id).executeTakeFirstOrThrow()).role, 'teacher');

  const put = await scim('PUT', `/Users/${id}`, {
    schemas: [USER],
    userName: 'Lena.Holm@school.example',
    roles: [{ value: JSON.stringify({ id: 'a', value: 'Elev', displayName: 'Student' }) }],
  });
  t.equal(put.statusCode, 200, put.body);
  t.same(put.json<Json>().roles, [{ value: 'Elev', display: 'Student', type: 'WindowsAzureActiveDirectoryRole', primary: false }]);
  t.equal((await db.selectFrom('accounts').select('role').where('id', '=', id).executeTakeFirstOrThrow()).role, 'student');
});

t.test("a role's display name decides when its value is not in the mapping", async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const role = { value: JSON.stringify({ id: 'b', value: '25', displayName: 'Teacher' }) };
  const created = await scim('POST', '/Users', entraUser(3, { roles: [role] }));
  t.equal(created.statusCode, 201, created.body);
  t.same(created.json<Json>().roles, [{ value: '25', display: 'Teacher', type: 'WindowsAzureActiveDirectoryRole', primary: false }]);
  t.equal((await db.selectFrom('accounts').select('role').where('id', '=', created.json<Json>().id as string).executeTakeFirstOrThrow()).role, 'teacher');
});

// Entra sends each cycle's roles and e-mails again; a value the user has
// already, whatever the order of its keys, is neither stored twice nor a change.
t.test('an Add of a role or e-mail the user has already, in any key order, keeps one copy and writes nothing', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const role = { primary: 'True', type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' };
  const created = await scim('POST', '/Users', { schemas: [USER], userName: 'a@school.example', roles: [role], emails: [{ primary: true, type: 'work', value: 'a@school.example' }] });
  t.equal(created.statusCode, 201, created.body);
  const id = created.json<Json>().id as string;
  const feed = async () => (await db.selectFrom('change_events').select('position').where('object_id', '=', id).execute()).length;
  const events = await feed();
  const adds = [
    patch({ op: 'Add', path: 'roles', value: [role] }),
    patch({ op: 'Add', path: 'roles', value: [{ value: 'Teacher', primary: true, type: 'WindowsAzureActiveDirectoryRole' }] }),
    patch({ op: 'add', path: 'emails', value: [{ type: 'work', value: 'a@school.example', primary: true }] }),
    patch({ op: 'add', path: 'emails', value: [{ primary: true, type: 'work', value: 'a@school.example' }] }),
    patch({ op: 'add', path: 'emails', value: [{ value: 'a@school.example', type: 'work', primary: true }] }),
  ];
  for (const body of adds) {
    const res = await scim('PATCH', `/Users/${id}`, body);
    t.equal(res.statusCode, 200, res.body);
    t.equal((res.json<Json>().roles as unknown[]).length, 1, 'one role');
    t.equal((res.json<Json>().emails as unknown[]).length, 1, 'one e-mail');
    t.equal(res.headers.etag, created.headers.etag, 'the version as it was');
  }
  const stored = await db.selectFrom('accounts').select(['version', 'scim']).where('id', '=', id).executeTakeFirstOrThrow();
  t.equal(stored.version, 1, 'no write');
  t.same([(stored.scim.roles as unknown[]).length, (stored.scim.emails as unknown[]).length], [1, 1]);
  t.equal(await feed(), events, 'nothing in the feed');
});
