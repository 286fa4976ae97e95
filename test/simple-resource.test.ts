// The direct path of a POST or PUT body (src/scim/simple-resource.ts) against
// scimmy's coerce: over generated users and classes, in the shapes Entra and
// other clients send (any case, string booleans, extensions as objects or flat
// keys, wrong types, unknown and read-only attributes, app roles as JSON
// text), whatever the direct path accepts, scimmy must accept and turn into
// the same document, key order included; the user's account columns must be
// the same too. The bodies mix what the direct path takes with what it must
// hand to scimmy, and the test counts both kinds (and app roles read from
// JSON text), so it fails if a generator stops reaching one.
//   FUZZ_RUNS=5000 FUZZ_SEED=1 npx tsx test/run.ts test/simple-resource.test.ts
import fc from 'fast-check';
import t from 'tap';
import { ScimError } from '../src/errors.js';
import { normaliseResource } from '../src/scim/entra-dialect.js';
import { coerceResource, definitionOf, type ResourceName } from '../src/scim/schemas.js';
import { coerceSimpleResource } from '../src/scim/simple-resource.js';
import { fromScimUser } from '../src/scim/users.js';
import { ENTERPRISE, GROUP, PORTAL, USER } from './helpers/scim.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20261122);
const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);
const ROLES = { Teacher: 'teacher', Student: 'student' };

type Json = Record<string, unknown>;

const maybe = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
const text = fc.oneof(fc.constantFrom('Anna', 'Åsa Öberg', '', ' padded ', '7A', 'Teacher', 'Student', 'x@school.example'), fc.string({ maxLength: 10 }));
/** Mostly right for a string attribute, sometimes not. */
const stringish = fc.oneof({ weight: 30, arbitrary: text }, { weight: 1, arbitrary: fc.constantFrom<unknown>(5, true, null, ['a'], { value: 'a' }) });
const booleanish = fc.oneof({ weight: 20, arbitrary: fc.boolean() }, { weight: 6, arbitrary: fc.constantFrom<unknown>('True', 'false', 'FALSE') }, {
  weight: 1,
  arbitrary: fc.constantFrom<unknown>('yes', 1, null),
});
/** Attribute names as clients spell them. */
const spelled = (name: string) => fc.constantFrom(name, name, name, name.toLowerCase(), name.toUpperCase());

/** An object of some of the entries; `rare` ones are present about one time in twelve. */
function record(entries: [fc.Arbitrary<string>, fc.Arbitrary<unknown>, 'rare'?][]): fc.Arbitrary<Json> {
  const present = (value: fc.Arbitrary<unknown>, rare?: 'rare') =>
    fc.oneof({ weight: rare ? 11 : 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: value });
  return fc.tuple(...entries.map(([key, value, rare]) => fc.tuple(key, present(value, rare)))).map((pairs) => {
    const out: Json = {};
    for (const [key, value] of pairs) if (value !== undefined) out[key] = value;
    return out;
  });
}

const multiValue = (subs: Record<string, fc.Arbitrary<unknown>>) =>
  fc.array(
    fc.oneof(
      { weight: 20, arbitrary: record(Object.entries(subs).map(([name, value]) => [spelled(name), value])) },
      { weight: 1, arbitrary: fc.constantFrom<unknown>('x@school.example', null, { value: 'a', unknown: 'b' }, [{ value: 'a' }]) },
    ),
    { maxLength: 3 },
  );

const email = multiValue({ value: stringish, type: fc.constantFrom('work', 'Work', 'other', 'home'), primary: booleanish, display: stringish });
const phone = multiValue({ value: stringish, type: fc.constantFrom('work', 'mobile', 'fax'), primary: booleanish });
const address = multiValue({ formatted: stringish, streetAddress: stringish, locality: stringish, postalCode: stringish, country: stringish, type: fc.constant('work'), primary: booleanish });
/** An app role as Entra sends it in a PATCH without aadOptscim062020: JSON text in the element's value. */
const appRoleText = fc.oneof(
  fc.constantFrom('Teacher', 'Student', '25').map((v) => JSON.stringify({ id: '06b07648-ecfe-589f-9d2f-6325724a46ee', value: v, displayName: v })),
  fc.constantFrom('{"value":"Teacher"}', '{"id":"x"}', '{not json', '[1]'),
);
const role = multiValue({
  value: fc.oneof(stringish, appRoleText),
  type: fc.constantFrom('WindowsAzureActiveDirectoryRole', 'Teacher'),
  display: stringish,
  // AppRoleAssignmentsComplex spells display so in a POST.
  displayName: stringish,
  primary: booleanish,
});

