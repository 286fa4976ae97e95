// Every failed SCIM write says why. Its audit event keeps what Entra
// received (status, scimType, the detail as sent) and what names the object
// (userName or displayName and externalId from the body, the id in the
// path), and no other value of the body. The admin API and portal-scim
// status show recent failures grouped by message, values folded, with counts
// and the latest objects. The log line of a failed request carries the
// scimType and the detail with the request's values folded away.
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import t from 'tap';
import { buildApp } from '../src/app.js';
import { signAdminToken } from '../src/auth/tokens.js';
import { signingKeys } from '../src/auth/keys.js';
import { runCli } from '../src/cli.js';
import { loadConfig } from '../src/config.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { createLogger } from '../src/logger.js';
import { MAX_DETAIL_LENGTH, clippedDetail } from '../src/errors.js';
import { failureMessage, foldValues } from '../src/plugins/errors.js';
import { TEST_SECRET, tenantWithToken, testApp, testEnv, type TestApp } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';
import { GROUP, USER, client, entraUser, patch } from './helpers/scim.js';

const UNKNOWN = '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11';

async function failures(env: TestApp) {
  const rows = await sql<{ action: string; object_type: string; object_id: string | null; object_ref: string | null; request_id: string; details: Record<string, unknown> }>`
    SELECT action, object_type, object_id, object_ref, request_id, details FROM audit_events
     WHERE tenant_id = ${env.tenant.id}::uuid AND outcome = 'failure' ORDER BY id`.execute(env.db);
  return rows.rows;
}

async function adminToken(env: TestApp): Promise<string> {
  const credential = await createAdminCredential(env.db, 'failures test', null);
  return signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
}

t.test("a failed write's audit event keeps the detail Entra received, its status and scimType, and the object's reference only", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  t.equal((await scim('POST', '/Users', entraUser(1))).statusCode, 201);
  const userId = (await env.db.selectFrom('accounts').select('id').where('tenant_id', '=', env.tenant.id).executeTakeFirstOrThrow()).id;

  const sent: { status: number; detail: string }[] = [];
  const fail = async (status: number, ...args: Parameters<typeof scim>) => {
    const res = await scim(...args);
    t.equal(res.statusCode, status, `${args[0]} ${args[1]} answers ${status}`);
    const body = res.json<{ detail: string }>();
    sent.push({ status, detail: body.detail });
    return res;
  };
  // A second Entra user with the first one's userName, in another case.
  await fail(409, 'POST', '/Users', entraUser(2, { userName: 'PUPIL1@school.example', displayName: 'Second Pupil' }), { 'x-request-id': 'dup-1' });
  await fail(400, 'POST', '/Users', { ...entraUser(3), userName: undefined }, { 'x-request-id': 'no-name' });
  await fail(400, 'PATCH', `/Users/${userId}`, patch({ op: 'Jump', path: 'displayName', value: 'Secret Name' }), { 'x-request-id': 'bad-op' });
  await fail(404, 'PATCH', '/Users/not-an-id', patch({ op: 'Replace', path: 'displayName', value: 'Secret Name' }), { 'x-request-id': 'no-id' });
  await fail(404, 'PATCH', `/Users/${UNKNOWN}`, patch({ op: 'Replace', path: 'displayName', value: 'Secret Name' }), { 'x-request-id': 'gone' });
  await fail(400, 'POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7B', externalId: 'class-7b', members: [{ value: UNKNOWN }] }, { 'x-request-id': 'not-user' });

  // Neither a search nor a read is a write; a refusal its handler records itself (rule 3) is a conflict, not a failure.
  t.equal((await scim('POST', '/Users/.search', { schemas: ['urn:ietf:params:scim:api:messages:2.0:SearchRequest'], filter: 'userName eq' })).statusCode, 400);
  t.equal((await scim('GET', `/Users/${UNKNOWN}`)).statusCode, 404);

  const rows = await failures(env);
  t.same(
    rows.map((r) => [r.request_id, r.action, r.object_type, r.object_id, r.object_ref]),
    [
      ['dup-1', 'create', 'user', null, 'PUPIL1@school.example'],
      ['no-name', 'create', 'user', null, null],
      ['bad-op', 'update', 'user', userId, null],
      ['no-id', 'update', 'user', null, null],
      ['gone', 'update', 'user', UNKNOWN, null],
      ['not-user', 'create', 'group', null, 'Class 7B'],
    ],
    'one failure event per failed write, naming its object',
  );
  t.same(
    rows.map((r) => r.details),
    [
      {
        status: 409,
        scimType: 'uniqueness',
        detail: sent[0]?.detail,
        message: 'A user with userName "…" already exists (userName is unique in any case).',
        externalId: '00000000-0000-4000-8000-000000000002',
      },
      { status: 400, scimType: 'invalidValue', detail: "Required attribute 'userName' is missing", message: "Required attribute 'userName' is missing", externalId: '00000000-0000-4000-8000-000000000003' },
      { status: 400, scimType: 'invalidSyntax', detail: sent[2]?.detail, message: 'Operation N has an unknown op "…"; use add, replace or remove.' },
      { status: 404, detail: 'No user not-an-id.', message: 'No user <id>.', id: 'not-an-id' },
      { status: 404, detail: `No user ${UNKNOWN}.`, message: 'No user <id>.' },
      {
        status: 400,
        scimType: 'invalidValue',
        detail: sent[5]?.detail,
        message: 'Members must be users of this tenant (nested groups are not supported); not a user here: ….',
        externalId: 'class-7b',
      },
    ],
    'each keeps the status, scimType and detail Entra received, and the message it groups under',
  );
  t.equal(sent[0]?.detail, 'A user with userName "PUPIL1@school.example" already exists (userName is unique in any case).', 'the detail as sent, value and all');
  t.equal(sent[2]?.detail, 'Operation 1 has an unknown op "Jump"; use add, replace or remove.');
  const stored = JSON.stringify(rows);
  for (const value of ['Second Pupil', 'Secret Name', 'pupil2@school.example', 'Number 2', '1002', 'Norra skolan']) {
    t.notOk(stored.includes(value), `no other attribute value in the audit log (${value})`);
  }

  const huge = 'x'.repeat(5000);
  await fail(400, 'POST', '/Users', { schemas: [USER], userName: `${huge}@school.example`, externalId: huge });
  const [last] = (await failures(env)).slice(-1);
  t.equal(last?.object_ref?.length, 257, 'a reference is cut to 256 characters and an ellipsis');
  t.equal((last?.details.externalId as string).length, 257);
});

