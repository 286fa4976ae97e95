// What one list answer may carry: users' documents up to LIST_DOCUMENT_BYTES
// together, classes' members up to LIST_MEMBERS, whatever count asks for and
// however large a tenant's resources were made. A page past it holds fewer
// resources (at least one), itemsPerPage says how many, and paging on from
// startIndex reaches every resource once.
import { sql } from 'kysely';
import t from 'tap';
import { LIST_DOCUMENT_BYTES, LIST_MEMBERS, MAX_STRING_LENGTH, MAX_VALUES_PER_ATTRIBUTE, fitting } from '../src/scim/limits.js';
import { testApp } from './helpers/app.js';
import { GROUP, USER, client } from './helpers/scim.js';

interface ListAnswer {
  totalResults: number;
  startIndex: number;
  itemsPerPage: number;
  Resources: { id: string; userName?: string; members?: unknown[] }[];
}

t.test('a page of the budget: at least one, and none past the one that crosses it', async (t) => {
  t.equal(fitting([], 10), 0);
  t.equal(fitting([4, 4, 4], 10), 2);
  t.equal(fitting([4, 6, 1], 10), 2, 'exactly the budget fits');
  t.equal(fitting([11, 1], 10), 1, 'one larger than the budget is a page of its own');
  t.equal(fitting([1, 2, 3], 10), 3);
});

t.test('users whose documents are large come fewer to a page, and paging on reaches each once', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  // About 0.4 MB each: as many roles as a user may have, each as long as a value may be.
  const roles = Array.from({ length: MAX_VALUES_PER_ATTRIBUTE }, (_, i) => ({ value: `${String(i).padStart(4, '0')}${'r'.repeat(MAX_STRING_LENGTH - 10)}`, type: 'app' }));
  const userName = (i: number) => `large${String(i).padStart(2, '0')}@school.example`;
  const large = 12;
  for (let i = 1; i <= large; i++) {
    t.equal((await scim('POST', '/Users', { schemas: [USER], userName: userName(i), roles })).statusCode, 201, `user ${i} is created`);
  }
  t.equal((await scim('POST', '/Users', { schemas: [USER], userName: 'small@school.example' })).statusCode, 201);
  const perUser = JSON.stringify(roles).length;
  const fit = Math.floor(LIST_DOCUMENT_BYTES / perUser);
  t.ok(fit >= 2 && fit < large, `${fit} large users fit in a page`);

  const seen: string[] = [];
  for (let startIndex = 1, pages = 0; startIndex <= large + 1 && pages < 20; pages++) {
    const res = await scim('GET', `/Users?count=100&sortBy=userName&startIndex=${startIndex}`);
    t.equal(res.statusCode, 200);
    const page = res.json<ListAnswer>();
    t.equal(page.totalResults, large + 1, 'the total is every user');
    t.equal(page.itemsPerPage, page.Resources.length, 'itemsPerPage says how many this page holds');
    t.ok(page.itemsPerPage >= 1 && page.itemsPerPage <= fit + 1, `page at ${startIndex}: ${page.itemsPerPage} users`);
    t.ok(res.body.length <= LIST_DOCUMENT_BYTES + perUser + 10_000, `an answer of ${res.body.length} bytes`);
    seen.push(...page.Resources.map((r) => r.userName ?? ''));
    startIndex += page.itemsPerPage;
  }
  t.same(seen, [...Array.from({ length: large }, (_, i) => userName(i + 1)), 'small@school.example'], 'every user once, in order');
  const one = (await scim('GET', '/Users?count=1')).json<ListAnswer>();
  t.equal(one.itemsPerPage, 1, 'a page of one is one, however large');
  const small = (await scim('GET', `/Users?filter=${encodeURIComponent('userName sw "small"')}&count=100`)).json<ListAnswer>();
  t.equal(small.itemsPerPage, 1, 'a filter that finds small users is answered whole');
});

