// Hostile input at the HTTP boundary: every limit of src/scim/limits.ts
// answers a SCIM error with the right status and scimType, just past the
// limit, while a request at the limit is still served; refused writes change
// no row.
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import {
  MAX_EMAIL_LENGTH,
  MAX_EXTERNAL_ID_LENGTH,
  MAX_FILTER_DEPTH,
  MAX_FILTER_LENGTH,
  MAX_JSON_DEPTH,
  MAX_JSON_OBJECT_MEMBERS,
  MAX_MEMBERS_PER_REQUEST,
  MAX_PARAM_LENGTH,
  MAX_PATCH_OPERATIONS,
  MAX_START_INDEX,
  MAX_STRING_LENGTH,
  MAX_USER_NAME_LENGTH,
  MAX_VALUES_PER_ATTRIBUTE,
  MAX_DISPLAY_NAME_LENGTH,
  jsonShapeProblem,
} from '../src/scim/limits.js';
import { testApp, type TestApp } from './helpers/app.js';
import { ENTERPRISE, GROUP, USER, client, entraUser, patch, type Send } from './helpers/scim.js';
import { scimErrorProblem, tenantRows } from './helpers/trust.js';

const SEARCH = 'urn:ietf:params:scim:api:messages:2.0:SearchRequest';

// Random letters, so PostgreSQL cannot compress a long value below an index's limit.
const noise = (length: number): string => {
  let out = '';
  while (out.length < length) out += Math.random().toString(36).slice(2);
  return out.slice(0, length);
};

interface Fixture extends TestApp {
  scim: Send;
  userId: string;
  groupId: string;
}

async function fixture(t: Test): Promise<Fixture> {
  const app = await testApp(t);
  const scim = client(app.app, app.headers);
  const userId = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const group = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7B', members: [{ value: userId }] });
  return { ...app, scim, userId, groupId: group.json().id as string };
}

/** Sends a request that must be refused: a SCIM error of this status and scimType, and no row of the tenant changed. */
async function refused(
  t: Test,
  f: Fixture,
  label: string,
  send: () => ReturnType<Send>,
  status: number,
  scimType: string | undefined,
  detail?: RegExp,
): Promise<void> {
  const before = await tenantRows(f.db, f.tenant.id);
  const res = await send();
  t.equal(scimErrorProblem(res, status, scimType), undefined, `${label}: SCIM error ${status} ${scimType ?? ''}`);
  if (detail) t.match(res.json().detail, detail, `${label}: the detail says why`);
  t.same(await tenantRows(f.db, f.tenant.id), before, `${label}: no row changed`);
}

t.test('a body over BODY_LIMIT_BYTES answers 413 as a SCIM error', async (t) => {
  const f = await fixture(t);
  const huge = entraUser(2, { displayName: 'x'.repeat(f.config.bodyLimitBytes) });
  await refused(t, f, 'POST', () => f.scim('POST', '/Users', huge), 413, undefined);
  await refused(t, f, 'PATCH', () => f.scim('PATCH', `/Groups/${f.groupId}`, patch({ op: 'replace', path: 'displayName', value: 'y'.repeat(f.config.bodyLimitBytes) })), 413, undefined);
  const spc = (await f.scim('GET', '/ServiceProviderConfig')).json();
  t.match(spc.bulk, { maxPayloadSize: f.config.bodyLimitBytes, maxOperations: MAX_PATCH_OPERATIONS }, 'the limits are advertised');
});