t.test('a detail that quotes a huge request is cut: the answer, the audit event and the failure list keep its beginning', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json<{ id: string }>().id;
  const sent = [
    // An op, a path and a value of close to a megabyte each, quoted back in the detail; and one character past the BMP on the cut.
    { op: 'a'.repeat(900_000), path: 'title', value: 'x' },
    { op: 'replace', path: `${'p'.repeat(65_000)}`, value: 'x' },
    { op: `${'b'.repeat(MAX_DETAIL_LENGTH - 40)}😀😀😀`, path: 'title', value: 'x' },
  ];
  for (const operation of sent) {
    const res = await scim('PATCH', `/Users/${id}`, { schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [operation] });
    t.equal(res.statusCode, 400);
    const detail = res.json<{ detail: string }>().detail;
    t.ok(detail.length <= MAX_DETAIL_LENGTH, `the answer's detail is ${detail.length} characters`);
    t.ok(detail.endsWith('…'), 'and says it was cut');
    t.notMatch(detail, /[\uD800-\uDBFF](?![\uDC00-\uDFFF])/, 'no half of a character');
  }
  const rows = await failures(env);
  t.equal(rows.length, 3, 'each failure recorded');
  // A character outside the BMP where the cut falls is kept whole or not at all.
  const onTheCut = clippedDetail(`${'a'.repeat(MAX_DETAIL_LENGTH - 2)}😀${'b'.repeat(10)}`);
  t.equal(onTheCut, `${'a'.repeat(MAX_DETAIL_LENGTH - 2)}…`);
  t.equal(clippedDetail('short'), 'short');
  for (const row of rows) t.ok(JSON.stringify(row.details).length < 2 * MAX_DETAIL_LENGTH + 500, `an audit event of ${JSON.stringify(row.details).length} characters`);
});

