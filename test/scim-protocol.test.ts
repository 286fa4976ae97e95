// RFC 7644 behaviour beyond Entra's own sequences: every filter operator,
// pagination and sorting edges, ETags, projection, discovery and errors.
import { sql } from 'kysely';
import t from 'tap';
import { testApp } from './helpers/app.js';
import { ENTERPRISE, GROUP, PORTAL, USER, client, entraUser, patch, type Send } from './helpers/scim.js';

async function seed(scim: Send): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 1; i <= 5; i++) {
    const extra: Record<string, unknown> = { title: i % 2 ? 'Pupil' : 'Teacher', active: i !== 5 };
    if (i === 3) extra.emails = [{ type: 'home', value: 'three@home.example' }, { type: 'work', value: 'pupil3@school.example' }];
    if (i === 4) delete extra.title;
    const res = await scim('POST', '/Users', entraUser(i, extra));
    ids.push(res.json().id as string);
  }
  return ids;
}

const found = async (scim: Send, filter: string): Promise<number[]> => {
  const res = await scim('GET', `/Users?count=100&filter=${encodeURIComponent(filter)}`);
  if (res.statusCode !== 200) throw new Error(`${filter}: ${res.body}`);
  return (res.json().Resources as { userName: string }[]).map((r) => Number(/Pupil(\d+)@/.exec(r.userName)?.[1])).sort();
};

t.test('every filter operator, translated to SQL', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const ids = await seed(scim);
  const cases: [string, number[]][] = [
    ['userName eq "PUPIL2@school.example"', [2]],
    ['userName ne "pupil2@school.example"', [1, 3, 4, 5]],
    ['userName co "IL3"', [3]],
    ['userName sw "pupil1"', [1]],
    ['userName ew "5@school.example"', [5]],
    ['userName gt "pupil3@school.example"', [4, 5]],
    ['userName ge "pupil3@school.example"', [3, 4, 5]],
    ['userName lt "pupil2@school.example"', [1]],
    ['userName le "pupil2@school.example"', [1, 2]],
    ['title pr', [1, 2, 3, 5]],
    ['not (title pr)', [4]],
    ['active eq false', [5]],
    ['active eq True', [1, 2, 3, 4]],
    ['title eq "pupil" and active eq true', [1, 3]],
    ['title eq "Teacher" or userName eq "pupil5@school.example"', [2, 5]],
    ['(title eq "Pupil" or title eq "Teacher") and not (userName sw "pupil1")', [2, 3, 5]],
    ['emails[type eq "home"]', [3]],
    ['emails[type eq "work" and value co "pupil4"]', [4]],
    ['emails.value eq "three@home.example"', [3]],
    ['emails[type eq "work"].value eq "pupil3@school.example"', [3]],
    [`${ENTERPRISE}:employeeNumber eq "1004"`, [4]],
    [`${ENTERPRISE}:employeeNumber gt "1003"`, [4, 5]],
    ['name.familyName eq "number 2"', [2]],
    [`id eq "${ids[0] ?? ''}"`, [1]],
    ['meta.created gt "2000-01-01T00:00:00Z"', [1, 2, 3, 4, 5]],
    ['meta.lastModified lt "2000-01-01T00:00:00Z"', []],
    ['meta.lastModified gt "0001-01-01T00:00:00Z"', [1, 2, 3, 4, 5]],
    ['meta.created gt "0096-02-29"', [1, 2, 3, 4, 5]],
    ['externalId eq "00000000-0000-4000-8000-000000000003"', [3]],
    ['externalId eq "00000000-0000-4000-8000-000000000003" and userName eq "nobody"', []],
    ['displayName eq "x or y"', []],
  ];
  for (const [filter, expected] of cases) t.same(await found(scim, filter), expected, filter);
});

t.test('meta times compare with the value the server showed, to the millisecond', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const user = (await scim('POST', '/Users', entraUser(1))).json();
  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A' })).json();
  for (const [endpoint, resource] of [['/Users', user], ['/Groups', group]] as const) {
    const { lastModified, created } = resource.meta as { lastModified: string; created: string };
    const count = async (filter: string) => (await scim('GET', `${endpoint}?filter=${encodeURIComponent(filter)}`)).json().totalResults as number;
    t.equal(await count(`meta.lastModified eq "${lastModified}"`), 1, `${endpoint}: eq the shown lastModified`);
    t.equal(await count(`meta.lastModified le "${lastModified}"`), 1, `${endpoint}: le`);
    t.equal(await count(`meta.lastModified ge "${lastModified}"`), 1, `${endpoint}: ge`);
    t.equal(await count(`meta.lastModified gt "${lastModified}"`), 0, `${endpoint}: changed since what was shown: nothing`);
    t.equal(await count(`meta.created eq "${created}"`), 1, `${endpoint}: eq the shown created`);
  }
});