t.test(`JSON nested deeper than ${MAX_JSON_DEPTH} levels answers 400 invalidSyntax`, async (t) => {
  const f = await fixture(t);
  // The body object is level 1; "junk" is an unknown attribute, dropped on the way in.
  const nested = (levels: number): string => `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`;
  const body = (junkLevels: number) => `{"schemas":["${USER}"],"userName":"deep@school.example","junk":${nested(junkLevels)}}`;
  const atLimit = await f.scim('POST', '/Users', body(MAX_JSON_DEPTH - 1));
  t.equal(atLimit.statusCode, 201, `${MAX_JSON_DEPTH} levels are read`);
  await f.scim('DELETE', `/Users/${atLimit.json().id as string}`);
  await refused(t, f, 'one level more', () => f.scim('POST', '/Users', body(MAX_JSON_DEPTH)), 400, 'invalidSyntax', /deeper than 32 levels/);
  await refused(t, f, 'arrays', () => f.scim('PATCH', `/Users/${f.userId}`, `${'['.repeat(100_000)}${']'.repeat(100_000)}`), 400, 'invalidSyntax');
  // Brackets inside strings are text, not nesting.
  const bracketed = await f.scim('POST', '/Users', entraUser(3, { title: '[[[[{{{{'.repeat(20) }));
  t.equal(bracketed.statusCode, 201, 'brackets inside strings do not count');
});

t.test(`an object of more than ${MAX_JSON_OBJECT_MEMBERS} attributes answers 400 invalidSyntax; lists of any length are read`, async (t) => {
  const f = await fixture(t);
  const names = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'x']));
  const atLimit = await f.scim('POST', '/Users', { schemas: [USER], userName: 'wide@school.example', name: { givenName: 'Wide', ...names(MAX_JSON_OBJECT_MEMBERS - 1) } });
  t.equal(atLimit.statusCode, 201, `an object of ${MAX_JSON_OBJECT_MEMBERS} attributes is read`);
  await f.scim('DELETE', `/Users/${atLimit.json().id as string}`);
  // Forty thousand names under name: about a second of the server's CPU before the limit.
  for (const [label, body] of [
    ['a nested object', { schemas: [USER], userName: 'wider@school.example', name: names(40_000) }],
    ['the resource itself', { schemas: [USER], userName: 'wider@school.example', ...names(MAX_JSON_OBJECT_MEMBERS) }],
  ] as const) {
    await refused(t, f, label, () => f.scim('POST', '/Users', body), 400, 'invalidSyntax', new RegExp(`more than ${MAX_JSON_OBJECT_MEMBERS} attributes`));
  }
  await refused(t, f, 'a PATCH value', () => f.scim('PATCH', `/Users/${f.userId}`, patch({ op: 'replace', value: names(1000) })), 400, 'invalidSyntax');
  // Colons in strings are text, and a list's elements are no attributes.
  const colons = await f.scim('POST', '/Users', entraUser(4, { title: ':'.repeat(1000) }));
  t.equal(colons.statusCode, 201, colons.body);
  const members = await f.scim('PATCH', `/Groups/${f.groupId}`, patch({ op: 'add', path: 'members', value: Array.from({ length: 300 }, () => ({ value: f.userId })) }));
  t.equal(members.statusCode, 204, members.body);
  t.equal(jsonShapeProblem(`{"a":[${'{"b":1},'.repeat(MAX_JSON_OBJECT_MEMBERS + 1)}{"b":1}]}`), undefined, 'many small objects in a list are each counted alone');
  t.equal(jsonShapeProblem(`{${Array.from({ length: MAX_JSON_OBJECT_MEMBERS + 1 }, (_, i) => `"k${i}":"a:b"`).join(',')}}`), 'members');
  t.equal(jsonShapeProblem(`{"a":"${'\\":'.repeat(1000)}"}`), undefined, 'escaped quotes keep the string open');
});

