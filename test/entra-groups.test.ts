// Entra's request sequences for groups (classes): create, lookup without
// members, rename, member batches in both dialects, delete; rows checked.
import t from 'tap';
import { testApp, tenantWithToken } from './helpers/app.js';
import { ADSCIM_GROUP, GROUP, client, entraUser, patch, type Send } from './helpers/scim.js';

async function createUsers(scim: Send, from: number, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = from; i < from + n; i++) ids.push((await scim('POST', '/Users', entraUser(i))).json().id as string);
  return ids;
}

t.test('group lifecycle as Entra drives it', async (t) => {
  const { app, headers, db, tenant, credentialId } = await testApp(t);
  const scim = client(app, headers);
  const users = await createUsers(scim, 1, 4);

  const created = await scim('POST', '/Groups', {
    schemas: [GROUP, ADSCIM_GROUP],
    externalId: 'aaaaaaaa-1111-4000-8000-000000000001',
    displayName: 'Class 5C',
  });
  t.equal(created.statusCode, 201, created.body);
  const group = created.json();
  t.match(group, { schemas: [GROUP], displayName: 'Class 5C', externalId: 'aaaaaaaa-1111-4000-8000-000000000001', members: [] });
  t.equal(created.headers.location, `https://scim.example.test/scim/v2/Groups/${group.id}`);
  const row = await db.selectFrom('classes').selectAll().where('id', '=', group.id).executeTakeFirstOrThrow();
  t.match(row, { tenant_id: tenant.id, managed_by: 'sync', display_name: 'Class 5C', external_id: 'aaaaaaaa-1111-4000-8000-000000000001' });
  const createEvents = await db.selectFrom('audit_events').selectAll().where('object_id', '=', group.id).execute();
  t.match(createEvents, [
    { tenant_id: tenant.id, action: 'create', object_type: 'group', object_ref: 'Class 5C', outcome: 'success', credential_id: credentialId, details: { membersAdded: 0 } },
  ]);
  t.equal(createEvents.length, 1, 'one audit event for the create');
  t.type(createEvents[0]?.request_id, 'string');
  const withMembers = await scim('POST', '/Groups', { schemas: [GROUP], externalId: 'aaaaaaaa-1111-4000-8000-000000000009', displayName: 'Class 9Z', members: [{ value: users[3] }] });
  t.equal(withMembers.statusCode, 201, withMembers.body);
  t.same(withMembers.json().members.map((m: { value: string }) => m.value), [users[3]]);
  t.match(await db.selectFrom('audit_events').selectAll().where('object_id', '=', withMembers.json().id).execute(), [
    { action: 'create', object_type: 'group', object_ref: 'Class 9Z', details: { membersAdded: 1 } },
  ]);

  const lookup = await scim('GET', `/Groups?excludedAttributes=members&filter=${encodeURIComponent('displayName eq "class 5c"')}`);
  t.equal(lookup.json().totalResults, 1);
  t.notOk('members' in lookup.json().Resources[0], 'excludedAttributes=members leaves members out');
  const byExternal = await scim('GET', `/Groups?filter=${encodeURIComponent('externalId eq "aaaaaaaa-1111-4000-8000-000000000001"')}`);
  t.equal(byExternal.json().Resources[0].id, group.id);

  const duplicate = await scim('POST', '/Groups', { schemas: [GROUP], externalId: 'aaaaaaaa-1111-4000-8000-000000000001', displayName: 'Other' });
  t.equal(duplicate.statusCode, 409);
  t.equal(duplicate.json().scimType, 'uniqueness');
  t.equal(duplicate.json().detail, 'A group with externalId "aaaaaaaa-1111-4000-8000-000000000001" already exists.');
  // A PATCH that gives another class the externalId names it too.
  const taken = await scim('PATCH', `/Groups/${withMembers.json().id}`, patch({ op: 'Replace', path: 'externalId', value: 'aaaaaaaa-1111-4000-8000-000000000001' }));
  t.equal(taken.statusCode, 409);
  t.match(taken.json(), { scimType: 'uniqueness', detail: 'A group with externalId "aaaaaaaa-1111-4000-8000-000000000001" already exists.' });

  const add = await scim('PATCH', `/Groups/${group.id}`, patch({ op: 'Add', path: 'members', value: users.slice(0, 3).map((value) => ({ value })) }));
  t.equal(add.statusCode, 204, add.body);
  const again = await scim('PATCH', `/Groups/${group.id}`, patch({ op: 'Add', path: 'members', value: [{ value: users[0] }] }));
  t.equal(again.statusCode, 204, 'adding a member twice succeeds');
  const members = async () =>
    (await db.selectFrom('class_memberships').select('account_id').where('class_id', '=', group.id).orderBy('account_id').execute()).map((r) => r.account_id);
  t.same(await members(), users.slice(0, 3).sort(), 'three rows, no duplicate');

  const removeDefault = await scim('PATCH', `/Groups/${group.id}`, patch({ op: 'Remove', path: 'members', value: [{ value: users[0] }] }));
  t.equal(removeDefault.statusCode, 204);
  const removeNew = await scim('PATCH', `/Groups/${group.id}`, patch({ op: 'remove', path: `members[value eq "${users[1]}"]` }));
  t.equal(removeNew.statusCode, 204);
  const removeAbsent = await scim('PATCH', `/Groups/${group.id}`, patch({ op: 'remove', path: `members[value eq "${users[3]}"]` }));
  t.equal(removeAbsent.statusCode, 204, 'removing a non-member succeeds');
  t.same(await members(), [users[2]]);

  const full = await scim('GET', `/Groups/${group.id}`);
  t.same(full.json().members, [{ value: users[2], display: 'Pupil 3', type: 'User', $ref: `https://scim.example.test/scim/v2/Users/${users[2]}` }]);

  const rename = await scim('PATCH', `/Groups/${group.id}`, patch({ op: 'replace', value: { id: group.id, displayName: 'Class 6C' } }));
  t.equal(rename.statusCode, 204, rename.body);
  const renameDefault = await scim('PATCH', `/Groups/${group.id}`, patch({ op: 'Replace', path: 'displayName', value: 'Class 6D' }));
  t.equal(renameDefault.statusCode, 204);
  t.equal((await db.selectFrom('classes').select('display_name').where('id', '=', group.id).executeTakeFirstOrThrow()).display_name, 'Class 6D');
  t.same(await members(), [users[2]], 'a rename keeps members');

  const replaced = await scim('PATCH', `/Groups/${group.id}`, patch({ op: 'replace', path: 'members', value: [{ value: users[0] }, { value: users[3] }] }));
  t.equal(replaced.statusCode, 204);
  t.same(await members(), [users[0], users[3]].sort());

  const version = (await scim('GET', `/Groups/${group.id}?excludedAttributes=members`)).json().meta.version as string;
  t.not(version, 'W/"1"', 'member changes move the version');

  const deleted = await scim('DELETE', `/Groups/${group.id}`);
  t.equal(deleted.statusCode, 204);
  t.equal((await scim('GET', `/Groups/${group.id}`)).statusCode, 404);
  t.same(await members(), [], 'memberships went with the class');
  t.equal((await db.selectFrom('accounts').select('id').where('id', 'in', users).execute()).length, 4, 'the users stay');
});