t.test('bad filters answer 400 invalidFilter', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  for (const filter of ['userName eq', 'userName xx "a"', '(userName eq "a"', 'nosuch eq "a"', 'name eq "a"', 'active gt true', 'meta.created gt "yesterday"', 'meta.lastModified gt "1"', 'meta.created lt "2024-02-30T00:00:00Z"', 'meta.created lt "2024-13-01"', 'meta.created lt "0099-02-29"', 'meta.created gt "0000-01-01T00:00:00Z"', 'meta.created gt "2024-01-01T00:00:00+16:00"', 'userName eq 5', 'a'.repeat(5000)]) {
    const res = await scim('GET', `/Users?filter=${encodeURIComponent(filter)}`);
    t.equal(res.statusCode, 400, filter.slice(0, 40));
    t.match(res.json(), { status: '400', scimType: 'invalidFilter' }, filter.slice(0, 40));
  }
});

t.test('pagination: startIndex and count, exact totals, stable order', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  await seed(scim);
  const all = (await scim('GET', '/Users')).json();
  t.equal(all.totalResults, 5);
  t.equal(all.itemsPerPage, 5);
  const seen: string[] = [];
  for (let start = 1; start <= 5; start += 2) {
    const page = (await scim('GET', `/Users?startIndex=${start}&count=2`)).json();
    t.equal(page.totalResults, 5);
    t.equal(page.startIndex, start);
    seen.push(...(page.Resources as { id: string }[]).map((r) => r.id));
  }
  t.same(seen, (all.Resources as { id: string }[]).map((r) => r.id), 'pages concatenate to the whole list');
  const zero = (await scim('GET', '/Users?count=0')).json();
  t.same({ total: zero.totalResults, items: zero.itemsPerPage, resources: zero.Resources }, { total: 5, items: 0, resources: [] }, 'count=0 counts only');
  const beyond = (await scim('GET', '/Users?startIndex=50')).json();
  t.same({ total: beyond.totalResults, items: beyond.itemsPerPage }, { total: 5, items: 0 });
  const negative = (await scim('GET', '/Users?startIndex=-3&count=-1')).json();
  t.same({ start: negative.startIndex, items: negative.itemsPerPage }, { start: 1, items: 0 }, 'values below the minimum are raised to it');
  const capped = (await scim('GET', '/Users?count=100000')).json();
  t.equal(capped.itemsPerPage, 5, 'a huge count is capped at the maximum page size');
  for (const bad of ['startIndex=abc', 'count=1.5', 'sortOrder=sideways']) {
    const res = await scim('GET', `/Users?${bad}`);
    t.equal(res.statusCode, 400, bad);
    t.equal(res.json().scimType, 'invalidValue', bad);
  }
});

t.test('sortBy and sortOrder', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  await seed(scim);
  const names = async (q: string) => ((await scim('GET', `/Users?${q}`)).json().Resources as { userName: string }[]).map((r) => r.userName);
  t.same(await names('sortBy=userName'), [1, 2, 3, 4, 5].map((n) => `Pupil${n}@School.example`));
  t.same(await names('sortBy=userName&sortOrder=descending'), [5, 4, 3, 2, 1].map((n) => `Pupil${n}@School.example`));
  t.same(await names(`sortBy=${ENTERPRISE}:employeeNumber&sortOrder=descending&count=2`), ['Pupil5@School.example', 'Pupil4@School.example']);
  t.same(await names('sortBy=emails&count=1'), ['Pupil1@School.example'], 'a multi-valued attribute sorts by its primary value');
  const res = await scim('GET', '/Users?sortBy=nosuch');
  t.equal(res.statusCode, 400);
});