t.test('a DELETE answered 404 is no failed write: health, the request counts and the failure list leave it out', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const token = await adminToken(env);
  const tenant = async () => {
    const res = await env.app.inject({ method: 'GET', url: `/admin/tenants/${env.tenant.id}`, headers: { authorization: `Bearer ${token}` } });
    t.equal(res.statusCode, 200);
    return res.json<{ health: string; writesLastHour: number; writeFailuresLastHour: number; failures: unknown[] }>();
  };
  const counts = async () => {
    await env.app.flushRequestCounts();
    const rows = await sql<{ requests: number; failures: number; writes: number; write_failures: number }>`
      SELECT sum(requests)::int AS requests, sum(failures)::int AS failures, sum(writes)::int AS writes, sum(write_failures)::int AS write_failures
        FROM request_counts WHERE tenant_id = ${env.tenant.id}::uuid`.execute(env.db);
    return rows.rows[0];
  };

  const user = await scim('POST', '/Users', entraUser(1));
  t.equal(user.statusCode, 201);
  const userId = user.json<{ id: string }>().id;
  const group = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7C', externalId: 'class-7c' });
  t.equal(group.statusCode, 201);
  const groupId = group.json<{ id: string }>().id;
  t.equal((await scim('DELETE', `/Users/${userId}`)).statusCode, 204);
  t.equal((await scim('DELETE', `/Groups/${groupId}`)).statusCode, 204);
  // Entra repeats each delete, as it does when the first answer never reached it.
  const again = await scim('DELETE', `/Users/${userId}`, undefined, { 'x-request-id': 'user-again' });
  t.equal(again.statusCode, 404, 'the answer is still 404: Entra takes it to mean the user is gone');
  t.match(again.json(), { status: '404', detail: `No user ${userId}.` });
  t.equal((await scim('DELETE', `/Groups/${groupId}`, undefined, { 'x-request-id': 'group-again' })).statusCode, 404);
  t.equal((await scim('DELETE', `/Users/${UNKNOWN}`)).statusCode, 404, 'a user this server never had');

  t.same(await failures(env), [], 'no failure event');
  t.same(await counts(), { requests: 7, failures: 0, writes: 7, write_failures: 0 }, 'seven writes, none failed');
  t.match(await tenant(), { health: 'healthy', writesLastHour: 7, writeFailuresLastHour: 0, failures: [] });

  // Any other write that finds its object gone is still a failure: the change Entra sent was not made.
  t.equal((await scim('PATCH', `/Users/${userId}`, patch({ op: 'Replace', path: 'displayName', value: 'Back' }), { 'x-request-id': 'patch-gone' })).statusCode, 404);
  t.same(
    (await failures(env)).map((r) => [r.request_id, r.action, r.object_id]),
    [['patch-gone', 'update', userId]],
  );
  t.same(await counts(), { requests: 8, failures: 1, writes: 8, write_failures: 1 });
  t.match(await tenant(), { health: 'failing', writesLastHour: 8, writeFailuresLastHour: 1, failures: [{ message: 'No user <id>.', count: 1, status: 404 }] });
  // So is a DELETE answered 404 at an address that names no user or class.
  t.equal((await scim('DELETE', `/Users/${userId}/manager`)).statusCode, 404);
  t.same(await counts(), { requests: 9, failures: 2, writes: 8, write_failures: 1 }, 'a failed request, not a write');
});

t.test('failures are grouped by message, values folded, with counts, the latest detail and the latest objects: admin API and portal-scim status', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  for (const n of [1, 2, 3]) t.equal((await scim('POST', '/Users', entraUser(n))).statusCode, 201);
  // Entra retries: user 1's duplicate three times, 2's and 3's once; two users without a userName.
  for (const n of [1, 1, 2, 1, 3]) t.equal((await scim('POST', '/Users', entraUser(10 + n, { userName: `Pupil${n}@School.example` }))).statusCode, 409);
  for (const n of [21, 22]) t.equal((await scim('POST', '/Users', { ...entraUser(n), userName: '' })).statusCode, 400);

  const token = await adminToken(env);
  const admin = (url: string) => env.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } });
  const res = await admin(`/admin/tenants/${env.tenant.id}/failures`);
  t.equal(res.statusCode, 200);
  const body = res.json<{ hours: number; failures: Record<string, unknown>[] }>();
  t.equal(body.hours, 24);
  t.match(body.failures, [
    {
      message: 'A user with userName "…" already exists (userName is unique in any case).',
      count: 5,
      status: 409,
      scimType: 'uniqueness',
      latestDetail: 'A user with userName "Pupil3@School.example" already exists (userName is unique in any case).',
      objects: ['Pupil3@School.example', 'Pupil1@School.example', 'Pupil2@School.example'],
    },
    {
      message: 'userName is required and must not be empty.',
      count: 2,
      status: 400,
      scimType: 'invalidValue',
      objects: ['00000000-0000-4000-8000-000000000022', '00000000-0000-4000-8000-000000000021'],
    },
  ]);
  t.equal(body.failures.length, 2, 'one group per message');
  t.ok(typeof body.failures[0]?.firstAt === 'string' && typeof body.failures[0]?.lastAt === 'string', 'when each group began and last failed');
  t.equal((await admin(`/admin/tenants/${env.tenant.id}/failures?hours=0`)).statusCode, 400);
  t.equal((await admin(`/admin/tenants/${UNKNOWN}/failures`)).statusCode, 404);
  t.match((await admin(`/admin/tenants/${env.tenant.id}`)).json(), { failures24h: 7, failures: [{ count: 5 }, { count: 2 }] }, "the tenant's status carries the groups");

  const io = { out: [] as string[], err: [] as string[] };
  const cliEnv = testEnv({ DATABASE_URL: env.database.url });
  const cli = async (...argv: string[]) => {
    io.out.length = 0;
    const code = await runCli(argv, { out: (s) => io.out.push(s), err: (s) => io.err.push(s), env: cliEnv });
    return { code, out: io.out.join('\n') };
  };
  const json = await cli('status', '--tenant', env.tenant.id, '--json');
  t.equal(json.code, 0);
  t.match(JSON.parse(json.out), { failures24h: 7, failures: [{ message: 'A user with userName "…" already exists (userName is unique in any case).', count: 5, objects: ['Pupil3@School.example', 'Pupil1@School.example', 'Pupil2@School.example'] }, { count: 2 }] });
  const text = await cli('status', '--tenant', env.tenant.id);
  t.match(text.out, /Failures \(24 h\): +7\n +5× 409 uniqueness {2}A user with userName "…" already exists \(userName is unique in any case\)\.\n +last \d{4}-\d\d-\d\d \d\d:\d\d UTC; latest: Pupil3@School\.example, Pupil1@School\.example, Pupil2@School\.example\n +2× 400 invalidValue {2}userName is required/);
});

