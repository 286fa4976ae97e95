// The SCIM Validator's verbose PATCH sequences (recorded under
// test/fixtures/entra/): several filtered paths on one element in one PATCH,
// each applied to the user as the earlier operations left it, so that every
// value sent reads back from a GET, on exactly one element.
import t from 'tap';
import { testApp } from './helpers/app.js';
import { fixture, pathsSet, valuesAt } from './helpers/fixtures.js';
import { ENTERPRISE, client, patch } from './helpers/scim.js';

type Json = Record<string, unknown>;

for (const [title, user, message] of [
  ['the verbose add sequence builds each new element from all its operations', 'validator-create-user-minimal', 'validator-patch-add-verbose'],
  ['the verbose replace sequence builds each new element from all its operations', 'validator-create-user-minimal', 'validator-patch-replace-verbose'],
  ['the verbose replace sequence changes each existing element in place', 'validator-create-user-full', 'validator-patch-replace-verbose'],
] as const) {
  t.test(title, async (t) => {
    const { app, headers, db } = await testApp(t);
    const scim = client(app, headers);
    const created = await scim('POST', '/Users', fixture(user));
    t.equal(created.statusCode, 201, created.body);
    const id = created.json<Json>().id as string;
    const body = fixture(message);

    const patched = await scim('PATCH', `/Users/${id}`, body);
    t.equal(patched.statusCode, 200, patched.body);
    t.match(patched.headers['content-type'], /^application\/scim\+json/);
    t.equal(patched.headers.etag, 'W/"2"');
    const read = await scim('GET', `/Users/${id}`);
    t.equal(read.statusCode, 200);
    t.same(read.json(), patched.json(), 'GET returns what the PATCH answered');

    for (const [path, value] of pathsSet(body)) {
      t.same(valuesAt(read.json(), path), [value], `${path} reads back once, as sent`);
    }
    const resource = read.json<Record<string, Json[]>>();
    t.equal(resource.emails?.length, 1, 'one e-mail');
    t.equal(resource.addresses?.length, 1, 'one address');
    t.equal(resource.roles?.length, 1, 'one role');
    t.same(
      resource.phoneNumbers?.map((p) => p.type),
      ['work', 'mobile', 'fax'],
      'one phone number of each type',
    );

    const row = await db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    const email = valuesAt(read.json(), 'emails[type eq "work"].value')[0];
    t.match(row, { email, version: 2, role: 'student' });
    t.same(row.scim.addresses, resource.addresses, 'the stored document holds the one address');
  });
}

t.test('several filtered operations on one element, mixing both dialects', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', fixture('validator-create-user-minimal'))).json<Json>().id as string;
  const res = await scim(
    'PATCH',
    `/Users/${id}`,
    patch(
      { op: 'Add', path: 'emails[type eq "work"].value', value: 'ruth@school.example' },
      { op: 'replace', value: { 'emails[type eq "work"].primary': 'True', 'emails[type eq "Work"].display': 'Ruth at work' } },
      { op: 'Replace', path: 'roles[primary eq "True"].value', value: 'Teacher' },
      { op: 'add', path: 'roles[primary eq "true"].display', value: 'Lärare' },
      { op: 'replace', value: { 'addresses[type eq "work"].locality': 'Växjö' } },
      { op: 'Add', path: 'addresses[type eq "work"].country', value: 'SE' },
    ),
  );
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json<Json>().emails, [{ type: 'work', value: 'ruth@school.example', primary: true, display: 'Ruth at work' }]);
  t.same(res.json<Json>().roles, [{ primary: true, value: 'Teacher', display: 'Lärare' }]);
  t.same(res.json<Json>().addresses, [{ type: 'work', locality: 'Växjö', country: 'SE' }]);
  const row = await db.selectFrom('accounts').select(['email', 'role']).where('id', '=', id).executeTakeFirstOrThrow();
  t.same(row, { email: 'ruth@school.example', role: 'teacher' }, 'the link e-mail and the role follow the one element');
});