t.test('a PUT of a class as it is writes nothing; one that changes only its members writes them', async (t) => {
  const { app, headers, db, tenant } = await testApp(t);
  const scim = client(app, headers);
  const users = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  const body = (members: string[]) => ({ schemas: [GROUP], displayName: 'Class 7A', externalId: 'g-7a', members: members.map((value) => ({ value })) });
  const id = (await scim('POST', '/Groups', body([users[0] ?? '']))).json().id as string;
  const count = async (table: 'audit_events' | 'change_events') =>
    (await db.selectFrom(table).select((eb) => eb.fn.countAll<string>().as('n')).where('tenant_id', '=', tenant.id).executeTakeFirstOrThrow()).n;
  const [events, changes] = [await count('audit_events'), await count('change_events')];

  const same = await scim('PUT', `/Groups/${id}`, body([users[0] ?? '']));
  t.equal(same.statusCode, 200, same.body);
  t.equal(same.headers.etag, 'W/"1"');
  t.match(same.json(), { id, displayName: 'Class 7A', members: [{ value: users[0] }], meta: { version: 'W/"1"' } });
  t.equal(await count('audit_events'), events, 'no audit event');
  t.equal(await count('change_events'), changes, 'nothing in the change feed');

  const joined = await scim('PUT', `/Groups/${id}`, body(users));
  t.equal(joined.headers.etag, 'W/"2"', 'new members are a change');
  t.same(joined.json().members.map((m: { value: string }) => m.value).sort(), [...users].sort());
  const event = await db.selectFrom('audit_events').select(['action', 'details']).where('object_id', '=', id).orderBy('id', 'desc').executeTakeFirstOrThrow();
  t.match(event, { action: 'update', details: { changed: ['members'], memberChanges: 1 } });
});

