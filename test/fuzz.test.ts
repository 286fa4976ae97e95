// Property-based fuzzing of the SCIM surface: generated filters, PATCH
// bodies, resources, ids, query strings, headers and raw bodies, sent to Users
// and Groups. Every answer must be 2xx, 304 or a 4xx SCIM error, never a 5xx,
// and come back within a generous bound (a hang check, not a speed check).
// Afterwards the database must still be consistent.
//
// Seeded and reproducible. CI runs the fixed counts below; a longer run:
//   FUZZ_RUNS=5000 FUZZ_SEED=20240917 npx tsx test/run.ts test/fuzz.test.ts
// FUZZ_RUNS sets the runs of every property; a failure prints its seed and path.
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import t, { type Test } from 'tap';
import { testApp, type TestApp } from './helpers/app.js';
import { ADSCIM_GROUP, ENTERPRISE, GROUP, PATCH_OP, PORTAL, USER, entraUser } from './helpers/scim.js';
import { integrityProblems, scimErrorProblem } from './helpers/trust.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20240917);
const runs = (ci: number): number => Number(process.env.FUZZ_RUNS ?? ci);
const HANG_MS = 10_000;
const SEARCH_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:SearchRequest';

interface Target {
  app: TestApp;
  userIds: string[];
  groupIds: string[];
  /** Answers seen per property, by status class, so a generator that never reaches a handler fails the test. */
  seen: Map<string, Set<string>>;
}

type Request = {
  method: string;
  url: string;
  payload?: string;
  headers?: Record<string, string>;
};