t.test('a value set and then emptied in one PATCH is gone', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', fixture('validator-create-user-minimal'))).json<Json>().id as string;
  const res = await scim('PATCH', `/Users/${id}`, patch({ op: 'Add', path: 'title', value: 'Rektor' }, { op: 'Replace', path: 'title', value: '' }));
  t.equal(res.statusCode, 200, res.body);
  t.notOk('title' in res.json<Json>(), 'the second operation sees the title the first set, and removes it');
  t.equal(res.json<Json>().meta && (res.json<Json>().meta as Json).version, 'W/"1"', 'nothing changed overall');
});

t.test('whole extensions as a PATCH path: add and replace merge, remove removes', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', fixture('validator-create-user-full'))).json<Json>().id as string;

  const added = await scim('PATCH', `/Users/${id}`, patch({ op: 'add', path: ENTERPRISE, value: { department: 'Norra skolan', manager: { value: 'boss-7' } } }));
  t.equal(added.statusCode, 200, added.body);
  t.match(added.json<Json>()[ENTERPRISE], { employeeNumber: 'OLD-1', department: 'Norra skolan', costCenter: 'OLDCC', manager: { value: 'boss-7' } });

  const replaced = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: ENTERPRISE.toLowerCase(), value: { EmployeeNumber: '4471', division: 'False' } }));
  t.equal(replaced.statusCode, 200, replaced.body);
  t.match(replaced.json<Json>()[ENTERPRISE], { employeeNumber: '4471', department: 'Norra skolan', division: 'False' }, 'the attributes not named stay');

  const removed = await scim('PATCH', `/Users/${id}`, patch({ op: 'remove', path: ENTERPRISE }));
  t.equal(removed.statusCode, 200, removed.body);
  t.notOk(ENTERPRISE in removed.json<Json>(), 'the extension is gone');
  t.same(removed.json<Json>().schemas, ['urn:ietf:params:scim:schemas:core:2.0:User'], 'and so is its schema');
  const row = await db.selectFrom('accounts').select(['scim', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
  t.notOk(ENTERPRISE in row.scim, 'the stored document has no enterprise attributes');
  t.equal(row.version, 4);

  const again = await scim('PATCH', `/Users/${id}`, patch({ op: 'remove', path: ENTERPRISE }));
  t.equal(again.statusCode, 200, 'removing an extension the user does not have changes nothing');
  t.equal((again.json<Json>().meta as Json).version, 'W/"4"');

  const notObject = await scim('PATCH', `/Users/${id}`, patch({ op: 'add', path: ENTERPRISE, value: 'x' }));
  t.equal(notObject.statusCode, 400);
  t.match(notObject.json(), { status: '400', scimType: 'invalidValue', detail: 'Operation 1: the value of a whole extension must be an object of its attributes.' });
});

t.test('a PATCH that reads back what it changed too often is refused, and changes nothing', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', fixture('validator-create-user-minimal'))).json<Json>().id as string;
  const operations = Array.from({ length: 102 }, (_, i) => ({ op: 'add', path: `emails[type eq "t${i % 2}"].value`, value: `v${i}@school.example` }));
  const res = await scim('PATCH', `/Users/${id}`, patch(...operations));
  t.equal(res.statusCode, 400);
  t.same(res.json(), {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'],
    status: '400',
    scimType: 'invalidValue',
    detail: 'A PATCH request may read back an attribute it has just changed at most 100 times. Send the operations in several requests.',
  });
  const row = await db.selectFrom('accounts').select(['version', 'email']).where('id', '=', id).executeTakeFirstOrThrow();
  t.same(row, { version: 1, email: null });

  const atLimit = await scim('PATCH', `/Users/${id}`, patch(...operations.slice(0, 101)));
  t.equal(atLimit.statusCode, 200, 'one hundred read-backs are allowed');
  t.same(atLimit.json<Json>().emails, [{ type: 't0', value: 'v100@school.example' }, { type: 't1', value: 'v99@school.example' }]);
});