t.test(`a user's multi-valued attribute holds ${MAX_VALUES_PER_ATTRIBUTE} values at most, also when a PATCH adds to it`, async (t) => {
  const f = await fixture(t);
  const roles = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ value: `role-${from + i}`, type: 'app' }));
  await refused(t, f, 'a POST', () => f.scim('POST', '/Users', entraUser(5, { roles: roles(MAX_VALUES_PER_ATTRIBUTE + 1) })), 400, 'invalidValue', new RegExp(`roles has ${MAX_VALUES_PER_ATTRIBUTE + 1} values; the limit is ${MAX_VALUES_PER_ATTRIBUTE}`));
  const id = (await f.scim('POST', '/Users', entraUser(5, { roles: roles(MAX_VALUES_PER_ATTRIBUTE - 1) }))).json<{ id: string }>().id;
  t.equal((await f.scim('PATCH', `/Users/${id}`, patch({ op: 'add', path: 'roles', value: roles(1, 1000) }))).statusCode, 200, `${MAX_VALUES_PER_ATTRIBUTE} values are kept`);
  await refused(t, f, 'a PATCH past it', () => f.scim('PATCH', `/Users/${id}`, patch({ op: 'add', path: 'roles', value: roles(1, 2000) })), 400, 'invalidValue', /roles has 101 values/);
  const group = await f.scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Many', members: Array.from({ length: MAX_VALUES_PER_ATTRIBUTE + 1 }, () => ({ value: id })) });
  t.equal(group.statusCode, 201, "a class's members are no such attribute");

  // A user stored with more values than the limit (before it was one) is still changed, and a leaver still deactivated (rule 6).
  const many = roles(MAX_VALUES_PER_ATTRIBUTE + 50);
  await sql`UPDATE accounts SET scim = jsonb_set(scim, '{roles}', ${JSON.stringify(many)}::jsonb) WHERE id = ${id}::uuid`.execute(f.db);
  const leaver = await f.scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'active', value: false }));
  t.equal(leaver.statusCode, 200, leaver.body);
  t.equal(leaver.json().roles.length, MAX_VALUES_PER_ATTRIBUTE + 50, 'its values are kept');
  t.equal((await f.scim('PATCH', `/Users/${id}`, patch({ op: 'remove', path: 'roles[value eq "role-0"]' }))).statusCode, 200, 'fewer is allowed');
  await refused(t, f, 'but not more', () => f.scim('PATCH', `/Users/${id}`, patch({ op: 'add', path: 'roles', value: roles(2, 3000) })), 400, 'invalidValue', /roles has 151 values/);
});

t.test(`filters: ${MAX_FILTER_LENGTH} characters and ${MAX_FILTER_DEPTH} levels at most, else 400 invalidFilter`, async (t) => {
  const f = await fixture(t);
  const padded = (length: number): string => {
    const head = 'userName eq "';
    return `${head}${'a'.repeat(length - head.length - 1)}"`;
  };
  const ok = await f.scim('GET', `/Users?filter=${encodeURIComponent(padded(MAX_FILTER_LENGTH))}`);
  t.equal(ok.statusCode, 200, 'a filter at the limit is served');
  await refused(t, f, 'too long', () => f.scim('GET', `/Users?filter=${encodeURIComponent(padded(MAX_FILTER_LENGTH + 1))}`), 400, 'invalidFilter', /too long/);
  const nested = (levels: number): string => `${'('.repeat(levels)}userName eq "a"${')'.repeat(levels)}`;
  t.equal((await f.scim('GET', `/Users?filter=${encodeURIComponent(nested(MAX_FILTER_DEPTH))}`)).statusCode, 200, 'nesting at the limit is served');
  await refused(t, f, 'too deep', () => f.scim('GET', `/Users?filter=${encodeURIComponent(nested(MAX_FILTER_DEPTH + 1))}`), 400, 'invalidFilter', /nested too deeply/);
  const notNested = `${'not ('.repeat(MAX_FILTER_DEPTH)}userName eq "a"${')'.repeat(MAX_FILTER_DEPTH)}`;
  await refused(t, f, 'not chain', () => f.scim('GET', `/Users?filter=${encodeURIComponent(notNested)}`), 400, 'invalidFilter');
  await refused(
    t,
    f,
    '.search',
    () => f.scim('POST', '/Users/.search', { schemas: [SEARCH], filter: nested(1000) }),
    400,
    'invalidFilter',
  );
});

