// RFC 7644 §3.4.3 and §3.5.2 beyond Entra's own requests: POST /.search at the
// root over Users and Groups together, and PATCH with attributes or
// excludedAttributes answering the projected resource.
import t from 'tap';
import { testApp } from './helpers/app.js';
import { GROUP, USER, ENTERPRISE, client, entraUser, patch, type Send } from './helpers/scim.js';

const SEARCH = 'urn:ietf:params:scim:api:messages:2.0:SearchRequest';
type Json = Record<string, unknown>;

/** Three users and three classes with names that interleave: Anna, Bertil, Cesar / 7A, Anna's class, Zeta. */
async function seed(scim: Send): Promise<{ users: string[]; groups: string[] }> {
  const users: string[] = [];
  for (const [n, displayName] of [[1, 'Cesar'], [2, 'Anna'], [3, 'Bertil']] as const) {
    users.push((await scim('POST', '/Users', entraUser(n, { displayName }))).json<Json>().id as string);
  }
  const groups: string[] = [];
  for (const [displayName, externalId] of [['Zeta', 'g-1'], ['Annas klass', 'g-2'], ['7A', 'g-3']] as const) {
    groups.push((await scim('POST', '/Groups', { schemas: [GROUP], displayName, externalId, members: [{ value: users[0] }] })).json<Json>().id as string);
  }
  return { users, groups };
}

const search = (scim: Send, body: Json) => scim('POST', '/.search', { schemas: [SEARCH], ...body });
const names = (res: { json: <T>() => T }) => res.json<{ Resources: Json[] }>().Resources.map((r) => r.displayName);

t.test('POST /.search at the root lists Users and Groups together', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const { users, groups } = await seed(scim);

  const all = await search(scim, {});
  t.equal(all.statusCode, 200, all.body);
  t.match(all.headers['content-type'], /^application\/scim\+json/);
  t.match(all.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:ListResponse'], totalResults: 6, startIndex: 1, itemsPerPage: 6 });
  const everyone = all.json<{ Resources: Json[] }>().Resources;
  t.same(everyone.map((r) => (r.meta as Json).resourceType), ['User', 'User', 'User', 'Group', 'Group', 'Group'], 'Users, then Groups');
  t.same(new Set(everyone.map((r) => r.id)), new Set([...users, ...groups]));
  const perType = await scim('GET', `/Users/${users[0] ?? ''}`);
  t.same(everyone.find((r) => r.id === users[0]), perType.json(), 'a user reads as from /Users');
  const group = everyone.find((r) => r.id === groups[0]);
  t.same((group?.members as Json[] | undefined)?.map((m) => m.value), [users[0]], 'groups come with their members');

  // The filter: an attribute only one type has is "no value" for the other (RFC 7644 §3.4.2).
  const byName = await search(scim, { filter: 'displayName sw "ann"' });
  t.same(names(byName), ['Anna', 'Annas klass']);
  t.equal(byName.json<Json>().totalResults, 2);
  t.same(names(await search(scim, { filter: 'userName sw "pupil1"' })), ['Cesar'], 'userName: no group matches');
  t.same(names(await search(scim, { filter: 'members.value eq "' + (users[0] ?? '') + '"' })).sort(), ['7A', 'Annas klass', 'Zeta'], 'members: no user matches');
  t.same(names(await search(scim, { filter: 'not (userName pr)' })).sort(), ['7A', 'Annas klass', 'Zeta'], 'not of "no value" is every group');
  t.equal((await search(scim, { filter: 'userName ne "x" and meta.resourceType eq "Group"' })).json<Json>().totalResults, 3, 'ne of "no value" holds');
  t.same(names(await search(scim, { filter: 'userName eq "pupil2@school.example" or externalId eq "g-3"' })), ['Anna', '7A']);
  t.same(names(await search(scim, { filter: `${ENTERPRISE}:employeeNumber eq "1003"` })), ['Bertil']);

  // Paging runs over the one list.
  const page = await search(scim, { startIndex: 3, count: 2 });
  t.match(page.json(), { totalResults: 6, startIndex: 3, itemsPerPage: 2 });
  t.same(page.json<{ Resources: Json[] }>().Resources.map((r) => r.id), everyone.slice(2, 4).map((r) => r.id), 'the page spans both types');
  t.match((await search(scim, { count: 0 })).json(), { totalResults: 6, itemsPerPage: 0, Resources: [] });
  t.match((await search(scim, { startIndex: 7 })).json(), { totalResults: 6, itemsPerPage: 0 });

  // Sorting by an attribute both types have interleaves them.
  t.same(names(await search(scim, { sortBy: 'displayName' })), ['7A', 'Anna', 'Annas klass', 'Bertil', 'Cesar', 'Zeta']);
  t.same(names(await search(scim, { sortBy: 'displayName', sortOrder: 'descending', startIndex: 2, count: 3 })), ['Cesar', 'Bertil', 'Annas klass']);
  const byExternal = names(await search(scim, { sortBy: 'externalId', count: 6 }));
  t.same(byExternal, ['Cesar', 'Anna', 'Bertil', 'Zeta', 'Annas klass', '7A'], 'externalId sorts case-exact across types');
  // An attribute one type has: the other type follows, as missing values do.
  const byUserName = names(await search(scim, { sortBy: 'userName', sortOrder: 'descending' }));
  t.same(byUserName.slice(0, 3), ['Bertil', 'Anna', 'Cesar']);
  t.same(byUserName.slice(3).sort(), ['7A', 'Annas klass', 'Zeta']);

  // Projection per resource type.
  const projected = await search(scim, { filter: 'displayName sw "a"', attributes: ['userName', 'displayName'], sortBy: 'displayName' });
  t.same(projected.json<{ Resources: Json[] }>().Resources, [
    { schemas: [USER, ENTERPRISE], id: users[1], userName: 'Pupil2@School.example', displayName: 'Anna' },
    { schemas: [GROUP], id: groups[1], displayName: 'Annas klass' },
  ]);
  const noMembers = await search(scim, { excludedAttributes: 'members', filter: 'externalId eq "g-1"' });
  t.notOk('members' in (noMembers.json<{ Resources: Json[] }>().Resources[0] ?? {}), 'excludedAttributes=members');
});