/** Sends one request and checks the answer; throws (for fast-check) on a 5xx, a hang or a 4xx without a SCIM error body. */
async function exchange(target: Target, property: string, request: Request, auth = true): Promise<LightMyRequestResponse> {
  const headers = { ...(auth ? target.app.headers : {}), ...request.headers };
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${HANG_MS} ms`)), HANG_MS);
  });
  const res = await Promise.race([
    target.app.app.inject({
      method: request.method as 'GET',
      url: request.url,
      headers,
      ...(request.payload === undefined ? {} : { payload: request.payload }),
    }),
    hang,
  ]).finally(() => clearTimeout(timer));
  const label = `${request.method} ${request.url.slice(0, 300)} ${request.payload?.slice(0, 300) ?? ''}`;
  if (res.statusCode >= 500) throw new Error(`${label} -> ${res.statusCode} ${res.body.slice(0, 300)}`);
  if (res.statusCode >= 400) {
    // A HEAD answer has the headers of the GET answer and no body.
    const problem = request.method === 'HEAD' ? (/^application\/scim\+json/.test(String(res.headers['content-type'])) ? undefined : 'content type') : scimErrorProblem(res);
    if (problem) throw new Error(`${label} -> ${res.statusCode} is not a SCIM error: ${problem}`);
  } else if (res.statusCode >= 300 && res.statusCode !== 304) {
    throw new Error(`${label} -> unexpected ${res.statusCode}`);
  }
  const classes = target.seen.get(property) ?? new Set<string>();
  classes.add(`${Math.floor(res.statusCode / 100)}xx`);
  target.seen.set(property, classes);
  return res;
}

async function target(t: Test): Promise<Target> {
  const app = await testApp(t);
  const send = (method: string, url: string, body: unknown) =>
    app.app.inject({ method: method as 'POST', url: `/scim/v2${url}`, headers: app.headers, payload: JSON.stringify(body) });
  const userIds: string[] = [];
  for (let n = 1; n <= 6; n++) {
    const res = await send('POST', '/Users', entraUser(n, { roles: [{ primary: 'True', type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' }] }));
    userIds.push(res.json().id as string);
  }
  const groupIds: string[] = [];
  for (let n = 1; n <= 3; n++) {
    const res = await send('POST', '/Groups', {
      schemas: [GROUP, ADSCIM_GROUP],
      displayName: `Class ${n}`,
      externalId: randomUUID(),
      members: userIds.slice(n - 1, n + 2).map((value) => ({ value })),
    });
    groupIds.push(res.json().id as string);
  }
  return { app, userIds, groupIds, seen: new Map() };
}

// ---------------------------------------------------------------------------
// Generators

const ascii = fc.string({ unit: 'binary-ascii', maxLength: 40 });
const unicode = fc.string({ unit: 'binary', maxLength: 40 });
const graphemes = fc.string({ unit: 'grapheme', maxLength: 20 });
const anyText = fc.oneof(ascii, unicode, graphemes, fc.constantFrom('', ' ', '\u0000', '"', '\\', 'null', 'True', 'False', '%', '\u202e', '\ud800'));

const userAttributes = [
  'userName', 'UserName', 'displayName', 'externalId', 'id', 'active', 'ACTIVE', 'title', 'userType', 'nickName', 'locale',
  'name', 'name.givenName', 'name.FamilyName', 'name.formatted', 'emails', 'emails.value', 'emails.type', 'emails.primary',
  'phoneNumbers.value', 'addresses.postalCode', 'roles', 'roles.value', 'roles.primary', 'meta', 'meta.created',
  'meta.lastModified', 'meta.resourceType', 'meta.version', 'groups', 'password', 'members', 'members.value',
  `${USER}:userName`, `${ENTERPRISE}:employeeNumber`, `${ENTERPRISE}:manager`, `${ENTERPRISE}:manager.value`,
  `${ENTERPRISE}:department`, `${PORTAL}:grade`, `${PORTAL}:role`, `${PORTAL}:schoolId`, 'manager', 'urn:x:y',
  'nosuch', 'a.b.c', '$ref', 'x'.repeat(200), 'Ä', '_x', '-',
];
const groupAttributes = ['displayName', 'externalId', 'id', 'members', 'members.value', 'members.display', 'members.type', 'members.$ref', `${GROUP}:displayName`, 'meta.created', 'meta.lastModified', 'nosuch', 'userName'];

const attribute = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...userAttributes, ...groupAttributes) }, { weight: 1, arbitrary: ascii });
const operator = fc.oneof({ weight: 6, arbitrary: fc.constantFrom('eq', 'ne', 'co', 'sw', 'ew', 'gt', 'ge', 'lt', 'le', 'EQ', 'Eq') }, { weight: 1, arbitrary: fc.constantFrom('pr', 'xx', 'and', 'not', '=', '') });

const number = fc.oneof(
  fc.integer().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map(String),
  fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }).map(String),
  fc.constantFrom('1e400', '-1e400', '0', '-0', '1.', '.5', '01', '1e', 'NaN', 'Infinity', '9'.repeat(400)),
);
/** A comparison value as text: quoted strings (escaped or raw), numbers, literals and junk. */
const filterValue = fc.oneof(
  { weight: 4, arbitrary: anyText.map((s) => JSON.stringify(s)) },
  { weight: 1, arbitrary: anyText.map((s) => `"${s}"`) },
  { weight: 2, arbitrary: number },
  { weight: 1, arbitrary: fc.constantFrom('true', 'false', 'null', 'True', '"2024-01-01T00:00:00Z"', '"99999-12-31"', '"1"', '"\\u0000"', '"\\ud800"', '"\\x"') },
  { weight: 1, arbitrary: ascii },
);

const filterText: fc.Arbitrary<string> = fc.letrec<{ filter: string }>((tie) => ({
  filter: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.tuple(attribute, operator, filterValue).map(([a, o, v]) => `${a} ${o} ${v}`),
    attribute.map((a) => `${a} pr`),
    fc.tuple(tie('filter'), fc.constantFrom('and', 'or', 'AND', 'Or'), tie('filter')).map(([l, op, r]) => `${l} ${op} ${r}`),
    tie('filter').map((f) => `not (${f})`),
    tie('filter').map((f) => `(${f})`),
    fc.tuple(fc.constantFrom('emails', 'roles', 'members', 'phoneNumbers', 'name', 'title'), tie('filter'), fc.option(fc.constantFrom('.value', '.type', '.x'), { nil: undefined })).map(
      ([a, f, sub]) => `${a}[${f}]${sub ?? ''}`,
    ),
  ),
})).filter;

/** A filter text with random damage: cut short, a character dropped or doubled. */
const damaged = fc.tuple(filterText, fc.nat(), fc.constantFrom('cut', 'drop', 'double')).map(([text, at, how]) => {
  const i = text.length === 0 ? 0 : at % text.length;
  if (how === 'cut') return text.slice(0, i);
  if (how === 'drop') return text.slice(0, i) + text.slice(i + 1);
  return text.slice(0, i) + text.charAt(i) + text.slice(i);
});

const jsonValue = fc.jsonValue({ maxDepth: 3 });

function idFor(target: Target): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...target.userIds, ...target.groupIds) },
    { weight: 1, arbitrary: fc.constantFrom(...target.userIds.map((id) => id.toUpperCase())) },
    { weight: 1, arbitrary: fc.uuid() },
    { weight: 1, arbitrary: anyText },
  );
}

function memberValue(target: Target): fc.Arbitrary<unknown> {
  const id = idFor(target);
  return fc.oneof(
    fc.array(id.map((value) => ({ value })), { maxLength: 5 }),
    fc.array(fc.record({ value: id, display: anyText, $ref: fc.option(anyText) }, { requiredKeys: [] }), { maxLength: 3 }),
    id,
    id.map((value) => ({ Value: value })),
    jsonValue,
  );
}

const patchPath = (target: Target): fc.Arbitrary<unknown> =>
  fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...userAttributes, ...groupAttributes) },
    { weight: 2, arbitrary: fc.constantFrom('emails[type eq "work"].value', 'emails[type eq "work"]', 'roles[primary eq "True"].value', 'phoneNumbers[type eq "fax" or type eq "x"].value', 'emails[value co "@"].primary', 'name[givenName eq "x"]', 'addresses[type eq "work"].locality') },
    { weight: 2, arbitrary: idFor(target).map((id) => `members[value eq "${id}"]`) },
    { weight: 1, arbitrary: fc.array(fc.uuid(), { minLength: 1, maxLength: 4 }).map((ids) => `members[${ids.map((id) => `value eq "${id}"`).join(' or ')}]`) },
    { weight: 1, arbitrary: filterText.map((f) => `emails[${f}].value`) },
    { weight: 1, arbitrary: fc.oneof(ascii, unicode, fc.constant(''), fc.constant(null), fc.integer(), fc.constant(['members'])) },
  );

const patchValue = (target: Target): fc.Arbitrary<unknown> =>
  fc.oneof(
    { weight: 3, arbitrary: jsonValue },
    { weight: 2, arbitrary: fc.constantFrom('True', 'False', 'true', '', ' ', 'x@school.example', '\u0000') },
    { weight: 2, arbitrary: memberValue(target) },
    {
      weight: 2,
      arbitrary: fc.dictionary(
        fc.constantFrom(...userAttributes, ...groupAttributes, `${ENTERPRISE}:employeeNumber`, 'name.givenName', ENTERPRISE, 'schemas'),
        fc.oneof(jsonValue, memberValue(target)),
        { maxKeys: 4 },
      ),
    },
    { weight: 1, arbitrary: fc.constantFrom([{ $ref: null, value: 'someone' }], { value: '' }, [{ primary: 'True', type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' }]) },
  );

function operation(target: Target): fc.Arbitrary<unknown> {
  const op = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('add', 'replace', 'remove', 'Add', 'Replace', 'Remove', 'ADD') },
    { weight: 1, arbitrary: fc.oneof(fc.constantFrom('copy', 'move', 'test', ''), ascii, fc.integer(), fc.constant(null)) },
  );
  return fc.oneof(
    { weight: 8, arbitrary: fc.record({ op, path: patchPath(target), value: patchValue(target) }, { requiredKeys: ['op'] }) },
    { weight: 1, arbitrary: fc.record({ OP: op, Path: patchPath(target), VALUE: patchValue(target) }, { requiredKeys: [] }) },
    { weight: 1, arbitrary: jsonValue },
  );
}

function patchBody(target: Target): fc.Arbitrary<unknown> {
  const operations = fc.array(operation(target), { maxLength: 6 });
  return fc.oneof(
    { weight: 8, arbitrary: operations.map((Operations) => ({ schemas: [PATCH_OP], Operations })) },
    { weight: 1, arbitrary: operations.map((Operations) => ({ schemas: [PATCH_OP.toUpperCase()], operations: Operations })) },
    { weight: 1, arbitrary: fc.record({ schemas: fc.oneof(fc.constant([PATCH_OP]), jsonValue), Operations: fc.oneof(jsonValue, operations) }, { requiredKeys: [] }) },
  );
}

function resourceBody(target: Target): fc.Arbitrary<unknown> {
  const known = fc.dictionary(fc.constantFrom(...userAttributes, ...groupAttributes, ENTERPRISE, PORTAL, 'schemas'), fc.oneof(jsonValue, patchValue(target)), { maxKeys: 8 });
  return fc.oneof(
    { weight: 3, arbitrary: fc.tuple(fc.nat({ max: 1_000_000 }), known).map(([n, extra]) => ({ ...entraUser(n), ...extra })) },
    { weight: 2, arbitrary: known.map((extra) => ({ schemas: [GROUP, ADSCIM_GROUP], displayName: 'Fuzz class', ...extra })) },
    { weight: 1, arbitrary: known },
    { weight: 1, arbitrary: jsonValue },
  );
}

const endpoint = fc.constantFrom('/Users', '/Groups');
const method = fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND');
const headerText = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });

// ---------------------------------------------------------------------------
// Properties

t.test('fuzzed requests answer 2xx or a 4xx SCIM error, never 5xx, never hang; the database stays consistent', async (t) => {
  const target0 = await target(t);
  const { userIds, groupIds } = target0;
  const check = async (name: string, arbitrary: fc.Arbitrary<Request>, ciRuns: number, auth = true) => {
    let count = 0;
    await fc.assert(
      fc.asyncProperty(arbitrary, async (request) => {
        count++;
        await exchange(target0, name, request, auth);
      }),
      { seed: SEED, numRuns: runs(ciRuns), endOnFailure: false },
    );
    t.ok(count >= runs(ciRuns), `${name}: ${runs(ciRuns)} cases`);
  };
  // Lone surrogates cannot be percent-encoded as UTF-8: send the bytes of one (not valid UTF-8) instead.
  const q = (text: string): string =>
    Array.from(text, (c) => {
      try {
        return encodeURIComponent(c);
      } catch {
        return '%ED%A0%80';
      }
    }).join('');

  await check(
    'grammar filters',
    fc.tuple(endpoint, filterText, fc.boolean()).map(([e, f, excluded]) => ({ method: 'GET', url: `/scim/v2${e}?filter=${q(f)}${excluded ? '&excludedAttributes=members' : ''}` })),
    250,
  );
  await check(
    'damaged and raw filters',
    fc.tuple(endpoint, fc.oneof(damaged, anyText, fc.string({ unit: 'binary', maxLength: 300 }))).map(([e, f]) => ({ method: 'GET', url: `/scim/v2${e}?filter=${q(f)}` })),
    200,
  );
  await check(
    '.search bodies',
    fc.tuple(endpoint, fc.record({ schemas: fc.oneof(fc.constant([SEARCH_SCHEMA]), jsonValue), filter: fc.oneof(filterText, jsonValue), startIndex: fc.oneof(jsonValue, number), count: fc.oneof(jsonValue, number), sortBy: fc.oneof(attribute, jsonValue), sortOrder: fc.oneof(fc.constantFrom('ascending', 'descending', 'DESCENDING'), jsonValue), attributes: fc.oneof(fc.array(attribute), jsonValue), excludedAttributes: fc.oneof(fc.array(attribute), jsonValue) }, { requiredKeys: [] })).map(([e, body]) => ({ method: 'POST', url: `/scim/v2${e}/.search`, payload: JSON.stringify(body) })),
    150,
  );
  await check(
    'user PATCH bodies',
    fc.tuple(fc.constantFrom(...userIds), patchBody(target0)).map(([id, body]) => ({ method: 'PATCH', url: `/scim/v2/Users/${id}`, payload: JSON.stringify(body) })),
    250,
  );
  await check(
    'group PATCH bodies',
    fc.tuple(fc.constantFrom(...groupIds), patchBody(target0)).map(([id, body]) => ({ method: 'PATCH', url: `/scim/v2/Groups/${id}`, payload: JSON.stringify(body) })),
    250,
  );
  await check(
    'POST and PUT resources',
    fc.tuple(endpoint, fc.constantFrom('POST', 'PUT'), idFor(target0), resourceBody(target0)).map(([e, m, id, body]) => ({
      method: m,
      url: `/scim/v2${e}${m === 'PUT' ? `/${q(id)}` : ''}`,
      payload: JSON.stringify(body),
    })),
    200,
  );
  await check(
    'paths and ids',
    fc.tuple(method, fc.constantFrom('/Users', '/Groups', '/Schemas', '/ResourceTypes', '/ServiceProviderConfig', '/Bulk', '/Me', ''), fc.oneof(idFor(target0).map(q), anyText.map(q), ascii, fc.constant('.search'), fc.constant('')), fc.boolean()).map(([m, e, id, slash]) => ({
      method: m,
      url: `/scim/v2${e}${id === '' && !slash ? '' : `/${id}`}`,
      ...(['POST', 'PUT', 'PATCH'].includes(m) ? { payload: JSON.stringify({ schemas: [PATCH_OP], Operations: [] }) } : {}),
    })),
    200,
  );
  const queryKey = fc.oneof({ weight: 5, arbitrary: fc.constantFrom('count', 'startIndex', 'attributes', 'excludedAttributes', 'sortBy', 'sortOrder', 'filter', 'Count', 'aadOptscim062020') }, { weight: 1, arbitrary: ascii });
  const queryValue = fc.oneof(number, attribute, fc.array(attribute, { maxLength: 4 }).map((a) => a.join(',')), anyText, fc.constantFrom('ascending', 'descending', 'members', '-1', ''));
  await check(
    'query strings',
    fc.tuple(endpoint, fc.option(idFor(target0), { nil: undefined }), fc.array(fc.tuple(queryKey, queryValue, fc.boolean()), { maxLength: 6 })).map(([e, id, pairs]) => ({
      method: 'GET',
      url: `/scim/v2${e}${id === undefined ? '' : `/${q(id)}`}?${pairs.map(([k, v, raw]) => `${raw ? k : q(k)}=${raw ? v.replace(/[#\s]/g, '') : q(v)}`).join('&')}`,
    })),
    250,
  );
  await check(
    'headers',
    fc.tuple(
      endpoint,
      fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE'),
      fc.constantFrom(...userIds, ...groupIds),
      fc.oneof(fc.constantFrom('application/scim+json', 'application/json', 'application/json; charset=utf-8', 'application/scim+json; charset=latin1', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json;;', ''), headerText),
      fc.option(fc.oneof(fc.constantFrom('*', 'W/"1"', 'W/"2"', '"1"', 'W/', ', ,'), headerText), { nil: undefined }),
      fc.option(fc.oneof(fc.constantFrom('*', 'W/"1"'), headerText), { nil: undefined }),
      fc.option(fc.oneof(fc.constantFrom('application/scim+json', 'text/html', '*/*', 'application/xml'), headerText), { nil: undefined }),
      fc.oneof(resourceBody(target0), patchBody(target0)),
    ).map(([e, m, id, contentType, ifMatch, ifNoneMatch, accept, body]) => ({
      method: m,
      url: `/scim/v2${e}${m === 'POST' ? '' : `/${id}`}`,
      headers: {
        'content-type': contentType,
        ...(ifMatch === undefined ? {} : { 'if-match': ifMatch }),
        ...(ifNoneMatch === undefined ? {} : { 'if-none-match': ifNoneMatch }),
        ...(accept === undefined ? {} : { accept }),
      },
      ...(m === 'GET' || m === 'DELETE' ? {} : { payload: JSON.stringify(body) }),
    })),
    150,
  );
  const rawBody = fc.oneof(
    fc.json({ maxDepth: 4 }),
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.tuple(resourceBody(target0).map((b) => JSON.stringify(b)), fc.nat()).map(([text, at]) => text.slice(0, at % (text.length + 1))),
    fc.nat({ max: 80 }).map((n) => `${'{"a":['.repeat(n)}${']}'.repeat(n)}`),
    fc.constantFrom('{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', '\ufeff{}', '{"schemas":["' + USER + '"],"userName":"a@b.c","userName":"d@e.f"}', 'null', '[]', '1e999', '"\\ud800"'),
  );
  await check(
    'raw bodies',
    fc.tuple(fc.constantFrom('POST /Users', 'POST /Groups', 'POST /Users/.search', 'PUT /Users/:u', 'PUT /Groups/:g', 'PATCH /Users/:u', 'PATCH /Groups/:g', 'DELETE /Groups/:g'), rawBody, fc.constantFrom('application/scim+json', 'application/json')).map(([route, payload, contentType]) => {
      const [m = 'POST', path = '/Users'] = route.split(' ');
      return {
        method: m,
        url: `/scim/v2${path.replace(':u', userIds[0] ?? '').replace(':g', groupIds[0] ?? '')}`,
        payload,
        headers: { 'content-type': contentType },
      };
    }),
    200,
  );
  await check(
    'unauthenticated requests',
    fc.tuple(method, endpoint, fc.option(fc.oneof(headerText, fc.constantFrom('Bearer ', 'Bearer x.y.z', 'Basic YTpi')), { nil: undefined })).map(([m, e, authorization]) => ({
      method: m,
      url: `/scim/v2${e}`,
      ...(authorization === undefined ? {} : { headers: { authorization } }),
    })),
    50,
    false,
  );

  // The generators reach the handlers: both successes and refusals were seen.
  for (const name of ['grammar filters', '.search bodies', 'user PATCH bodies', 'group PATCH bodies', 'POST and PUT resources', 'query strings', 'headers']) {
    t.same([...(target0.seen.get(name) ?? [])].filter((c) => c !== '3xx').sort(), ['2xx', '4xx'], `${name}: both 2xx and 4xx answers`);
  }
  t.same(await integrityProblems(target0.app.db), [], 'memberships, userNames and documents are consistent');
  const after = await target0.app.app.inject({ method: 'GET', url: '/scim/v2/Groups?count=1000', headers: target0.app.headers });
  t.equal(after.statusCode, 200, 'the server still answers');
});