t.test('the log line of a failed request carries its scimType and the detail with the values the request sent folded away', async (t) => {
  const database = await testDatabase(t);
  const config = loadConfig(testEnv({ LOG_LEVEL: 'info' }));
  const keys = signingKeys(TEST_SECRET);
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const app = await buildApp({ config, db: database.db, pool: database.pool, keys, logger: createLogger('info', destination) });
  t.teardown(() => app.close());
  const { headers } = await tenantWithToken(database.db, config, keys);
  const scim = client(app, headers);
  t.equal((await scim('POST', '/Users', entraUser(1))).statusCode, 201);
  t.equal((await scim('POST', '/Users', entraUser(2, { userName: 'Pupil1@School.example' }), { 'x-request-id': 'dup' })).statusCode, 409);
  const id = (await database.db.selectFrom('accounts').select('id').executeTakeFirstOrThrow()).id;
  t.equal((await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'emails[value eq "hidden.address@school.example"].colour', value: 'red' }), { 'x-request-id': 'path' })).statusCode, 400);
  t.equal((await scim('PATCH', '/Groups/' + UNKNOWN, patch({ op: 'Add', path: 'members', value: [{ value: 'not-a-member-id' }] }), { 'x-request-id': 'group' })).statusCode, 404);

  t.equal((await scim('GET', `/Users?filter=${encodeURIComponent('employeeNumber gt 98765e999')}`, undefined, { 'x-request-id': 'range' })).statusCode, 400);
  t.equal((await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Pupil 2' }), { 'x-request-id': 'stale', 'if-match': 'if-match-marker' })).statusCode, 412);
  const long = `/admin/tenants/${'x'.repeat(9000)}`;
  t.equal((await app.inject({ method: 'GET', url: `${long}?filter=${'y'.repeat(50)}`, headers: { 'x-request-id': 'long' } })).statusCode, 414);
  t.equal((await scim('GET', `/${'z'.repeat(9000)}`, undefined, { 'x-request-id': 'long-404' })).statusCode, 404);
  const completed = (requestId: string) => lines.find((l) => l.requestId === requestId && l.msg === 'request completed');
  const longLines = lines.filter((l) => l.requestId === 'long');
  t.ok(longLines.length > 0, 'the long request is logged');
  for (const line of longLines) {
    const url = (line.req as { url?: string } | undefined)?.url;
    const kept = `${long}?filter`;
    if (url !== undefined) t.equal(url, `${kept.slice(0, 300)}… (${kept.length - 300} more characters)`, 'a long path is logged cut, with what was cut');
  }
  t.ok(longLines.some((l) => (l.req as { url?: string } | undefined)?.url !== undefined), 'its line names the path');
  t.match(completed('long-404'), { res: { statusCode: 404 }, detail: 'No resource at GET <path>.' }, 'the detail names no path: the line has it, cut');
  t.ok(lines.filter((l) => l.requestId === 'long-404').every((l) => JSON.stringify(l).length < 1000), 'no line of it holds the path whole');
  t.match(completed('range'), { res: { statusCode: 400 }, scimType: 'invalidFilter', detail: /number "…" is out of range/ });
  t.match(completed('dup'), { res: { statusCode: 409 }, scimType: 'uniqueness', detail: 'A user with userName "…" already exists (userName is unique in any case).' });
  t.match(completed('path'), { res: { statusCode: 400 }, scimType: 'invalidPath', detail: 'The path "…" names no sub-attribute of emails.' });
  t.match(completed('group'), { res: { statusCode: 404 }, detail: 'No group <id>.' });
  t.equal((await scim('GET', '/Users/path.secret@school.example', undefined, { 'x-request-id': 'name-as-id' })).statusCode, 404);
  const nameAsId = lines.filter((l) => l.requestId === 'name-as-id');
  t.ok(nameAsId.some((l) => (l.req as { url?: string } | undefined)?.url === '/scim/v2/Users/<not an id>'), "a userName in an id's place is not logged");
  t.match(completed('stale'), { res: { statusCode: 412 }, detail: 'The resource has changed: its version is W/"…", not ….' }, 'the If-Match value as sent is not logged');
  t.notOk('scimType' in (completed('group') ?? {}), 'an error without a scimType has none in its line');
  const ok = lines.find((l) => l.msg === 'request completed' && (l.res as { statusCode?: number }).statusCode === 201);
  t.ok(ok && !('detail' in ok), 'a successful request has no detail');
  const all = JSON.stringify(lines);
  for (const value of ['Pupil1@School.example', 'pupil1@school.example', 'hidden.address', 'Pupil 2', 'not-a-member-id', '98765e999', 'if-match-marker', 'path.secret']) {
    t.notOk(all.includes(value), `no value from a body in the log (${value})`);
  }
});