t.test('attributes and excludedAttributes', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const some = (await scim('GET', `/Users/${id}?attributes=userName,name.givenName,${ENTERPRISE}:employeeNumber`)).json();
  t.same(some, { schemas: [USER, ENTERPRISE], id, userName: 'Pupil1@School.example', name: { givenName: 'Pupil' }, [ENTERPRISE]: { employeeNumber: '1001' } });
  const without = (await scim('GET', `/Users/${id}?excludedAttributes=emails,name,${ENTERPRISE}:department`)).json();
  t.notOk(without.emails);
  t.notOk(without.name);
  t.same(without[ENTERPRISE], { employeeNumber: '1001' });
  t.ok(without.meta, 'meta stays unless excluded');
  const listed = (await scim('GET', '/Users?attributes=emails.value')).json();
  t.same(listed.Resources[0], { schemas: [USER, ENTERPRISE], id, emails: [{ value: 'pupil1@school.example' }] });

  // Sub-attributes excluded, and whole extensions by their URN.
  const subs = (await scim('GET', `/Users/${id}?excludedAttributes=name.givenName,emails.value,${ENTERPRISE}`)).json();
  t.same(subs.name, { familyName: 'Number 1', formatted: 'Pupil Number 1' }, 'name without givenName');
  t.same(subs.emails, [{ primary: true, type: 'work' }], 'each e-mail without its value');
  t.notOk(ENTERPRISE in subs, 'the whole extension excluded');
  t.equal(subs.userName, 'Pupil1@School.example');
  const extension = (await scim('GET', `/Users/${id}?attributes=${ENTERPRISE}`)).json();
  t.same(extension, { schemas: [USER, ENTERPRISE], id, [ENTERPRISE]: { employeeNumber: '1001', department: 'Norra skolan' } });

  // A class's members by any name of theirs, URN-qualified sub-attributes too; and a sub-attribute of them excluded.
  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A', members: [{ value: id }] })).json().id as string;
  for (const name of ['members.value', `${GROUP}:members.value`, `${GROUP}:Members.Value`, 'MEMBERS']) {
    const read = (await scim('GET', `/Groups/${group}?attributes=${encodeURIComponent(name)}`)).json();
    t.same(read.members?.map((m: { value: string }) => m.value), [id], `attributes=${name}`);
  }
  const noDisplay = (await scim('GET', `/Groups/${group}?excludedAttributes=members.display`)).json();
  t.same(noDisplay.members, [{ value: id, type: 'User', $ref: `https://scim.example.test/scim/v2/Users/${id}` }]);
  t.notOk('members' in (await scim('GET', `/Groups/${group}?excludedAttributes=${encodeURIComponent(`${GROUP}:members`)}`)).json());
  t.notOk('members' in (await scim('GET', `/Groups/${group}?excludedAttributes=members`)).json());
  for (const filter of [`members[value eq "${id.toUpperCase()}"]`, `members.value eq "${id.toUpperCase()}"`, `members[value eq "${id}"]`]) {
    const found = (await scim('GET', `/Groups?excludedAttributes=members&filter=${encodeURIComponent(filter)}`)).json();
    t.same(found.Resources.map((r: { id: string }) => r.id), [group], `${filter}: a member id in any case (caseExact false)`);
  }
  const search = await scim('POST', '/Users/.search', {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:SearchRequest'],
    filter: 'userName eq "pupil1@school.example"',
    attributes: ['userName'],
    startIndex: 1,
    count: 10,
  });
  t.equal(search.statusCode, 200);
  t.same(search.json().Resources, [{ schemas: [USER, ENTERPRISE], id, userName: 'Pupil1@School.example' }]);
  const badSearch = await scim('POST', '/Users/.search', { filter: 'userName eq "x"' });
  t.equal(badSearch.statusCode, 400);
  t.equal(badSearch.json().scimType, 'invalidSyntax');
});

t.test('attributes naming several sub-attributes of one attribute return them all', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const manager = { value: '00000000-0000-4000-8000-000000000999' };
  const id = (await scim('POST', '/Users', entraUser(1, { [ENTERPRISE]: { employeeNumber: '1001', department: 'Norra skolan', manager } }))).json().id as string;
  const email = { type: 'work', value: 'pupil1@school.example' };

  const one = await scim('GET', `/Users/${id}?attributes=emails.value,emails.type`);
  t.equal(one.statusCode, 200);
  t.same(one.json(), { schemas: [USER, ENTERPRISE], id, emails: [email] }, 'the value and the type of each e-mail');
  t.strictSame(Object.keys(one.json().emails[0]).sort(), ['type', 'value'], 'and nothing else of it');
  const listed = (await scim('GET', '/Users?attributes=name.givenName,emails.value,emails.primary')).json();
  t.same(listed.Resources[0], { schemas: [USER, ENTERPRISE], id, name: { givenName: 'Pupil' }, emails: [{ primary: true, value: email.value }] });
  const searched = await scim('POST', '/Users/.search', {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:SearchRequest'],
    attributes: ['emails.value', 'emails.type'],
  });
  t.same(searched.json().Resources[0].emails, [email], 'the same in a search');
  const stored = (await scim('GET', `/Users/${id}`)).json()[ENTERPRISE];
  t.strictSame(Object.keys(stored.manager).sort(), ['$ref', 'value'], 'the manager as stored: its id and where it is');
  const inExtension = (await scim('GET', `/Users/${id}?attributes=${ENTERPRISE}:manager.value,${ENTERPRISE}:manager.$ref,${ENTERPRISE}:department`)).json();
  t.same(inExtension[ENTERPRISE], { manager: stored.manager, department: 'Norra skolan' }, 'an extension attribute keeps both of its sub-attributes and its sibling');
  const wholeAndPart = (await scim('GET', `/Users/${id}?attributes=${ENTERPRISE}:manager.value,${ENTERPRISE}`)).json();
  t.same(wholeAndPart[ENTERPRISE], stored, 'an extension asked for whole stays whole');
  t.same((await scim('GET', `/Users/${id}?attributes=emails,emails.value`)).json().emails, [{ primary: true, ...email }], 'an attribute asked for whole stays whole');
  t.notOk('emails' in (await scim('GET', `/Users/${id}?attributes=userName,emails.display`)).json(), 'no element has the sub-attribute: the attribute is left out');
  t.same((await scim('GET', `/Users/${id}?attributes=id.foo,schemas.bar,userName`)).json(), { schemas: [USER, ENTERPRISE], id, userName: 'Pupil1@School.example' }, 'id and schemas are always returned whole');

  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A', members: [{ value: id }] })).json().id as string;
  const members = (await scim('GET', `/Groups/${group}?attributes=members.value,members.display`)).json().members;
  t.same(members, [{ value: id, display: 'Pupil 1' }], "a class's members keep their ids beside their names");

  // Every attribute of an extension excluded leaves no empty object behind.
  const excluded = (await scim('GET', `/Users/${id}?excludedAttributes=${ENTERPRISE}:employeeNumber,${ENTERPRISE}:department,${ENTERPRISE}:manager`)).json();
  t.notOk(ENTERPRISE in excluded, 'no empty extension object');
  t.equal(excluded.userName, 'Pupil1@School.example');
});