t.test('members must be users of this tenant', async (t) => {
  const { app, headers, db, config, keys } = await testApp(t);
  const scim = client(app, headers);
  const other = await tenantWithToken(db, config, keys, 'Other School', ['other.example']);
  const foreign = (await client(app, other.headers)('POST', '/Users', entraUser(99))).json().id as string;
  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 1A' })).json().id as string;

  for (const value of [foreign, 'not-a-uuid', group, '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11']) {
    const res = await scim('PATCH', `/Groups/${group}`, patch({ op: 'Add', path: 'members', value: [{ value }] }));
    t.equal(res.statusCode, 400, `member ${value} is refused`);
    t.match(res.json(), { scimType: 'invalidValue', detail: /users of this tenant/ });
  }
  t.equal((await db.selectFrom('class_memberships').select('account_id').where('class_id', '=', group).execute()).length, 0, 'nothing was written');
  const created = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 1B', members: [{ value: foreign }] });
  t.equal(created.statusCode, 400, 'a create naming a foreign member is refused');
  t.equal((await db.selectFrom('classes').select('id').where('display_name', '=', 'Class 1B').execute()).length, 0, 'and creates nothing');
});

t.test('a class of 10,000 members takes batches of 100 in SQL', async (t) => {
  const { app, headers, db, tenant } = await testApp(t);
  const scim = client(app, headers);
  // Accounts are created directly: this test is about membership batches.
  const ids = (
    await db
      .insertInto('accounts')
      .values(Array.from({ length: 10_000 }, (_, i) => ({ tenant_id: tenant.id, managed_by: 'sync' as const, user_name: `big${i}@school.example`, scim: '{}' })))
      .returning('id')
      .execute()
  ).map((r) => r.id);
  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Whole school' })).json().id as string;
  for (let i = 0; i < ids.length; i += 100) {
    const res = await scim('PATCH', `/Groups/${group}`, patch({ op: 'Add', path: 'members', value: ids.slice(i, i + 100).map((value) => ({ value })) }));
    if (res.statusCode !== 204) t.fail(`batch ${i / 100}: ${res.body}`);
  }
  const count = async () =>
    Number((await db.selectFrom('class_memberships').select((eb) => eb.fn.countAll<string>().as('n')).where('class_id', '=', group).executeTakeFirstOrThrow()).n);
  t.equal(await count(), 10_000);
  for (let i = 0; i < 5_000; i += 100) {
    await scim('PATCH', `/Groups/${group}`, patch({ op: 'remove', path: `members[${ids.slice(i, i + 100).map((id) => `value eq "${id}"`).join(' or ')}]` }));
  }
  t.equal(await count(), 5_000);
  const listed = await scim('GET', `/Groups/${group}`);
  t.equal(listed.json().members.length, 5_000, 'GET returns every member');
});