const enterprise = record([
  [spelled('employeeNumber'), stringish],
  [spelled('department'), stringish],
  [spelled('costCenter'), stringish],
  [spelled('organization'), stringish],
  [
    spelled('manager'),
    fc.constantFrom<unknown>('a-manager-id', '', { value: 'a-manager-id' }, { Value: 'm2' }, [{ $ref: null, value: 'm3' }], { value: 'm', $ref: '../Users/m' }, { value: 'm', displayName: 'M' }),
    'rare',
  ],
  [fc.constantFrom('unknownThing'), text, 'rare'],
]);
const portal = record([
  [spelled('grade'), stringish],
  [spelled('schoolId'), stringish],
  [spelled('role'), fc.constantFrom('Teacher', 'Student', 'Janitor')],
]);

const user: fc.Arbitrary<Json> = fc
  .tuple(
    record([
      [spelled('userName'), fc.oneof({ weight: 9, arbitrary: fc.constantFrom('Pupil1@School.example', 'teacher@school.example', 'x') }, { weight: 1, arbitrary: stringish })],
      [spelled('externalId'), fc.oneof(fc.uuid(), stringish)],
      [spelled('active'), booleanish],
      [spelled('displayName'), stringish],
      [spelled('title'), stringish],
      [spelled('nickName'), stringish],
      [spelled('preferredLanguage'), fc.constantFrom('sv-SE', 'nb-NO')],
      [spelled('userType'), stringish],
      [spelled('name'), fc.oneof({ weight: 8, arbitrary: record([[spelled('givenName'), stringish], [spelled('familyName'), stringish], [spelled('formatted'), stringish], [fc.constant('nick'), text, 'rare']]) }, { weight: 1, arbitrary: fc.constantFrom<unknown>('Anna', [{ givenName: 'A' }]) })],
      [spelled('emails'), fc.oneof({ weight: 8, arbitrary: email }, { weight: 1, arbitrary: fc.constantFrom<unknown>({ value: 'a@b' }, 'a@b') })],
      [spelled('phoneNumbers'), phone],
      [spelled('addresses'), address],
      [spelled('roles'), role],
      [spelled('profileUrl'), fc.constantFrom('https://example.org/p', 'not a url'), 'rare'],
      [spelled('photos'), fc.constant([{ value: 'https://example.org/p.jpg', type: 'photo' }]), 'rare'],
      [spelled('password'), text, 'rare'],
      [fc.constantFrom('id', 'meta', 'groups'), fc.constantFrom<unknown>('abc', { version: 'W/"1"' }, [{ value: 'g' }]), 'rare'],
      [fc.constantFrom('unknownAttribute', 'urn:example:other:1.0:thing'), text, 'rare'],
      [fc.constantFrom(`${ENTERPRISE}:department`, `${ENTERPRISE}:manager`, `${PORTAL}:grade`), text, 'rare'],
    ]),
    maybe(enterprise),
    maybe(portal),
    fc.constantFrom<unknown>(undefined, [USER], [USER, ENTERPRISE], [USER, ENTERPRISE, PORTAL], ['urn:example:other:1.0'], [USER.toLowerCase()], [5]),
    fc.constantFrom(ENTERPRISE, ENTERPRISE.toLowerCase()),
  )
  .map(([core, ext, school, schemas, enterpriseKey]) => ({
    ...core,
    ...(ext ? { [enterpriseKey]: ext } : {}),
    ...(school ? { [PORTAL]: school } : {}),
    ...(schemas !== undefined ? { schemas } : {}),
  }));

const group: fc.Arbitrary<Json> = fc
  .tuple(
    record([
      [spelled('displayName'), fc.oneof({ weight: 9, arbitrary: fc.constantFrom('7A', 'Matematik 7A', '') }, { weight: 1, arbitrary: stringish })],
      [spelled('externalId'), fc.oneof(fc.uuid(), stringish)],
      [fc.constantFrom('unknownAttribute', 'id'), text, 'rare'],
    ]),
    fc.constantFrom<unknown>(undefined, [GROUP], ['http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group', GROUP]),
  )
  .map(([core, schemas]) => ({ ...core, ...(schemas !== undefined ? { schemas } : {}) }));

/** The body as the user and class routes hand it to coerceResource. */
function prepared(resource: ResourceName, body: Json): Json | undefined {
  let normalised: Json;
  try {
    normalised = normaliseResource(resource, body);
  } catch {
    return undefined;
  }
  if (resource === 'User') {
    delete normalised.id;
    delete normalised.meta;
    delete normalised.groups;
    if (!Array.isArray(normalised.schemas) || !normalised.schemas.includes(USER)) {
      normalised.schemas = [USER, ...(Array.isArray(normalised.schemas) ? (normalised.schemas as string[]) : [])];
    }
  } else {
    // Members are written apart from the class's own attributes.
    delete normalised.id;
    delete normalised.meta;
    if (!Array.isArray(normalised.schemas) || normalised.schemas.length === 0) normalised.schemas = [GROUP];
  }
  return normalised;
}

