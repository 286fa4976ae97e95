// The direct path of a user PATCH (src/scim/simple-patch.ts) against scimmy's
// PatchOp: over generated stored users and PatchOp messages of both Entra
// dialects, both paths must give the same account (columns and stored
// document) or the same SCIM error. The messages mix what the direct path
// takes with what it must hand to scimmy, and sequences of filtered paths on
// one element (the SCIM Validator's emails[type eq "work"].value then
// .primary), in either dialect; the test counts each kind, so it fails if a
// generator stops reaching one.
//   FUZZ_RUNS=5000 FUZZ_SEED=1 npx tsx test/run.ts test/simple-patch.test.ts
import fc from 'fast-check';
import t from 'tap';
import { ScimError } from '../src/errors.js';
import { normaliseResource, patchSteps } from '../src/scim/entra-dialect.js';
import { coerceResource } from '../src/scim/schemas.js';
import { applySimplePatch } from '../src/scim/simple-patch.js';
import { sortedKeys } from '../src/scim/resource.js';
import { canonicalOperations, patchUserDocument } from '../src/scim/patch.js';
import { fromScimUser, toScimUser } from '../src/scim/users.js';
import type { AccountRow } from '../src/db/accounts.js';
import { ENTERPRISE, PATCH_OP, PORTAL, USER } from './helpers/scim.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20240917);
const RUNS = Number(process.env.FUZZ_RUNS ?? 1500);
const ROLES = { Teacher: 'teacher', Student: 'student' };

type Json = Record<string, unknown>;

const text = fc.oneof(
  fc.constantFrom('Anna', 'Åsa Öberg', 'x', ' padded ', 'Pupil 7', 'ÆØÅ', 'Teacher', 'Student', '7A', 'Norra skolan'),
  fc.string({ minLength: 0, maxLength: 12 }),
);
const maybe = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });

/** A stored user as a POST leaves it: some optional parts present, some not. */
const storedUser = fc
  .record({
    n: fc.integer({ min: 1, max: 9999 }),
    displayName: maybe(text),
    title: maybe(text),
    nickName: maybe(text),
    active: fc.boolean(),
    name: maybe(fc.record({ givenName: maybe(text), familyName: maybe(text), formatted: maybe(text) })),
    enterprise: maybe(fc.record({ department: maybe(text), employeeNumber: maybe(text), costCenter: maybe(text) })),
    portal: maybe(fc.record({ grade: maybe(text), schoolId: maybe(text), role: maybe(fc.constantFrom('Teacher', 'Student')) })),
    emails: fc.integer({ min: 0, max: 2 }),
    addresses: maybe(fc.constantFrom([{ type: 'work', locality: 'Norrby' }], [{ type: 'home', streetAddress: 'Gatan 1' }])),
    roles: maybe(fc.constantFrom([{ primary: true, type: 'WindowsAzureActiveDirectoryRole', value: 'Teacher' }], [{ primary: false, value: 'Student', display: 'Student' }])),
  })
  .map((u): Json => {
    const clean = (o: Json | undefined): Json | undefined => {
      if (!o) return undefined;
      const entries = Object.entries(o).filter(([, v]) => v !== undefined && v !== '');
      return entries.length > 0 ? Object.fromEntries(entries) : undefined;
    };
    const body: Json = {
      schemas: [USER, ...(u.enterprise ? [ENTERPRISE] : []), ...(u.portal ? [PORTAL] : [])],
      userName: `pupil${u.n}@school.example`,
      externalId: `00000000-0000-4000-8000-${String(u.n).padStart(12, '0')}`,
      active: u.active,
      emails: Array.from({ length: u.emails }, (_, i) => ({ value: `p${u.n}.${i}@school.example`, type: i === 0 ? 'work' : 'other', primary: i === 0 })),
    };
    for (const key of ['displayName', 'title', 'nickName', 'addresses', 'roles'] as const) if (u[key]) body[key] = u[key];
    const name = clean(u.name);
    if (name) body.name = name;
    const enterprise = clean(u.enterprise);
    if (enterprise) body[ENTERPRISE] = enterprise;
    const portal = clean(u.portal);
    if (portal) body[PORTAL] = portal;
    return body;
  });

const PATHS = [
  'displayName',
  'DisplayName',
  'title',
  'nickName',
  'userType',
  'locale',
  'preferredLanguage',
  'userName',
  'externalId',
  'active',
  'name.givenName',
  'name.familyName',
  'Name.Formatted',
  'name.middleName',
  'name',
  `${ENTERPRISE}:department`,
  `${ENTERPRISE}:employeeNumber`,
  `${ENTERPRISE}:costCenter`,
  `${ENTERPRISE}:manager`,
  `${PORTAL}:grade`,
  `${PORTAL}:schoolId`,
  `${PORTAL}:role`,
  'emails[type eq "work"].value',
  'emails',
  'profileUrl',
  'roles',
];