t.test("a filter or sortBy naming the other resource type's core schema is refused", async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  await scim('POST', '/Users', entraUser(1));
  await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Pupil 1' });
  for (const [url, scimType] of [
    [`/Groups?filter=${encodeURIComponent(`${USER}:displayName eq "Pupil 1"`)}`, 'invalidFilter'],
    [`/Users?filter=${encodeURIComponent(`${GROUP}:displayName eq "Pupil 1"`)}`, 'invalidFilter'],
    [`/Users?sortBy=${encodeURIComponent(`${GROUP}:displayName`)}`, 'invalidValue'],
  ] as const) {
    const res = await scim('GET', url);
    t.equal(res.statusCode, 400, url);
    t.equal(res.json().scimType, scimType, url);
  }
  for (const [url, name] of [
    [`/Users?filter=${encodeURIComponent(`${USER}:displayName eq "Pupil 1"`)}`, 'Pupil 1'],
    [`/Groups?filter=${encodeURIComponent(`${GROUP}:displayName eq "Pupil 1"`)}`, 'Pupil 1'],
  ] as const) {
    const res = await scim('GET', url);
    t.equal(res.statusCode, 200, url);
    t.same(res.json().Resources.map((r: { displayName: string }) => r.displayName), [name], `${url}: its own core schema is the bare name`);
  }
});

t.test('a member batch for a group id that is no id answers 404, as every other request for it does', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const member = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  for (const body of [
    patch({ op: 'Add', path: 'members', value: [{ value: member }] }),
    patch({ op: 'Remove', path: 'members', value: [{ value: member }] }),
    patch({ op: 'remove', path: `members[value eq "${member}"]` }),
    patch({ op: 'replace', path: 'members', value: [] }),
  ]) {
    const res = await scim('PATCH', '/Groups/not-a-class-id', body);
    t.equal(res.statusCode, 404, JSON.stringify(body.Operations));
    t.match(res.json(), { status: '404', detail: 'No group not-a-class-id.' });
    t.notOk('scimType' in res.json());
  }
});

t.test('an attribute or extension left with nothing in it is not stored, nor answered, as an empty object', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const stored = async () => (await db.selectFrom('accounts').select('scim').where('id', '=', id).executeTakeFirstOrThrow()).scim as Record<string, unknown>;

  const emptied = await scim('PATCH', `/Users/${id}`, patch({ op: 'Remove', path: 'name.givenName' }, { op: 'Remove', path: 'name.familyName' }, { op: 'Remove', path: 'name.formatted' }));
  t.equal(emptied.statusCode, 200);
  t.notOk('name' in emptied.json(), 'no empty name answered');
  t.notOk('name' in (await stored()), 'nor stored');
  t.notOk('name' in (await scim('GET', `/Users/${id}`)).json());

  const unknownOnly = await scim('PUT', `/Users/${id}`, entraUser(1, { schemas: [USER, ENTERPRISE, PORTAL], [PORTAL]: { noSuchAttribute: 'x' } }));
  t.equal(unknownOnly.statusCode, 200);
  t.notOk(PORTAL in unknownOnly.json(), 'an extension whose attributes were all unknown is not answered');
  t.notOk(PORTAL in (await stored()), 'nor stored');
  t.same((await stored())[ENTERPRISE], { employeeNumber: '1001', department: 'Norra skolan' }, 'an extension with attributes stays');
});