t.test('folding: values, paths, member lists and ids go; attribute names and the kind of error stay', async (t) => {
  const cases: [string, string, string][] = [
    ['A user with userName "a@b.example" already exists.', 'A user with userName "…" already exists.', 'A user with userName "…" already exists.'],
    ['The path "emails[value eq "x@y"].z" names no sub-attribute of emails.', 'The path "…" names no sub-attribute of emails.', 'The path "…" names no sub-attribute of emails.'],
    ['A user with userName "has "quotes" inside" already exists.', 'A user with userName "…" already exists.', 'A user with userName "…" already exists.'],
    [`No user ${UNKNOWN}.`, 'No user <id>.', 'No user <id>.'],
    ['No group not-a-uuid.', 'No group <id>.', 'No group <id>.'],
    ['No resource at GET /scim/v2/Nothing/here.', 'No resource at GET <path>.', 'No resource at GET <path>.'],
    [`Operation 1: ${'y'.repeat(900)}`, `Operation 1: ${'y'.repeat(387)}…`, `Operation N: ${'y'.repeat(387)}…`],
    ['Invalid filter at character 25: number "1e999" is out of range', 'Invalid filter at character 25: number "…" is out of range', 'Invalid filter at character N: number "…" is out of range'],
    ['Operation 3 has an unknown op "Jump"; use add, replace or remove.', 'Operation 3 has an unknown op "…"; use add, replace or remove.', 'Operation N has an unknown op "…"; use add, replace or remove.'],
    ["Attribute 'roles' does not include canonical value 'Principal'", "Attribute 'roles' does not include canonical value '…'", "Attribute 'roles' does not include canonical value '…'"],
    ["Attribute 'active' expected value type 'boolean' but found type 'string'", "Attribute 'active' expected value type 'boolean' but found type 'string'", "Attribute 'active' expected value type 'boolean' but found type 'string'"],
    ['Members must be users of this tenant (nested groups are not supported); not a user here: abc, def and 3 more.', 'Members must be users of this tenant (nested groups are not supported); not a user here: ….', 'Members must be users of this tenant (nested groups are not supported); not a user here: ….'],
    ['displayName is too long: 300 characters, the limit is 256.', 'displayName is too long: 300 characters, the limit is 256.', 'displayName is too long: N characters, the limit is N.'],
    ['The resource has changed: its version is W/"3", not if-match-marker.', 'The resource has changed: its version is W/"…", not ….', 'The resource has changed: its version is W/"…", not ….'],
    ['The resource has changed: its version is W/"3", not W/"2", "x".', 'The resource has changed: its version is W/"…", not ….', 'The resource has changed: its version is W/"…", not ….'],
  ];
  for (const [detail, logged, grouped] of cases) {
    t.equal(foldValues(detail), logged, `logged: ${detail}`);
    t.equal(failureMessage(detail), grouped, `grouped: ${detail}`);
  }
});
