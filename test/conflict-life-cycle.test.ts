// A sync conflict's life, one test per step, with the rows and the audit
// events each step writes: a refusal opens one conflict per tenant, kind and
// object; a retry while it is open is seen again (last seen, count), never a
// new row, even when many arrive at once; the same object's successful write
// closes it in its own statement; the portal team resolves it (CLI) or
// dismisses it (admin API) with a note, and doing so twice changes nothing.
import { sql } from 'kysely';
import t from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { runCli } from '../src/cli.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { testApp, testEnv, type TestApp } from './helpers/app.js';
import { client, entraUser, patch } from './helpers/scim.js';

const OTHER = '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11';

/** A portal admin holding pupil n's e-mail: Entra's user n collides with it (rule 3). */
async function adminInTheWay(env: TestApp, n: number) {
  return env.db
    .insertInto('accounts')
    .values({ tenant_id: env.tenant.id, managed_by: 'manual', role: 'admin', user_name: `head${n}`, email: `pupil${n}@school.example`, scim: '{}' })
    .returning('id')
    .executeTakeFirstOrThrow();
}

const conflicts = (env: TestApp) =>
  env.db.selectFrom('sync_conflicts').selectAll().where('tenant_id', '=', env.tenant.id).orderBy('at').orderBy('request_id').execute();

async function conflictEvents(env: TestApp) {
  const rows = await sql<{ action: string; object_id: string | null; object_ref: string | null; outcome: string; credential_id: string | null; request_id: string | null; details: Record<string, unknown> }>`
    SELECT action, object_id, object_ref, outcome, credential_id, request_id, details FROM audit_events
     WHERE tenant_id = ${env.tenant.id}::uuid AND action IN ('conflict', 'conflict-closed') ORDER BY id`.execute(env.db);
  return rows.rows;
}