t.test('ETags: versions, If-Match and If-None-Match', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const created = await scim('POST', '/Users', entraUser(1));
  const id = created.json().id as string;
  const v1 = created.headers.etag as string;
  t.equal(v1, 'W/"1"');
  t.equal((await scim('GET', `/Users/${id}`, undefined, { 'if-none-match': v1 })).statusCode, 304, 'unchanged: 304');
  const stale = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'title', value: 'x' }), { 'if-match': 'W/"7"' });
  t.equal(stale.statusCode, 412, 'a stale If-Match is refused');
  t.equal(stale.json().status, '412');
  const ok = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'title', value: 'x' }), { 'if-match': v1 });
  t.equal(ok.statusCode, 200);
  t.equal(ok.headers.etag, 'W/"2"', 'every write moves the version');
  t.equal((await scim('GET', `/Users/${id}`, undefined, { 'if-none-match': v1 })).statusCode, 200, 'changed: 200');
  t.equal((await scim('PUT', `/Users/${id}`, entraUser(1), { 'if-match': v1 })).statusCode, 412);
  t.equal((await scim('DELETE', `/Users/${id}`, undefined, { 'if-match': v1 })).statusCode, 412);
  t.equal((await scim('DELETE', `/Users/${id}`, undefined, { 'if-match': '*' })).statusCode, 204);
  // If-None-Match on a change: refused while the resource is at a listed version.
  const other = await scim('POST', '/Users', entraUser(2));
  const otherId = other.json().id as string;
  const title = patch({ op: 'replace', path: 'title', value: 'y' });
  for (const [method, body] of [['PATCH', title], ['PUT', entraUser(2)], ['DELETE', undefined]] as const) {
    for (const tag of ['*', 'W/"1"', '"1"', 'W/"5", W/"1"']) {
      const refused = await scim(method, `/Users/${otherId}`, body, { 'if-none-match': tag });
      t.equal(refused.statusCode, 412, `${method} with If-None-Match: ${tag} at W/"1"`);
      t.equal(refused.json().status, '412');
    }
  }
  const unchanged = await scim('GET', `/Users/${otherId}`);
  t.equal(unchanged.headers.etag, 'W/"1"', 'no refused change was written');
  t.notOk('title' in unchanged.json(), 'no refused change was written');
  const other2 = await scim('PATCH', `/Users/${otherId}`, title, { 'if-none-match': 'W/"7"' });
  t.equal(other2.statusCode, 200, 'a version other than the current one lets the change through');
  t.equal(other2.json().title, 'y');
  t.equal((await scim('DELETE', '/Users/6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11', undefined, { 'if-none-match': '*' })).statusCode, 404, 'nothing there: 404 as without it');
  const group = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'G' });
  t.equal((await scim('PATCH', `/Groups/${group.json().id as string}`, patch({ op: 'replace', path: 'displayName', value: 'H' }), { 'if-none-match': '*' })).statusCode, 412);
  const stalePatch = await scim('PATCH', `/Groups/${group.json().id as string}`, patch({ op: 'replace', path: 'displayName', value: 'H' }), { 'if-match': 'W/"9"' });
  t.equal(stalePatch.statusCode, 412);
});