t.test(`PATCH carries at most ${MAX_PATCH_OPERATIONS} operations, else 400 invalidValue`, async (t) => {
  const f = await fixture(t);
  const ops = (n: number) => Array.from({ length: n }, (_, i) => ({ op: 'replace', path: 'title', value: `t${i}` }));
  const ok = await f.scim('PATCH', `/Users/${f.userId}`, patch(...ops(MAX_PATCH_OPERATIONS)));
  t.equal(ok.statusCode, 200);
  t.equal(ok.json().title, `t${MAX_PATCH_OPERATIONS - 1}`, 'the last operation wins');
  await refused(t, f, 'user', () => f.scim('PATCH', `/Users/${f.userId}`, patch(...ops(MAX_PATCH_OPERATIONS + 1))), 400, 'invalidValue', /at most 1000 operations/);
  const groupOps = Array.from({ length: MAX_PATCH_OPERATIONS + 1 }, () => ({ op: 'Remove', path: 'members', value: [{ value: f.userId }] }));
  await refused(t, f, 'group', () => f.scim('PATCH', `/Groups/${f.groupId}`, patch(...groupOps)), 400, 'invalidValue', /at most 1000 operations/);
});

t.test(`one request names at most ${MAX_MEMBERS_PER_REQUEST} members, over all its operations`, async (t) => {
  const f = await fixture(t);
  const ids = (n: number) => Array.from({ length: n }, () => ({ value: randomUUID() }));
  const half = Math.ceil((MAX_MEMBERS_PER_REQUEST + 1) / 2);
  await refused(t, f, 'one operation', () => f.scim('PATCH', `/Groups/${f.groupId}`, patch({ op: 'add', path: 'members', value: ids(MAX_MEMBERS_PER_REQUEST + 1) })), 400, 'invalidValue', /At most 10000 members/);
  await refused(
    t,
    f,
    'two operations',
    () => f.scim('PATCH', `/Groups/${f.groupId}`, patch({ op: 'add', path: 'members', value: ids(half) }, { op: 'remove', path: 'members', value: ids(half) })),
    400,
    'invalidValue',
    /At most 10000 members/,
  );
  await refused(t, f, 'POST', () => f.scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Big', members: ids(MAX_MEMBERS_PER_REQUEST + 1) }), 400, 'invalidValue');
  await refused(t, f, 'PUT', () => f.scim('PUT', `/Groups/${f.groupId}`, { schemas: [GROUP], displayName: 'Big', members: ids(MAX_MEMBERS_PER_REQUEST + 1) }), 400, 'invalidValue');
  // At the limit the request is read; these ids are no users here, so rule 5 refuses them.
  await refused(t, f, 'at the limit', () => f.scim('PATCH', `/Groups/${f.groupId}`, patch({ op: 'add', path: 'members', value: ids(MAX_MEMBERS_PER_REQUEST) })), 400, 'invalidValue', /not a user here/);
});

t.test('string attributes longer than their limit answer 400 invalidValue naming the attribute', async (t) => {
  const f = await fixture(t);
  const longDepartment = noise(MAX_STRING_LENGTH + 1);
  const cases: [string, Record<string, unknown>, RegExp, Record<string, unknown>?][] = [
    ['userName', { userName: `${noise(MAX_USER_NAME_LENGTH - 14)}@school.example` }, /^userName is too long/],
    ['displayName', { displayName: noise(MAX_DISPLAY_NAME_LENGTH + 1) }, /^displayName is too long/],
    ['externalId', { externalId: noise(MAX_EXTERNAL_ID_LENGTH + 1) }, /^externalId is too long/],
    ['externalId past an index entry', { externalId: noise(3000) }, /^externalId is too long/],
    ['an e-mail', { emails: [{ type: 'home', value: 'a@b.c' }, { type: 'work', value: `${noise(MAX_EMAIL_LENGTH)}@x` }] }, /^emails\[1\]\.value is too long/],
    ['name.givenName', { name: { givenName: noise(MAX_STRING_LENGTH + 1) } }, /^name\.givenName is too long/],
    [
      'an extension attribute',
      { [ENTERPRISE]: { department: longDepartment } },
      /department is too long/,
      { [`${ENTERPRISE}:department`]: longDepartment },
    ],
  ];
  for (const [label, extra, detail, patched = extra] of cases) {
    await refused(t, f, `POST ${label}`, () => f.scim('POST', '/Users', entraUser(5, extra)), 400, 'invalidValue', detail);
    await refused(t, f, `PUT ${label}`, () => f.scim('PUT', `/Users/${f.userId}`, entraUser(1, extra)), 400, 'invalidValue', detail);
    const ops = Object.entries(patched).map(([path, value]) => ({ op: 'replace', path, value }));
    await refused(t, f, `PATCH ${label}`, () => f.scim('PATCH', `/Users/${f.userId}`, patch(...ops)), 400, 'invalidValue', detail);
    await refused(t, f, `path-less PATCH ${label}`, () => f.scim('PATCH', `/Users/${f.userId}`, patch({ op: 'replace', value: patched })), 400, 'invalidValue', detail);
  }
  const atLimits = entraUser(6, {
    userName: `${noise(MAX_USER_NAME_LENGTH - 15)}@school.example`,
    externalId: noise(MAX_EXTERNAL_ID_LENGTH),
    displayName: noise(MAX_DISPLAY_NAME_LENGTH),
    emails: [{ type: 'work', value: `${noise(MAX_EMAIL_LENGTH - 2)}@x` }],
    title: noise(MAX_STRING_LENGTH),
  });
  const created = await f.scim('POST', '/Users', atLimits);
  t.equal(created.statusCode, 201, 'values at their limits are stored');
  t.equal(created.json().externalId, atLimits.externalId);

  const groupCases: [string, Record<string, unknown>, RegExp][] = [
    ['displayName', { displayName: noise(MAX_DISPLAY_NAME_LENGTH + 1) }, /^displayName is too long/],
    ['externalId', { externalId: noise(3000) }, /^externalId is too long/],
  ];
  for (const [label, extra, detail] of groupCases) {
    await refused(t, f, `POST group ${label}`, () => f.scim('POST', '/Groups', { schemas: [GROUP], displayName: 'G', ...extra }), 400, 'invalidValue', detail);
    await refused(t, f, `PUT group ${label}`, () => f.scim('PUT', `/Groups/${f.groupId}`, { schemas: [GROUP], displayName: 'G', ...extra }), 400, 'invalidValue', detail);
    const ops = Object.entries(extra).map(([path, value]) => ({ op: 'replace', path, value }));
    await refused(t, f, `PATCH group ${label}`, () => f.scim('PATCH', `/Groups/${f.groupId}`, patch(...ops)), 400, 'invalidValue', detail);
  }
  const group = await f.scim('POST', '/Groups', { schemas: [GROUP], displayName: noise(MAX_DISPLAY_NAME_LENGTH), externalId: noise(MAX_EXTERNAL_ID_LENGTH) });
  t.equal(group.statusCode, 201, 'a group at its limits is stored');
});

t.test('count and startIndex: out-of-range counts are bounded, a startIndex past the limit is refused', async (t) => {
  const f = await fixture(t);
  const list = async (query: string) => {
    const res = await f.scim('GET', `/Users?${query}`);
    t.equal(res.statusCode, 200, query);
    return res.json<{ startIndex: number; itemsPerPage: number; totalResults: number }>();
  };
  t.match(await list(`count=${'9'.repeat(40)}`), { itemsPerPage: 1, totalResults: 1 }, 'a count of any size is lowered to the page size');
  t.match(await list(`count=-${'9'.repeat(40)}`), { itemsPerPage: 0, totalResults: 1 }, 'a negative count means 0');
  t.match(await list(`startIndex=-${'9'.repeat(40)}`), { startIndex: 1, itemsPerPage: 1 }, 'a startIndex below 1 means 1');
  t.match(await list(`startIndex=${MAX_START_INDEX}`), { startIndex: MAX_START_INDEX, itemsPerPage: 0, totalResults: 1 }, 'the largest startIndex');
  await refused(t, f, 'startIndex past the limit', () => f.scim('GET', `/Users?startIndex=${MAX_START_INDEX + 1}`), 400, 'invalidValue', /startIndex must be at most/);
  await refused(t, f, 'a huge startIndex', () => f.scim('GET', `/Groups?startIndex=${'9'.repeat(40)}`), 400, 'invalidValue');
  await refused(t, f, '.search startIndex', () => f.scim('POST', '/Users/.search', { schemas: [SEARCH], startIndex: 1e300 }), 400, 'invalidValue');
  const searched = await f.scim('POST', '/Groups/.search', { schemas: [SEARCH], count: 1e300 });
  t.equal(searched.statusCode, 200);
  t.equal(searched.json().itemsPerPage, 1, '.search count is bounded too');
  for (const bad of ['count=1e3', 'count=0x10', 'count=%E2%80%8B1', 'startIndex=1.0', 'startIndex=NaN', 'count=Infinity']) {
    await refused(t, f, bad, () => f.scim('GET', `/Users?${bad}`), 400, 'invalidValue');
  }
});

t.test('ids that are no UUID answer 404 on every method; URLs the router cannot read answer SCIM errors', async (t) => {
  const f = await fixture(t);
  const shapes = [
    'not-a-uuid',
    `{${f.userId}}`,
    `${f.userId}x`,
    f.userId.replace(/-/g, ''),
    '00000000-0000-0000-0000-00000000000g',
    '%00',
    '%F0%9F%98%80',
    "'%20OR%201=1--",
    encodeURIComponent('"; DROP TABLE accounts; --'),
    '..%2F..%2Fetc%2Fpasswd',
    'a'.repeat(MAX_PARAM_LENGTH),
  ];
  for (const endpoint of ['/Users', '/Groups']) {
    for (const id of shapes) {
      const label = `${endpoint}/${id.slice(0, 40)}`;
      await refused(t, f, `GET ${label}`, () => f.scim('GET', `${endpoint}/${id}`), 404, undefined);
      await refused(t, f, `DELETE ${label}`, () => f.scim('DELETE', `${endpoint}/${id}`), 404, undefined);
      await refused(t, f, `PATCH ${label}`, () => f.scim('PATCH', `${endpoint}/${id}`, patch({ op: 'replace', path: 'displayName', value: 'x' })), 404, undefined);
      const body = endpoint === '/Users' ? entraUser(1) : { schemas: [GROUP], displayName: 'x' };
      await refused(t, f, `PUT ${label}`, () => f.scim('PUT', `${endpoint}/${id}`, body), 404, undefined);
    }
    await refused(t, f, `${endpoint} id past the router's limit`, () => f.scim('GET', `${endpoint}/${'a'.repeat(MAX_PARAM_LENGTH + 1)}`), 414, undefined);
    await refused(t, f, `${endpoint} bad percent-encoding`, () => f.scim('GET', `${endpoint}/%ZZ`), 400, undefined);
  }
  const anonymous = await f.app.inject({ method: 'GET', url: `/scim/v2/Users/${'a'.repeat(MAX_PARAM_LENGTH)}` });
  t.equal(scimErrorProblem(anonymous, 401), undefined, 'a long id does not get past authentication');
});

t.test('a long query string and many parameters are served', async (t) => {
  const f = await fixture(t);
  const many = Array.from({ length: 2000 }, (_, i) => `p${i}=${i}`).join('&');
  const res = await f.scim('GET', `/Users?${many}&x=${'a'.repeat(100_000)}`);
  t.equal(res.statusCode, 200, 'unknown parameters are tolerated');
  const attributes = Array.from({ length: 5000 }, (_, i) => `nosuch${i}`).join(',');
  const projected = await f.scim('GET', `/Users?attributes=${attributes},userName`);
  t.same(Object.keys(projected.json().Resources[0] as object).sort(), ['id', 'schemas', 'userName'], 'unknown attribute names are ignored');
});

t.test('attributes and excludedAttributes given twice are one list on every route, not a 500', async (t) => {
  const f = await fixture(t);
  const got = await f.scim('GET', `/Users/${f.userId}?attributes=userName&attributes=displayName`);
  t.equal(got.statusCode, 200);
  t.same(Object.keys(got.json<object>()).sort(), ['displayName', 'id', 'schemas', 'userName']);
  const group = await f.scim('GET', `/Groups/${f.groupId}?excludedAttributes=members&excludedAttributes=meta`);
  t.equal(group.statusCode, 200);
  t.notOk(group.json().members, 'members left out');
  t.notOk(group.json().meta, 'meta left out');
  const created = await f.scim('POST', '/Users?attributes=userName&attributes=externalId', entraUser(8));
  t.equal(created.statusCode, 201);
  t.same(Object.keys(created.json<object>()).sort(), ['externalId', 'id', 'schemas', 'userName']);
  const replaced = await f.scim('PUT', `/Users/${f.userId}?excludedAttributes=emails&excludedAttributes=name`, entraUser(1));
  t.equal(replaced.statusCode, 200);
  t.notOk(replaced.json().emails);
  t.notOk(replaced.json().name);
  const patched = await f.scim('PATCH', `/Users/${f.userId}?attributes=title&attributes=active`, patch({ op: 'replace', path: 'title', value: 'Pupil' }));
  t.equal(patched.statusCode, 200);
  t.same(patched.json(), { schemas: [USER, ENTERPRISE], id: f.userId, title: 'Pupil', active: true });
  const listed = await f.scim('GET', '/Groups?attributes=displayName&attributes=externalId');
  t.same(Object.keys(listed.json().Resources[0] as object).sort(), ['displayName', 'id', 'schemas']);
});

// Names every JavaScript object has are no attributes: never the whole
// directory for a filter that should match nothing, never a 500.
t.test('filters and sorts naming an inherited property (constructor, toString, __proto__) are unknown attributes', async (t) => {
  const f = await fixture(t);
  const enc = encodeURIComponent;
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    for (const filter of [`${name} eq "x"`, `${name} pr`, `not (${name} eq "x")`, `${name} eq null`]) {
      await refused(t, f, `Users ${filter}`, () => f.scim('GET', `/Users?filter=${enc(filter)}`), 400, 'invalidFilter', /Unknown attribute|invalid (sub-)?attribute name/);
    }
    for (const filter of [`members[${name} eq "x"]`, `members[${name} pr]`, `members.${name} eq "x"`]) {
      await refused(t, f, `Groups ${filter}`, () => f.scim('GET', `/Groups?filter=${enc(filter)}`), 400, 'invalidFilter', /Unknown attribute|invalid (sub-)?attribute name/);
    }
    await refused(t, f, `sortBy ${name}`, () => f.scim('GET', `/Users?sortBy=${name}`), 400, 'invalidValue', /Cannot sort by unknown attribute|is not an attribute name/);
    await refused(t, f, `.search ${name}`, () => f.scim('POST', '/.search', { schemas: [SEARCH], filter: `${name} pr` }), 400, 'invalidFilter');
  }
});