const value = fc.oneof(
  text,
  fc.boolean(),
  fc.constantFrom('True', 'False', 'true', '', null, 5, 'https://example.org/p'),
  fc.record({ givenName: maybe(text), familyName: maybe(text) }),
  fc.constant([{ value: 'x@school.example', type: 'work' }]),
);

const operation = fc.record({
  op: fc.constantFrom('Add', 'Replace', 'Remove', 'add', 'replace'),
  path: fc.constantFrom(...PATHS),
  value: maybe(value),
});

/** Entra's second dialect: a replace without a path, its value an object of attributes. */
const pathless = fc.record({
  op: fc.constantFrom('Replace', 'Add'),
  value: fc.dictionary(fc.constantFrom('displayName', 'title', 'name.givenName', 'active', `${ENTERPRISE}:department`, 'nickName'), value, { minKeys: 1, maxKeys: 3 }),
});

/** What Entra's default mappings send: a singular string or boolean attribute. */
const simpleOperation = fc.oneof(
  fc.record({
    op: fc.constantFrom('Add', 'Replace', 'replace'),
    path: fc.constantFrom('displayName', 'title', 'nickName', 'name.givenName', 'name.familyName', `${ENTERPRISE}:department`, `${PORTAL}:grade`, 'userName'),
    value: text,
  }),
  fc.record({ op: fc.constantFrom('Replace', 'Add'), path: fc.constant('active'), value: fc.constantFrom(true, false, 'True', 'False') }),
  fc.record({ op: fc.constant('Remove'), path: fc.constantFrom('title', 'nickName', 'name.formatted', `${ENTERPRISE}:costCenter`, 'displayName') }),
);

/** Elements the SCIM Validator builds one sub-attribute at a time, and the sub-attributes it sends. */
const ELEMENTS: [string, string[]][] = [
  ['emails[type eq "work"]', ['value', 'primary', 'display']],
  ['emails[type eq "Work"]', ['value', 'primary']],
  ['addresses[type eq "work"]', ['streetAddress', 'locality', 'postalCode', 'country', 'formatted']],
  ['roles[primary eq "True"]', ['display', 'value', 'type']],
  ['phoneNumbers[type eq "mobile"]', ['value', 'primary']],
];

/**
 * Several sub-attributes of one element, each its own operation, as separate
 * operations, one path-less replace, or the first separate and the rest path-less.
 */
const elementSequence = fc.constantFrom(...ELEMENTS).chain(([element, subs]) =>
  fc
    .tuple(fc.shuffledSubarray(subs, { minLength: 2 }), fc.constantFrom('separate', 'pathless', 'mixed'))
    .chain(([chosen, form]) =>
      fc
        .tuple(
          ...chosen.map((sub) =>
            fc.record({
              op: fc.constantFrom('add', 'Add', 'replace', 'Replace'),
              path: fc.constant(`${element}.${sub}`),
              value: sub === 'primary' ? fc.constantFrom<unknown>(true, false, 'True', 'False') : text,
            }),
          ),
        )
        .map((ops): Json[] => {
          const pathless = (list: typeof ops): Json => ({ op: 'replace', value: Object.fromEntries(list.map((o) => [o.path, o.value])) });
          if (form === 'separate') return ops;
          if (form === 'pathless') return [pathless(ops)];
          return [ops[0] as Json, pathless(ops.slice(1))];
        }),
    ),
);

/** App roles as Entra sends them without aadOptscim062020, and whole extensions as a path. */
const appRole = fc.constantFrom('Teacher', 'Student', 'Lärare').map((role) => JSON.stringify({ id: '06b07648-ecfe-589f-9d2f-6325724a46ee', value: role, displayName: role }));
const wholeValues = fc.oneof(
  fc.record({ op: fc.constantFrom('Add', 'Remove', 'replace'), path: fc.constant('roles'), value: fc.array(fc.record({ value: appRole }), { minLength: 1, maxLength: 2 }) }),
  fc.record({
    op: fc.constantFrom('add', 'Replace'),
    path: fc.constantFrom(ENTERPRISE, PORTAL, ENTERPRISE.toLowerCase()),
    value: fc.record({ department: maybe(text), grade: maybe(text), employeeNumber: maybe(text), manager: maybe(fc.constant('boss-1')) }, { requiredKeys: [] }),
  }),
  fc.record({ op: fc.constant('remove'), path: fc.constantFrom(ENTERPRISE, PORTAL) }),
);