t.test('errors carry the right status and scimType, never 500', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const groupId = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Errors', members: [{ value: id }] })).json().id as string;
  const cases: [string, string, unknown, number, string | undefined][] = [
    ['PATCH', `/Groups/${groupId}`, patch({ op: 'add', path: 'members', value: null }), 400, 'invalidValue'],
    ['PATCH', `/Groups/${groupId}`, patch({ op: 'replace', path: 'members' }), 400, 'invalidValue'],
    ['PATCH', `/Groups/${groupId}`, patch({ op: 'add', value: { members: null } }), 400, 'invalidValue'],
    ['POST', '/Users', { schemas: [USER, ENTERPRISE], userName: 'ext@school.example', [ENTERPRISE]: 'Science' }, 400, 'invalidValue'],
    ['PATCH', `/Users/${id}`, patch({ op: 'add', value: { [ENTERPRISE]: 'Science' } }), 400, 'invalidValue'],
    ['PATCH', `/Users/${id}`, patch({ op: 'replace', path: ENTERPRISE, value: 'Science' }), 400, 'invalidValue'],
    ['POST', '/Users', '{"userName": ', 400, 'invalidSyntax'],
    ['POST', '/Users', '[1,2]', 400, 'invalidSyntax'],
    ['POST', '/Users', { schemas: [USER], userName: 5 }, 400, 'invalidValue'],
    ['POST', '/Users', { schemas: [USER] }, 400, 'invalidValue'],
    ['POST', '/Users', { schemas: [USER], userName: '  ' }, 400, 'invalidValue'],
    ['POST', '/Users', { schemas: [USER], userName: 'a@b.c', emails: { value: 'x' } }, 400, 'invalidValue'],
    ['PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'nosuch', value: 1 }), 400, 'invalidPath'],
    ['PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'emails[type eq', value: 1 }), 400, 'invalidPath'],
    ['PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'id', value: 'other' }), 400, 'mutability'],
    ['PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'meta.created', value: '2020-01-01T00:00:00Z' }), 400, 'mutability'],
    ['PATCH', `/Users/${id}`, patch({ op: 'frobnicate', path: 'title', value: 1 }), 400, 'invalidSyntax'],
    ['PATCH', `/Users/${id}`, patch({ op: 'add', path: 'title' }), 400, 'invalidValue'],
    ['PATCH', `/Users/${id}`, patch({ op: 'remove' }), 400, 'noTarget'],
    ['PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'phoneNumbers[type eq "fax" or type eq "x"].value', value: '1' }), 400, 'noTarget'],
    ['PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'active', value: 'maybe' }), 400, 'invalidValue'],
    ['PATCH', `/Users/${id}`, { Operations: [] }, 400, 'invalidSyntax'],
    ['GET', '/Users/6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11', undefined, 404, undefined],
    ['GET', '/Users/not-a-uuid', undefined, 404, undefined],
    ['PATCH', '/Users/6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11', patch({ op: 'replace', path: 'title', value: 'x' }), 404, undefined],
    ['DELETE', '/Users', undefined, 405, undefined],
    ['PUT', '/Groups', undefined, 405, undefined],
    ['POST', `/Users/${id}`, {}, 405, undefined],
    ['DELETE', '/ServiceProviderConfig', undefined, 405, undefined],
    ['GET', '/Users/.search', undefined, 405, undefined],
    ['GET', `/Schemas?filter=${encodeURIComponent('id eq "x"')}`, undefined, 403, undefined],
    ['GET', '/ResourceTypes?filter=', undefined, 403, undefined],
    ['DELETE', '/Schemas?filter=x', undefined, 405, undefined],
    ['DELETE', '/Groups/.search', undefined, 405, undefined],
    ['POST', '/Users', 'x'.repeat(1_100_000), 413, undefined],
    ['POST', '/Users', { schemas: [USER], userName: 'nul\u0000byte@school.example' }, 400, 'invalidValue'],
    ['PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'title', value: 'a\u0000b' }), 400, 'invalidValue'],
    ['GET', `/Users?filter=${encodeURIComponent('userName eq "a\\u0000"')}`, undefined, 400, 'invalidValue'],
  ];
  for (const [method, url, body, status, scimType] of cases) {
    const res = await scim(method, url, body);
    const label = `${method} ${url} ${typeof body === 'string' ? body.slice(0, 20) : JSON.stringify(body)?.slice(0, 80) ?? ''}`;
    t.equal(res.statusCode, status, `${label}: ${res.body.slice(0, 200)}`);
    t.match(res.headers['content-type'], /application\/scim\+json/, label);
    const json = res.json();
    t.equal(json.status, String(status), label);
    t.same(json.schemas, ['urn:ietf:params:scim:api:messages:2.0:Error'], label);
    if (scimType) t.equal(json.scimType, scimType, label);
    t.type(json.detail, 'string', label);
  }
  const unsupported = await scim('DELETE', '/Users', undefined);
  t.match(unsupported.headers.allow, /GET/);
  t.equal((await app.inject({ method: 'GET', url: '/scim/v2/Schemas?filter=x' })).statusCode, 401, 'a filter tells nothing before the credential');
  const group = (await scim('GET', `/Groups/${groupId}`)).json();
  t.same(group.members.map((m: { value: string }) => m.value), [id], 'a replace of members without a value left the class as it was');
  t.equal(group.meta.version, 'W/"1"');
});

t.test('a PATCH path answers the same every time it comes, and a refused one is refused again', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const ids = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  for (const round of [1, 2]) {
    for (const [i, id] of ids.entries()) {
      const refused = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'name.nosuch', value: 'x' }));
      t.equal(refused.statusCode, 400, `round ${round}, user ${i + 1}: refused`);
      t.equal(refused.json().scimType, 'invalidPath');
      t.match(refused.json().detail, /name\.nosuch/);
      // The same attribute as Entra spells it and in another case.
      for (const path of ['name.givenName', 'NAME.GIVENNAME']) {
        const value = `${path} ${round}.${i}`;
        const changed = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path, value }));
        t.equal(changed.statusCode, 200, `round ${round}, user ${i + 1}, ${path}`);
        t.equal(changed.json().name.givenName, value);
        const row = await db.selectFrom('accounts').select('given_name').where('id', '=', id).executeTakeFirstOrThrow();
        t.equal(row.given_name, value, 'the row has it');
      }
    }
  }
  const filtered = await scim('PATCH', `/Users/${ids[0] ?? ''}`, patch({ op: 'replace', path: 'emails[type eq "work"].value', value: 'new.one@school.example' }));
  t.equal(filtered.statusCode, 200);
  t.same(filtered.json().emails, [{ value: 'new.one@school.example', type: 'work', primary: true }]);
  const again = await scim('PATCH', `/Users/${ids[1] ?? ''}`, patch({ op: 'replace', path: 'emails[type eq "work"].value', value: 'new.two@school.example' }));
  t.same(again.json().emails, [{ value: 'new.two@school.example', type: 'work', primary: true }], 'the filtered path resolved before applies to the next user');
});