t.test('a body that is not UTF-8 answers 400 invalidSyntax, and nothing is stored under a name it does not have', async (t) => {
  const f = await fixture(t);
  const json = JSON.stringify({ schemas: [USER], userName: 'jérôme@school.example' });
  for (const contentType of ['application/scim+json', 'application/scim+json; charset=iso-8859-1']) {
    await refused(
      t,
      f,
      `Latin-1 bytes as ${contentType}`,
      () => f.app.inject({ method: 'POST', url: '/scim/v2/Users', headers: { ...f.headers, 'content-type': contentType }, payload: Buffer.from(json, 'latin1') }),
      400,
      'invalidSyntax',
      /not UTF-8/,
    );
  }
  const utf8 = await f.app.inject({ method: 'POST', url: '/scim/v2/Users', headers: { ...f.headers, 'content-type': 'application/scim+json' }, payload: Buffer.from(json, 'utf8') });
  t.equal(utf8.statusCode, 201, 'the same body in UTF-8 is served');
  t.equal(utf8.json().userName, 'jérôme@school.example');
});

t.test('a refused value holding a NUL character is still recorded as a failed write', async (t) => {
  const f = await fixture(t);
  const res = await f.scim('POST', '/Users', { schemas: [USER], userName: 'nul\u0000@school.example', externalId: 'x\u0000y' }, { 'x-request-id': 'nul' });
  t.equal(res.statusCode, 400);
  const event = await f.db.selectFrom('audit_events').select(['object_ref', 'details']).where('request_id', '=', 'nul').executeTakeFirst();
  t.match(event, { object_ref: 'nul\uFFFD@school.example', details: { status: 400, externalId: 'x\uFFFDy' } }, 'kept, with U+FFFD where the NUL was');
});