/** The account columns of a coerced user, or the SCIM error the mapper raises. */
function columns(resource: Json): string {
  try {
    return JSON.stringify(fromScimUser(resource, ROLES));
  } catch (error) {
    if (error instanceof ScimError) return JSON.stringify({ status: error.status, scimType: error.scimType, detail: error.message });
    throw error;
  }
}

function scimmyResult(resource: ResourceName, body: Json): string | { error: string } {
  try {
    const coerced = definitionOf(resource).coerce(body, 'in') as Json;
    delete coerced.meta;
    return JSON.stringify(coerced);
  } catch (error) {
    return { error: String(error) };
  }
}

for (const [resource, arbitrary] of [
  ['User', user],
  ['Group', group],
] as const) {
  t.test(`what the direct path accepts of a ${resource}, scimmy accepts and coerces alike`, async (t) => {
    let direct = 0;
    let handedOver = 0;
    let appRoles = 0;
    fc.assert(
      fc.property(arbitrary, (body) => {
        const input = prepared(resource, body);
        if (input === undefined) return;
        const before = JSON.stringify(input);
        const simple = coerceSimpleResource(definitionOf(resource), input);
        if (JSON.stringify(input) !== before) throw new Error('the direct path modified its input');
        if (simple === undefined) {
          handedOver++;
          return;
        }
        direct++;
        if (JSON.stringify(body).includes('06b07648')) appRoles++;
        const expected = scimmyResult(resource, input);
        const actual = JSON.stringify(simple);
        if (actual !== expected) throw new Error(`direct ${actual}\nscimmy ${JSON.stringify(expected)}`);
        if (resource === 'User') {
          const coerced = coerceResource('User', input, { scimmyOnly: true });
          delete coerced.meta;
          const viaScimmy = columns(coerced);
          const viaDirect = columns(simple);
          if (viaDirect !== viaScimmy) throw new Error(`columns differ:\n${viaDirect}\n${viaScimmy}`);
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    t.ok(direct >= RUNS / 10, `the direct path took ${direct} of ${RUNS} bodies`);
    t.ok(handedOver >= RUNS / 5, `${handedOver} of ${RUNS} bodies went to scimmy`);
    if (resource === 'User') t.ok(appRoles >= RUNS / 200, `${appRoles} bodies with app roles as JSON text took the direct path`);
  });
}

t.test("Entra's default user and a plain class take the direct path", async (t) => {
  const body = prepared('User', {
    schemas: [USER, ENTERPRISE],
    externalId: '00000000-0000-4000-8000-000000000001',
    userName: 'Pupil1@School.example',
    active: 'True',
    displayName: 'Pupil 1',
    name: { givenName: 'Pupil', familyName: 'One', formatted: 'Pupil One' },
    emails: [{ primary: true, type: 'work', value: 'pupil1@school.example' }],
    roles: [{ primary: 'True', type: 'WindowsAzureActiveDirectoryRole', value: 'Student' }],
    [ENTERPRISE]: { employeeNumber: '1001', department: 'Norra skolan', manager: { value: 'abc' } },
  });
  t.ok(body);
  const simple = coerceSimpleResource(definitionOf('User'), body ?? {});
  t.ok(simple, 'the user is simple');
  t.equal(JSON.stringify(simple), scimmyResult('User', body ?? {}));
  t.equal(simple?.active, true);
  const classBody = prepared('Group', { schemas: [GROUP], externalId: 'c1', displayName: '7A' }) ?? {};
  t.same(coerceSimpleResource(definitionOf('Group'), classBody), { schemas: [GROUP], externalId: 'c1', displayName: '7A' });
});

t.test('a body the direct path refuses is still coerced by scimmy', async (t) => {
  // A reference (profileUrl) is scimmy's to check: a valid one is kept.
  const body = prepared('User', { schemas: [USER], userName: 'a@school.example', profileUrl: 'https://example.org/a' }) ?? {};
  t.equal(coerceSimpleResource(definitionOf('User'), body), undefined);
  t.equal(coerceResource('User', body).profileUrl, 'https://example.org/a');
  // A missing userName is scimmy's error.
  const missing = prepared('User', { schemas: [USER], displayName: 'A' }) ?? {};
  t.equal(coerceSimpleResource(definitionOf('User'), missing), undefined);
  t.throws(() => coerceResource('User', missing), new ScimError(400, 'invalidValue', "Required attribute 'userName' is missing"));
});