t.test('discovery documents are truthful and located at PUBLIC_URL', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const spc = (await scim('GET', '/ServiceProviderConfig')).json();
  t.match(spc, {
    patch: { supported: true },
    filter: { supported: true, maxResults: 1000 },
    sort: { supported: true },
    etag: { supported: true },
    bulk: { supported: false },
    changePassword: { supported: false },
    authenticationSchemes: [
      { type: 'oauthbearertoken', documentationUri: 'https://scim.example.test/docs/entra-setup' },
      { type: 'oauth2', specUri: 'https://www.rfc-editor.org/info/rfc6749', documentationUri: 'https://scim.example.test/docs/entra-setup' },
    ],
    meta: { location: 'https://scim.example.test/scim/v2/ServiceProviderConfig' },
  });
  t.equal(spc.authenticationSchemes.length, 2, 'the Secret Token and the OAuth client credentials grant, the two credentials a tenant is given');
  const schemas = (await scim('GET', '/Schemas')).json();
  t.same(
    (schemas.Resources as { id: string }[]).map((s) => s.id).sort(),
    [ENTERPRISE, 'urn:ietf:params:scim:schemas:extension:portal:2.0:User', GROUP, USER].sort(),
  );
  const text = JSON.stringify(schemas);
  t.notMatch(text, /null/, 'no nulls');
  t.notMatch(text, /"name":"password"|"name":"groups"/, 'no attributes we do not keep');
  const characteristics = [...text.matchAll(/"(?:mutability|returned|uniqueness)":"([^"]*)"/g)].map((m) => m[1]);
  t.ok(characteristics.length > 20);
  t.ok(
    characteristics.every((v) => ['readWrite', 'readOnly', 'immutable', 'writeOnly', 'always', 'never', 'default', 'request', 'none', 'server', 'global'].includes(v ?? '')),
    'characteristic values are the RFC camelCase words',
  );
  const user = await scim('GET', `/Schemas/${USER}`);
  t.equal(user.statusCode, 200);
  t.equal(user.json().meta.location, `https://scim.example.test/scim/v2/Schemas/${USER}`);
  t.equal((await scim('GET', '/Schemas/urn:nope')).statusCode, 404);
  const types = (await scim('GET', '/ResourceTypes')).json();
  t.same((types.Resources as { id: string }[]).map((r) => r.id), ['User', 'Group']);
  const userType = (await scim('GET', '/ResourceTypes/User')).json();
  t.match(userType, { endpoint: '/Users', schema: USER, schemaExtensions: [{ schema: ENTERPRISE, required: false }, { required: false }] });
  t.equal((await scim('GET', '/ResourceTypes/Nope')).statusCode, 404);
});

/** Entra's user 1 with these e-mails, and any other attributes. */
const withEmails = (scim: Send, emails: Record<string, unknown>[], extra: Record<string, unknown> = {}) => scim('POST', '/Users', entraUser(1, { emails, ...extra }));