t.test('a search from the root pages on where a type’s list was cut, so every resource comes once, sorted or not', async (t) => {
  const { app, headers } = await testApp(t);
  const scim = client(app, headers);
  const roles = Array.from({ length: MAX_VALUES_PER_ATTRIBUTE }, (_, i) => ({ value: `${String(i).padStart(4, '0')}${'r'.repeat(MAX_STRING_LENGTH - 10)}`, type: 'app' }));
  const large = 12;
  const names: string[] = [];
  for (let i = 1; i <= large; i++) {
    const displayName = `Person ${String(i).padStart(2, '0')}`;
    t.equal((await scim('POST', '/Users', { schemas: [USER], userName: `p${i}@school.example`, displayName, roles })).statusCode, 201);
    names.push(displayName);
  }
  for (const displayName of ['Class A', 'Class Z']) {
    t.equal((await scim('POST', '/Groups', { schemas: [GROUP], displayName })).statusCode, 201);
    names.push(displayName);
  }
  const SEARCH = 'urn:ietf:params:scim:api:messages:2.0:SearchRequest';
  const page = async (startIndex: number, extra: Record<string, unknown> = {}) => {
    const res = await scim('POST', '/.search', { schemas: [SEARCH], startIndex, count: 100, ...extra });
    return { status: res.statusCode, body: res.json<{ totalResults: number; itemsPerPage: number; Resources: { displayName: string }[]; scimType?: string; detail?: string }>() };
  };
  const seen: string[] = [];
  for (let startIndex = 1, pages = 0; pages < 30; pages++) {
    const { status, body } = await page(startIndex);
    t.equal(status, 200);
    t.equal(body.totalResults, names.length);
    t.ok(body.itemsPerPage >= 1, `page at ${startIndex}: ${body.itemsPerPage}`);
    seen.push(...body.Resources.map((r) => r.displayName));
    startIndex += body.itemsPerPage;
    if (startIndex > body.totalResults) break;
  }
  t.same([...seen].sort(), [...names].sort(), 'every resource once');
  t.same(seen.slice(-2).sort(), ['Class A', 'Class Z'], 'the classes after every user');

  // Sorted across both types, both lists are read from their start: as far as the users' documents allow.
  const first = await page(1, { sortBy: 'displayName' });
  t.equal(first.status, 200);
  t.ok(first.body.itemsPerPage >= 1 && first.body.itemsPerPage < names.length, `the first sorted page holds ${first.body.itemsPerPage}`);
  t.same(first.body.Resources.map((r) => r.displayName), [...names].sort().slice(0, first.body.itemsPerPage), 'in order, none left out before the last');
  const deep = await page(names.length, { sortBy: 'displayName' });
  t.equal(deep.status, 400, 'a page past what one answer may read');
  t.match(deep.body, { scimType: 'tooMany', detail: /search \/Users or \/Groups instead/ });
});

t.test('classes with many members come fewer to a page; without members, all of them', async (t) => {
  const { app, headers, db, tenant } = await testApp(t);
  const scim = client(app, headers);
  const ids: string[] = [];
  for (const name of ['A', 'B', 'C']) ids.push((await scim('POST', '/Groups', { schemas: [GROUP], displayName: name })).json<{ id: string }>().id);
  ids.sort();
  const half = Math.floor(LIST_MEMBERS / 2) + 1;
  await sql`INSERT INTO accounts (tenant_id, managed_by, role, user_name, display_name, scim)
            SELECT ${tenant.id}::uuid, 'sync', 'student', 'member' || i || '@school.example', 'Member ' || i, '{}'
              FROM generate_series(1, ${half}::int) AS i`.execute(db);
  // The first two classes (in the order a list takes) have just over half the budget each, the last three members.
  for (const [klass, members] of [
    [ids[0], half],
    [ids[1], half],
    [ids[2], 3],
  ] as const) {
    await sql`INSERT INTO class_memberships (tenant_id, class_id, account_id, synced)
              SELECT tenant_id, ${klass}::uuid, id, true FROM accounts
               WHERE tenant_id = ${tenant.id}::uuid ORDER BY id LIMIT ${members}::int`.execute(db);
  }

  const first = (await scim('GET', '/Groups?count=10')).json<ListAnswer>();
  t.same(
    { total: first.totalResults, items: first.itemsPerPage, ids: first.Resources.map((r) => r.id), members: first.Resources.map((r) => r.members?.length) },
    { total: 3, items: 1, ids: [ids[0]], members: [half] },
    'the first class alone: the second would pass the budget',
  );
  const second = (await scim('GET', '/Groups?count=10&startIndex=2')).json<ListAnswer>();
  t.same(
    { items: second.itemsPerPage, ids: second.Resources.map((r) => r.id), members: second.Resources.map((r) => r.members?.length) },
    { items: 2, ids: [ids[1], ids[2]], members: [half, 3] },
    'then the other two, each with all its members',
  );
  const lookup = (await scim('GET', '/Groups?count=10&excludedAttributes=members')).json<ListAnswer>();
  t.equal(lookup.itemsPerPage, 3, 'without members, the whole page');
});