async function cli(env: TestApp, ...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env: testEnv({ DATABASE_URL: env.database.url }) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** Opens the conflict of Entra's user 2 with an admin; returns the admin and the conflict. */
async function opened(env: TestApp) {
  const admin = await adminInTheWay(env, 2);
  const res = await client(env.app, env.headers)('POST', '/Users', entraUser(2), { 'x-request-id': 'open' });
  if (res.statusCode !== 409) throw new Error(`expected 409, got ${res.statusCode} ${res.body}`);
  const [conflict] = await conflicts(env);
  if (!conflict) throw new Error('no conflict');
  return { admin, conflict };
}

t.test('opened: a refusal opens one conflict of the object and writes the step as an audit event', async (t) => {
  const env = await testApp(t);
  const { admin, conflict } = await opened(env);
  const rows = await conflicts(env);
  t.equal(rows.length, 1);
  t.match(conflict, {
    tenant_id: env.tenant.id,
    kind: 'admin-collision',
    object_type: 'user',
    object_ref: 'Pupil2@School.example',
    account_id: admin.id,
    request_id: 'open',
    seen_count: 1,
    resolved_at: null,
    resolution: null,
    note: null,
    detail: /belongs to a portal admin account/,
    entra_objects: ['00000000-0000-4000-8000-000000000002'],
  });
  t.equal(conflict.last_seen_at.getTime(), conflict.at.getTime(), 'last seen when it opened');
  t.same(await conflictEvents(env), [
    {
      action: 'conflict',
      object_id: admin.id,
      object_ref: 'Pupil2@School.example',
      outcome: 'conflict',
      credential_id: env.credentialId,
      request_id: 'open',
      details: { reason: 'admin-collision', externalId: '00000000-0000-4000-8000-000000000002', conflict: conflict.id, kind: 'admin-collision', step: 'opened', seen: 1 },
    },
  ]);
});

t.test('two Entra users refused for one address share its conflict, told apart by their object ids', async (t) => {
  const env = await testApp(t);
  const { conflict } = await opened(env);
  const scim = client(env.app, env.headers);
  const existing = (await scim('POST', '/Users', entraUser(5))).json<{ id: string }>().id;
  // An existing pupil renamed onto the admin's address, twice (Entra retries), and user 2 again.
  for (const id of ['rename-1', 'rename-2']) {
    t.equal((await scim('PATCH', `/Users/${existing}`, patch({ op: 'Replace', path: 'userName', value: 'PUPIL2@school.example' }), { 'x-request-id': id })).statusCode, 409);
  }
  t.equal((await scim('POST', '/Users', entraUser(2))).statusCode, 409);

  const rows = await conflicts(env);
  t.equal(rows.length, 1, 'one conflict: one address');
  t.match(rows[0], { id: conflict.id, seen_count: 4, entra_objects: ['00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000005'] }, 'each Entra object once, in the order seen');
  t.same(
    (await conflictEvents(env)).map((e) => e.details.externalId),
    ['00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000005', '00000000-0000-4000-8000-000000000005', '00000000-0000-4000-8000-000000000002'],
    'each refusal names its own',
  );
  const listed = await cli(env, 'conflict', 'list', '--tenant', env.tenant.id);
  t.match(listed.out, `${conflict.id} Entra objects refused: 00000000-0000-4000-8000-000000000002, 00000000-0000-4000-8000-000000000005`);
  const json = JSON.parse((await cli(env, 'conflict', 'list', '--tenant', env.tenant.id, '--json')).out) as { entraObjects: string[] }[];
  t.same(json[0]?.entraObjects, ['00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000005']);
});

t.test('seen again: retries of the same object, in any case and at once, update the open conflict instead of adding rows', async (t) => {
  const env = await testApp(t);
  const { conflict } = await opened(env);
  const scim = client(env.app, env.headers);
  t.equal((await scim('POST', '/Users', entraUser(2), { 'x-request-id': 'retry-1' })).statusCode, 409);
  // The same Entra user with its userName in another case is the same object.
  t.equal((await scim('POST', '/Users', entraUser(2, { userName: 'pupil2@SCHOOL.example' }), { 'x-request-id': 'retry-2' })).statusCode, 409);
  const parallel = await Promise.all([1, 2, 3, 4, 5].map((i) => scim('POST', '/Users', entraUser(2), { 'x-request-id': `burst-${i}` })));
  t.same(parallel.map((r) => r.statusCode), [409, 409, 409, 409, 409], 'five retries at once are refused');

  const rows = await conflicts(env);
  t.equal(rows.length, 1, 'still one conflict');
  t.match(rows[0], { id: conflict.id, request_id: 'open', seen_count: 8, resolved_at: null, object_ref: 'Pupil2@School.example' });
  t.ok((rows[0]?.last_seen_at.getTime() ?? 0) >= conflict.at.getTime(), 'its last sighting moved on');
  const events = await conflictEvents(env);
  t.equal(events.length, 8, 'an audit event per refusal');
  t.same(
    events.map((e) => [e.details.step, e.details.conflict]),
    [['opened', conflict.id], ...Array.from({ length: 7 }, () => ['seen again', conflict.id])],
  );
  t.same(events.map((e) => e.details.seen).sort((a, b) => Number(a) - Number(b)), [1, 2, 3, 4, 5, 6, 7, 8], 'each counts its sighting');
  t.match(events[2], { object_ref: 'pupil2@SCHOOL.example', request_id: 'retry-2', details: { step: 'seen again', seen: 3 } }, 'the event names the refusal as sent');

  // Another object is another conflict.
  await adminInTheWay(env, 3);
  t.equal((await scim('POST', '/Users', entraUser(3))).statusCode, 409);
  t.equal((await conflicts(env)).length, 2);
  const status = await cli(env, 'conflict', 'list', '--tenant', env.tenant.id);
  t.equal(status.code, 0);
  t.match(status.out, new RegExp(`${conflict.id} +open +admin-collision +Pupil2@School\\.example +8 `));
});

t.test('closed by success: the same object written later closes its conflict in the same statement, with an audit event of that request', async (t) => {
  const env = await testApp(t);
  const { admin, conflict } = await opened(env);
  const scim = client(env.app, env.headers);
  // The team gives the admin another address; Entra's next retry succeeds.
  await env.db.updateTable('accounts').set({ email: 'head2@school.example' }).where('id', '=', admin.id).execute();
  const created = await scim('POST', '/Users', entraUser(2, { userName: 'PUPIL2@school.example' }), { 'x-request-id': 'success' });
  t.equal(created.statusCode, 201);
  const userId = created.json<{ id: string }>().id;

  const [closed] = await conflicts(env);
  t.match(closed, { id: conflict.id, resolution: 'succeeded', note: null, seen_count: 1 });
  t.ok(closed?.resolved_at instanceof Date, 'closed');
  const events = await conflictEvents(env);
  t.same(events.at(-1), {
    action: 'conflict-closed',
    object_id: userId,
    object_ref: 'Pupil2@School.example',
    outcome: 'success',
    credential_id: env.credentialId,
    request_id: 'success',
    details: { conflict: conflict.id, kind: 'admin-collision', resolution: 'succeeded' },
  });
  const written = await sql<{ n: number }>`SELECT count(*)::int AS n FROM audit_events WHERE request_id = 'success' AND action = 'create'`.execute(env.db);
  t.equal(written.rows[0]?.n, 1, "and the create's own event");

  // A change is a success too: user 4 refused a rename onto an admin's name, then renamed once it is free.
  const four = (await scim('POST', '/Users', entraUser(4))).json<{ id: string }>();
  const head = await env.db
    .insertInto('accounts')
    .values({ tenant_id: env.tenant.id, managed_by: 'manual', role: 'admin', user_name: 'principal', scim: '{}' })
    .returning('id')
    .executeTakeFirstOrThrow();
  t.equal((await scim('PATCH', `/Users/${four.id}`, patch({ op: 'replace', path: 'userName', value: 'Principal' }))).statusCode, 409);
  t.match(await env.db.selectFrom('sync_conflicts').selectAll().where('object_ref', '=', 'Principal').executeTakeFirstOrThrow(), { resolution: null });
  await env.db.updateTable('accounts').set({ user_name: 'old.principal' }).where('id', '=', head.id).execute();
  t.equal((await scim('PATCH', `/Users/${four.id}`, patch({ op: 'replace', path: 'userName', value: 'PRINCIPAL' }), { 'x-request-id': 'rename' })).statusCode, 200);
  t.match(await env.db.selectFrom('sync_conflicts').selectAll().where('object_ref', '=', 'Principal').executeTakeFirstOrThrow(), { resolution: 'succeeded' });
  t.equal((await conflictEvents(env)).length, events.length + 2, 'the refusal and its closing');
  t.match((await conflictEvents(env)).at(-1), { action: 'conflict-closed', object_id: four.id, request_id: 'rename' });

  // A later refusal of the same object opens a new conflict; the closed one stays closed.
  await env.db.updateTable('accounts').set({ email: 'pupil2.new@school.example' }).where('id', '=', admin.id).execute();
  const again = await scim('PATCH', `/Users/${userId}`, patch({ op: 'Replace', path: 'emails[type eq "work"].value', value: 'Pupil2.New@school.example' }), { 'x-request-id': 'again' });
  t.equal(again.statusCode, 409);
  const mine = (await conflicts(env)).filter((c) => (c.object_ref ?? '').toLowerCase() === 'pupil2@school.example');
  t.same(
    mine.map((c) => [c.id === conflict.id, c.resolution, c.seen_count, c.request_id]),
    [
      [true, 'succeeded', 1, 'open'],
      [false, null, 1, 'again'],
    ],
  );
});

t.test('resolved: the team closes a conflict with a note from the CLI; a second time changes nothing', async (t) => {
  const env = await testApp(t);
  const { conflict } = await opened(env);
  const list = await cli(env, 'conflict', 'list', '--tenant', env.tenant.id, '--json');
  t.equal(list.code, 0, list.err);
  t.match(JSON.parse(list.out), [{ id: conflict.id, state: 'open', kind: 'admin-collision', objectRef: 'Pupil2@School.example', seenCount: 1 }]);

  const resolved = await cli(env, 'conflict', 'resolve', conflict.id, '--note', 'Renamed the head teacher account');
  t.equal(resolved.code, 0, resolved.err);
  t.equal(resolved.out, `Resolved ${conflict.id} (admin-collision, Pupil2@School.example).`);
  t.match(await env.db.selectFrom('sync_conflicts').selectAll().where('id', '=', conflict.id).executeTakeFirstOrThrow(), {
    resolution: 'resolved',
    note: 'Renamed the head teacher account',
    resolved_at: Date,
  });
  const events = await conflictEvents(env);
  t.same(events.at(-1), {
    action: 'conflict-closed',
    object_id: conflict.account_id,
    object_ref: 'Pupil2@School.example',
    outcome: 'success',
    credential_id: null,
    request_id: null,
    details: { conflict: conflict.id, kind: 'admin-collision', resolution: 'resolved', note: 'Renamed the head teacher account', via: 'cli' },
  });

  const again = await cli(env, 'conflict', 'resolve', conflict.id, '--json');
  t.equal(again.code, 0);
  t.match(JSON.parse(again.out), { id: conflict.id, alreadyClosed: true, resolution: 'resolved', note: 'Renamed the head teacher account' });
  const dismissAfter = await cli(env, 'conflict', 'dismiss', conflict.id);
  t.match(dismissAfter.out, /was already closed \(resolved, at .* UTC\); nothing changed\./);
  t.equal((await conflictEvents(env)).length, events.length, 'no event for what changed nothing');

  t.equal((await cli(env, 'conflict', 'list', '--tenant', env.tenant.id)).out, 'No open conflicts.');
  t.match((await cli(env, 'conflict', 'list', '--tenant', env.tenant.id, '--state', 'closed')).out, /resolved +admin-collision[\s\S]*note: Renamed the head teacher account/);
  t.match(await cli(env, 'conflict', 'resolve', OTHER), { code: 1, err: `portal-scim: No conflict ${OTHER}.` });
  t.match(await cli(env, 'conflict', 'resolve', 'nope'), { code: 1, err: /"nope" is not a conflict id/ });
  t.match(await cli(env, 'conflict', 'list', '--tenant', env.tenant.id, '--state', 'old'), { code: 1, err: /"old" is not one of open, closed, all/ });
  t.match(await cli(env, 'conflict', 'resolve', conflict.id, '--note', 'x'.repeat(1001)), { code: 1, err: /note must be text of at most 1000 characters/ });
});

t.test('dismissed: the admin API closes a conflict of the tenant in its path with a note; a second time says it already was', async (t) => {
  const env = await testApp(t);
  const { conflict } = await opened(env);
  const credential = await createAdminCredential(env.db, 'conflict test', null);
  const token = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  const call = (method: 'GET' | 'POST', url: string, body?: unknown) =>
    env.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    });
  const base = `/admin/tenants/${env.tenant.id}/conflicts`;

  t.match((await call('GET', base)).json(), { conflicts: [{ id: conflict.id, seen_count: 1, resolution: null }] });
  t.equal((await call('POST', `${base}/${conflict.id}/dismiss`, { note: 'x', colour: 'red' })).statusCode, 400, 'an unknown field is refused');
  t.equal((await call('POST', `${base}/${conflict.id}/dismiss`, { note: 7 })).statusCode, 400);
  t.equal((await call('POST', `/admin/tenants/${OTHER}/conflicts/${conflict.id}/dismiss`)).statusCode, 404, 'no such tenant');
  const other = await env.db.insertInto('tenants').values({ name: 'Other School', updated_at: new Date() }).returning('id').executeTakeFirstOrThrow();
  t.equal((await call('POST', `/admin/tenants/${other.id}/conflicts/${conflict.id}/dismiss`)).statusCode, 404, "another tenant's path cannot close it");
  t.equal((await call('POST', `${base}/not-an-id/dismiss`)).statusCode, 404);
  t.equal((await env.db.selectFrom('sync_conflicts').select('resolution').where('id', '=', conflict.id).executeTakeFirstOrThrow()).resolution, null, 'none of those closed it');

  const dismissed = await call('POST', `${base}/${conflict.id}/dismiss`, { note: '  The school will rename the pupil  ' });
  t.equal(dismissed.statusCode, 200);
  t.match(dismissed.json(), { id: conflict.id, resolution: 'dismissed', note: 'The school will rename the pupil', alreadyClosed: false });
  t.match((await conflictEvents(env)).at(-1), {
    action: 'conflict-closed',
    details: { conflict: conflict.id, resolution: 'dismissed', note: 'The school will rename the pupil', via: 'admin-api', adminCredentialId: credential.id },
  });
  const again = await call('POST', `${base}/${conflict.id}/resolve`);
  t.equal(again.statusCode, 200);
  t.match(again.json(), { resolution: 'dismissed', alreadyClosed: true });

  t.same((await call('GET', base)).json(), { conflicts: [] }, 'no open conflicts');
  t.match((await call('GET', `${base}?state=closed`)).json(), { conflicts: [{ id: conflict.id, resolution: 'dismissed' }] });
  t.equal((await call('GET', `${base}?state=all`)).json().conflicts.length, 1);
  t.equal((await call('GET', `${base}?state=old`)).statusCode, 400);
  const tenant = (await call('GET', `/admin/tenants/${env.tenant.id}`)).json<{ openConflicts: number; conflicts: unknown[] }>();
  t.equal(tenant.openConflicts, 0);
  t.same(tenant.conflicts, [], "the tenant's status lists no open conflict");
});