t.test('a PATCH remove through a value filter matches as the schema compares: a type or an address in any case', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const created = await withEmails(
    scim,
    [
      { type: 'work', value: 'pupil1@school.example', primary: true },
      { type: 'home', value: 'Home@Home.example' },
      { type: 'other', value: 'other@home.example' },
    ],
    {
      phoneNumbers: [{ type: 'mobile', value: '+46 70 000 00 01' }, { type: 'work', value: '+46 8 000 00 01' }],
      addresses: [{ type: 'Work', locality: 'Umeå', postalCode: '901 87' }],
    },
  );
  const id = created.json().id as string;
  const removed = await scim(
    'PATCH',
    `/Users/${id}`,
    patch(
      { op: 'remove', path: 'emails[type eq "HOME"]' },
      { op: 'remove', path: 'emails[value eq "OTHER@home.example"]' },
      { op: 'remove', path: 'phoneNumbers[type eq "Mobile"].value' },
      { op: 'remove', path: 'addresses[type eq "work"].locality' },
      { op: 'remove', path: 'emails[type eq "fax"]' },
    ),
  );
  t.equal(removed.statusCode, 200, removed.body);
  const user = removed.json();
  t.same(user.emails, [{ type: 'work', value: 'pupil1@school.example', primary: true }], 'both e-mails removed, whatever their case');
  t.same(user.phoneNumbers, [{ type: 'work', value: '+46 8 000 00 01' }], 'a phone number without its value goes whole');
  t.same(user.addresses, [{ type: 'Work', postalCode: '901 87' }], 'an address keeps what was not removed');
  t.equal(user.meta.version, 'W/"2"', 'one write');
  const row = await db.selectFrom('accounts').select(['email', 'scim']).where('id', '=', id).executeTakeFirstOrThrow();
  t.equal(row.email, 'pupil1@school.example');
  t.same((row.scim as { emails: unknown[] }).emails, user.emails, 'stored as answered');
  const again = await scim('PATCH', `/Users/${id}`, patch({ op: 'remove', path: 'emails[type eq "HOME"]' }));
  t.equal(again.json().meta.version, 'W/"2"', 'nothing left to remove: no write');
  // A replace with "" through a filter removes as a remove does.
  const emptied = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'phoneNumbers[type eq "WORK"].value', value: '' }));
  t.equal(emptied.statusCode, 200, emptied.body);
  t.notOk('phoneNumbers' in emptied.json(), 'the last phone number went whole');
});

t.test('one primary value per attribute: a PATCH that makes one primary takes it from the others, and of several sent the first keeps it', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const primaries = (resource: { emails: { primary?: boolean; value: string }[] }) => resource.emails.filter((e) => e.primary === true).map((e) => e.value);
  const created = await withEmails(scim, [
    { type: 'work', value: 'pupil1@school.example', primary: true },
    { type: 'home', value: 'home@home.example', primary: 'True' },
  ]);
  t.equal(created.statusCode, 201, created.body);
  const id = created.json().id as string;
  t.same(primaries(created.json()), ['pupil1@school.example'], 'a create: the first primary keeps it');
  t.same(created.json().emails[1], { type: 'home', value: 'home@home.example', primary: false });

  const made = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'emails[type eq "home"].primary', value: true }));
  t.equal(made.statusCode, 200, made.body);
  t.same(primaries(made.json()), ['home@home.example'], 'the value a PATCH makes primary takes it from the other');

  const added = await scim('PATCH', `/Users/${id}`, patch({ op: 'add', path: 'emails', value: [{ type: 'other', value: 'other@home.example', primary: true }] }));
  t.same(primaries(added.json()), ['other@home.example'], 'so does a value added as primary');
  const row = await db.selectFrom('accounts').select('scim').where('id', '=', id).executeTakeFirstOrThrow();
  t.same(primaries(row.scim as { emails: { primary?: boolean; value: string }[] }), ['other@home.example'], 'stored as answered');

  const put = await scim('PUT', `/Users/${id}`, entraUser(1, { emails: [{ type: 'work', value: 'a@school.example', primary: true }, { type: 'home', value: 'b@home.example', primary: true }] }));
  t.same(primaries(put.json()), ['a@school.example'], 'a replace: the first primary keeps it');

  // The primary value changed in place and another made primary in one message: the one made primary keeps it.
  const both = await scim(
    'PATCH',
    `/Users/${id}`,
    patch({ op: 'replace', path: 'emails[type eq "work"].value', value: 'c@school.example' }, { op: 'add', path: 'emails', value: [{ type: 'other', value: 'd@home.example', primary: true }] }),
  );
  t.same(primaries(both.json()), ['d@home.example'], both.body);

  // A removal before the primary moves the places: a value added as primary still takes it.
  const moved = await scim(
    'PATCH',
    `/Users/${id}`,
    patch({ op: 'remove', path: 'emails[type eq "work"]' }, { op: 'add', path: 'emails', value: [{ type: 'other', value: 'e@home.example', primary: true }] }),
  );
  t.same(primaries(moved.json()), ['e@home.example'], moved.body);

  // A document stored with two primaries (before this rule) is put right with the next change, on either PATCH path, never alone.
  const twice = [{ type: 'work', value: 'x@school.example', primary: true }, { type: 'home', value: 'y@home.example', primary: true }];
  await db.updateTable('accounts').set({ scim: sql`jsonb_set(scim, '{emails}', ${JSON.stringify(twice)}::jsonb)` }).where('id', '=', id).execute();
  const version = (await scim('GET', `/Users/${id}`)).json().meta.version as string;
  const same = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'emails[type eq "home"].value', value: 'y@home.example' }));
  t.equal(same.json().meta.version, version, 'a change to nothing writes nothing');
  const direct = await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'title', value: 'Pupil' }));
  t.same(primaries(direct.json()), ['x@school.example'], 'the direct path: the first keeps it');
});
