// The direct path of a user PATCH (src/scim/simple-patch.ts) against scimmy's
// PatchOp: over generated stored users and PatchOp messages of both Entra
// dialects, both paths must give the same account (columns and stored
// document) or the same SCIM error. The messages mix what the direct path
// takes with what it must hand to scimmy, and the test counts both kinds, so
// it fails if a generator stops reaching either.
//   FUZZ_RUNS=5000 FUZZ_SEED=1 npx tsx test/run.ts test/simple-patch.test.ts
import fc from 'fast-check';
import t from 'tap';
import { ScimError } from '../src/errors.js';
import { normalisePatch, normaliseResource } from '../src/scim/entra-dialect.js';
import { coerceResource } from '../src/scim/schemas.js';
import { applySimplePatch } from '../src/scim/simple-patch.js';
import { sortedKeys } from '../src/scim/resource.js';
import { patchUserDocument } from '../src/scim/patch.js';
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
    for (const key of ['displayName', 'title', 'nickName'] as const) if (u[key]) body[key] = u[key];
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

const message = fc.array(fc.oneof({ weight: 6, arbitrary: simpleOperation }, { weight: 3, arbitrary: operation }, { weight: 1, arbitrary: pathless }), {
  minLength: 1,
  maxLength: 4,
});

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
  await fc.assert(
    fc.asyncProperty(storedUser, message, async (body, operations) => {
      // As the server hands it over: the resource without meta.
      const { meta: _meta, ...current } = toScimUser(storedRow(body), 'https://scim.example.test/scim/v2');
      const patch: Json = { schemas: [PATCH_OP], Operations: operations };
      const expected = await outcome(current, patch, true);
      const actual = await outcome(current, patch, false);
      let simple: ReturnType<typeof applySimplePatch>;
      try {
        simple = applySimplePatch(current, normalisePatch('User', patch, current));
      } catch {
        simple = undefined;
      }
      if (simple) direct++;
      else handedOver++;
      if (simple?.document) changed++;
      if (JSON.stringify(actual) !== JSON.stringify(expected)) {
        throw new Error(`direct ${JSON.stringify(actual)}\nscimmy ${JSON.stringify(expected)}`);
      }
    }),
    { seed: SEED, numRuns: RUNS },
  );
  t.ok(direct >= RUNS / 10, `the direct path took ${direct} of ${RUNS} messages`);
  t.ok(changed >= RUNS / 20, `${changed} direct messages changed the user`);
  t.ok(handedOver >= RUNS / 10, `${handedOver} of ${RUNS} messages went to scimmy`);
});

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
  const operations = normalisePatch('User', body, current);
  const result = applySimplePatch(current, operations);
  t.same(result?.document?.name, { givenName: 'B' });
  t.same((result?.document?.[ENTERPRISE] as Json | undefined)?.department, 'E');
  t.equal(JSON.stringify(current), before);
});