const message = fc
  .array(
    fc.oneof(
      { weight: 6, arbitrary: simpleOperation.map((o): Json[] => [o]) },
      { weight: 3, arbitrary: operation.map((o): Json[] => [o]) },
      { weight: 1, arbitrary: pathless.map((o): Json[] => [o]) },
      { weight: 2, arbitrary: elementSequence },
      { weight: 1, arbitrary: wholeValues.map((o): Json[] => [o]) },
    ),
    { minLength: 1, maxLength: 4 },
  )
  .map((parts) => parts.flat());

function storedRow(body: Json): AccountRow {
  const resource = coerceResource('User', normaliseResource('User', body));
  delete resource.meta;
  const values = fromScimUser(resource, ROLES);
  const at = new Date('2026-01-01T00:00:00Z');
  return {
    tenant_id: '00000000-0000-4000-8000-0000000000aa',
    id: '00000000-0000-4000-8000-0000000000bb',
    managed_by: 'sync',
    created_at: at,
    updated_at: at,
    deleted_at: null,
    created_by_sync: true,
    role_override: null,
    grade_override: null,
    several_emails: Array.isArray(values.scim.emails) && values.scim.emails.length > 1,
    version: 1,
    ...values,
  };
}

async function outcome(current: Json, body: Json, scimmyOnly: boolean): Promise<unknown> {
  try {
    const document = await patchUserDocument(JSON.parse(JSON.stringify(current)) as Json, body, { scimmyOnly });
    return document === undefined ? 'unchanged' : sortedKeys(fromScimUser(document, ROLES));
  } catch (error) {
    if (error instanceof ScimError) return { status: error.status, scimType: error.scimType };
    throw error;
  }
}

t.test('the direct path and scimmy agree on every generated user PATCH', async (t) => {
  let direct = 0;
  let handedOver = 0;
  let changed = 0;
  let sequences = 0;
  await fc.assert(
    fc.asyncProperty(storedUser, message, async (body, operations) => {
      // As the server hands it over: the resource without meta.
      const { meta: _meta, ...current } = toScimUser(storedRow(body), 'https://scim.example.test/scim/v2');
      const patch: Json = { schemas: [PATCH_OP], Operations: operations };
      const expected = await outcome(current, patch, true);
      const actual = await outcome(current, patch, false);
      let simple: ReturnType<typeof applySimplePatch>;
      try {
        simple = applySimplePatch(current, await canonicalOperations('User', current, patchSteps('User', patch, current.id)));
      } catch {
        simple = undefined;
      }
      if (simple) direct++;
      else handedOver++;
      if (simple?.document) changed++;
      if (typeof expected === 'object' && expected !== null && !('status' in expected) && builtOneElement(current, operations)) sequences++;
      if (JSON.stringify(actual) !== JSON.stringify(expected)) {
        throw new Error(`direct ${JSON.stringify(actual)}\nscimmy ${JSON.stringify(expected)}`);
      }
    }),
    { seed: SEED, numRuns: RUNS },
  );
  t.ok(direct >= RUNS / 10, `the direct path took ${direct} of ${RUNS} messages`);
  t.ok(changed >= RUNS / 20, `${changed} direct messages changed the user`);
  t.ok(handedOver >= RUNS / 10, `${handedOver} of ${RUNS} messages went to scimmy`);
  t.ok(sequences >= RUNS / 40, `${sequences} accepted messages built one new element from several operations`);
});

/** Whether the message sets two or more sub-attributes through one filter on an element the user does not have yet. */
function builtOneElement(current: Json, operations: Json[]): boolean {
  const paths = operations.flatMap((o) => (typeof o.path === 'string' ? [o.path] : Object.keys((o.value as Json | undefined) ?? {})));
  return ELEMENTS.some(([element]) => {
    const attribute = element.slice(0, element.indexOf('['));
    return !(attribute in current) && paths.filter((p) => p.startsWith(`${element}.`)).length >= 2;
  });
}

t.test('the stored document is not modified by the direct path', async (t) => {
  const current = toScimUser(storedRow({ schemas: [USER, ENTERPRISE], userName: 'a@school.example', name: { givenName: 'A' }, [ENTERPRISE]: { department: 'D' } }), 'https://x');
  const before = JSON.stringify(current);
  const body = {
    schemas: [PATCH_OP],
    Operations: [
      { op: 'Replace', path: 'name.givenName', value: 'B' },
      { op: 'Replace', path: `${ENTERPRISE}:department`, value: 'E' },
    ],
  };
  const operations = await canonicalOperations('User', current, patchSteps('User', body, current.id));
  const result = applySimplePatch(current, operations);
  t.same(result?.document?.name, { givenName: 'B' });
  t.same((result?.document?.[ENTERPRISE] as Json | undefined)?.department, 'E');
  t.equal(JSON.stringify(current), before);
});