t.test('root search errors are the per-resource ones', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  await seed(scim);
  const cases: [Json, number, string, RegExp][] = [
    [{ filter: 'nosuch eq "x"' }, 400, 'invalidFilter', /Unknown attribute "nosuch"/],
    [{ filter: 'displayName eq' }, 400, 'invalidFilter', /Invalid/],
    [{ filter: 'active eq "maybe"' }, 400, 'invalidFilter', /active/],
    [{ sortBy: 'nosuch' }, 400, 'invalidValue', /Cannot sort by unknown attribute "nosuch"/],
    [{ sortBy: 'displayName', startIndex: 10_000, count: 100 }, 400, 'tooMany', /can page up to 10000 results/],
  ];
  for (const [body, status, scimType, detail] of cases) {
    const res = await search(scim, body);
    t.equal(res.statusCode, status, JSON.stringify(body));
    t.match(res.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: String(status), scimType, detail }, JSON.stringify(body));
  }
  const noSchema = await scim('POST', '/.search', { filter: 'displayName eq "x"' });
  t.equal(noSchema.statusCode, 400);
  t.equal(noSchema.json<Json>().scimType, 'invalidSyntax');
  const anonymous = await app.inject({ method: 'POST', url: '/scim/v2/.search', payload: { schemas: [SEARCH] } });
  t.equal(anonymous.statusCode, 401, 'a credential is needed');
});

t.test('root search sees only its own tenant', async (t) => {
  const { app, headers, db, config, keys } = await testApp(t);
  const { tenantWithToken } = await import('./helpers/app.js');
  const other = await tenantWithToken(db, config, keys, 'Other School', ['other.example']);
  await seed(client(app, other.headers));
  const res = await search(client(app, headers), {});
  t.match(res.json(), { totalResults: 0, Resources: [] });
});

t.test('PATCH with attributes or excludedAttributes answers 200 with the projected resource, a group too', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const { users, groups } = await seed(scim);
  const id = groups[0] ?? '';

  const plain = await scim('PATCH', `/Groups/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Zeta 2' }));
  t.equal(plain.statusCode, 204, 'without them a group PATCH answers 204');
  t.equal(plain.body, '');

  const some = await scim('PATCH', `/Groups/${id}?attributes=displayName`, patch({ op: 'Add', path: 'members', value: [{ value: users[1] }] }));
  t.equal(some.statusCode, 200, some.body);
  t.match(some.headers['content-type'], /^application\/scim\+json/);
  t.equal(some.headers.etag, 'W/"3"');
  t.same(some.json(), { schemas: [GROUP], id, displayName: 'Zeta 2' });

  const all = await scim('PATCH', `/Groups/${id}?excludedAttributes=externalId`, patch({ op: 'Replace', path: 'displayName', value: 'Zeta 3' }));
  t.equal(all.statusCode, 200, all.body);
  t.match(all.json(), { id, displayName: 'Zeta 3', meta: { version: 'W/"4"', resourceType: 'Group' } });
  t.same(all.json<{ members: Json[] }>().members.map((m) => m.value).sort(), [users[0], users[1]].sort(), 'with its members');
  t.notOk('externalId' in all.json<Json>());
  const unchanged = await scim('PATCH', `/Groups/${id}?excludedAttributes=members`, patch());
  t.equal(unchanged.statusCode, 200, 'an empty PATCH too');
  t.notOk('members' in unchanged.json<Json>());
  t.equal(unchanged.headers.etag, 'W/"4"');
  const row = await db.selectFrom('classes').select(['display_name', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
  t.same(row, { display_name: 'Zeta 3', version: 4 });

  const user = await scim('PATCH', `/Users/${users[0] ?? ''}?attributes=title`, patch({ op: 'Replace', path: 'title', value: 'Rektor' }));
  t.equal(user.statusCode, 200);
  t.same(user.json(), { schemas: [USER, ENTERPRISE], id: users[0], title: 'Rektor' });
  const missing = await scim('PATCH', '/Groups/6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11?attributes=displayName', patch({ op: 'Replace', path: 'displayName', value: 'x' }));
  t.equal(missing.statusCode, 404);
});
