// The admin API: its own credentials, tenants' sync health, conflicts right
// after they happen, audit events with paging; onboarding (tenants,
// settings, credentials, disconnect and connect) with validation and audit
// events; a verified domain held by one tenant only.
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { runCli } from '../src/cli.js';
import { createAdminCredential, revokeAdminCredential } from '../src/db/admin-credentials.js';
import { recordAudit } from '../src/db/audit.js';
import { updateTenantSettings } from '../src/db/tenants.js';
import { testApp, testEnv, type TestApp } from './helpers/app.js';
import { client, entraUser } from './helpers/scim.js';

t.test('admin API: credentials, status, conflicts, audit paging', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const out: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => out.push(s), env: testEnv({ DATABASE_URL: env.database.url }) };
  t.equal(await runCli(['admin-token', 'issue', '--json'], io), 0, out.join('\n'));
  const { token, id: adminId } = JSON.parse(out.pop() ?? '{}') as { token: string; id: string };
  const admin = (url: string, authorization = `Bearer ${token}`) => env.app.inject({ method: 'GET', url, headers: { authorization } });

  for (const [label, authorization] of [
    ['no token', ''],
    ["a tenant's SCIM token", `Bearer ${env.token}`],
    ['garbage', 'Bearer a.b.c'],
  ] as const) {
    const res = await admin('/admin/tenants', authorization);
    t.equal(res.statusCode, 401, label);
    t.match(res.headers['www-authenticate'], /portal-scim-admin/, label);
  }
  const scimWithAdmin = await env.app.inject({ method: 'GET', url: '/scim/v2/Users', headers: { authorization: `Bearer ${token}` } });
  t.equal(scimWithAdmin.statusCode, 401, 'an admin token does not open SCIM');

  await env.db
    .insertInto('accounts')
    .values({ tenant_id: env.tenant.id, managed_by: 'manual', role: 'admin', user_name: 'head', email: 'pupil2@school.example', scim: '{}' })
    .execute();
  for (let i = 1; i <= 3; i++) await scim('POST', '/Users', entraUser(i));

  const list = await admin('/admin/tenants');
  t.equal(list.statusCode, 200);
  t.match(list.json().tenants, [{ tenantId: env.tenant.id, name: 'Test School', openConflicts24h: 1 }]);
  const one = await admin(`/admin/tenants/${env.tenant.id}`);
  t.match(one.json(), {
    openConflicts: 1,
    accounts: [{ role: 'student', active: true, count: 2 }],
    conflicts: [{ kind: 'admin-collision', object_ref: 'Pupil2@School.example' }],
  });
  t.equal((await admin(`/admin/tenants/${env.tenant.id}/conflicts`)).json().conflicts.length, 1, 'the conflict shows right after it happened');

  const first = await admin(`/admin/tenants/${env.tenant.id}/audit?limit=2`);
  t.equal(first.statusCode, 200);
  const page1 = first.json();
  t.same(page1.events.map((e: { action: string }) => e.action), ['create', 'conflict'], 'newest first');
  t.ok(page1.next);
  const page2 = (await admin(page1.next as string)).json();
  t.same(page2.events.map((e: { action: string }) => e.action), ['create']);
  t.notOk(page2.next, 'the last page has no next');

  t.equal((await admin('/admin/tenants/6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11')).statusCode, 404);
  t.equal((await admin(`/admin/tenants/${env.tenant.id}/audit?limit=0`)).statusCode, 400);

  await revokeAdminCredential(env.db, adminId);
  t.equal((await admin('/admin/tenants')).statusCode, 401, 'a revoked admin token is refused');
});

async function adminClient(env: TestApp) {
  const credential = await createAdminCredential(env.db, 'onboarding test', null);
  const token = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  const call = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, body?: unknown) =>
    env.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  return { call, credentialId: credential.id };
}

t.test('onboarding by API: tenant, settings, Secret Token, OAuth client, revocation, disconnect and connect, each audited', async (t) => {
  const env = await testApp(t);
  const { call, credentialId: adminId } = await adminClient(env);

  const created = await call('POST', '/admin/tenants', {
    name: '  Södra skolan ',
    verifiedDomains: ['Sodra.example', 'elev.sodra.example', 'sodra.example'],
    roleMapping: { Janitor: 'staff' },
    retentionDays: 60,
  });
  t.equal(created.statusCode, 201, created.body);
  const tenant = created.json();
  t.match(tenant, { name: 'Södra skolan', verifiedDomains: ['sodra.example', 'elev.sodra.example'], roleMapping: { janitor: 'staff' }, retentionDays: 60, connected: true });
  t.equal(created.headers.location, `/admin/tenants/${tenant.id}`);
  t.match(await env.db.selectFrom('tenants').selectAll().where('id', '=', tenant.id).executeTakeFirstOrThrow(), {
    name: 'Södra skolan',
    verified_domains: ['sodra.example', 'elev.sodra.example'],
    role_mapping: { janitor: 'staff' },
    retention_days: 60,
  });

  const issued = await call('POST', `/admin/tenants/${tenant.id}/tokens`, { label: 'Entra', expires: '90d' });
  t.equal(issued.statusCode, 201, issued.body);
  const token = issued.json();
  t.match(token, { tenantId: tenant.id, tenantUrl: 'https://scim.example.test/scim/v2', token: /^ey/ });
  t.notOk('warnings' in token, 'no warning for an https PUBLIC_URL Entra can reach');
  const scim = (authorization: string) => env.app.inject({ method: 'GET', url: '/scim/v2/Users', headers: { authorization } });
  t.equal((await scim(`Bearer ${token.token as string}`)).statusCode, 200, 'the issued token opens SCIM for the new tenant');

  const client = await call('POST', `/admin/tenants/${tenant.id}/clients`, {});
  t.equal(client.statusCode, 201, client.body);
  const { clientId, clientSecret, tokenUrl } = client.json();
  t.equal(tokenUrl, 'https://scim.example.test/oauth/token');
  const granted = await env.app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }).toString(),
  });
  t.equal(granted.statusCode, 200, 'the client gets access tokens');

  const listed = await call('GET', `/admin/tenants/${tenant.id}/credentials`);
  t.equal(listed.statusCode, 200);
  t.match(listed.json().credentials, [
    { id: token.id, kind: 'token', label: 'Entra', state: 'active', flags: [], lastUsedAt: String },
    { id: clientId, kind: 'client', state: 'active', lastUsedAt: String },
  ]);
  t.notMatch(listed.body, /ey[\w-]{20,}\.|scrypt/, 'never a token or a secret hash');

  const changed = await call('PATCH', `/admin/tenants/${tenant.id}`, { verifiedDomains: ['sodra.example'], retentionDays: 7 });
  t.equal(changed.statusCode, 200, changed.body);
  t.match(changed.json(), { verifiedDomains: ['sodra.example'], retentionDays: 7, name: 'Södra skolan', changed: ['verifiedDomains', 'retentionDays'] });

  const revoked = await call('DELETE', `/admin/tenants/${tenant.id}/credentials/${token.id as string}`);
  t.equal(revoked.statusCode, 200);
  t.match(revoked.json(), { id: token.id, state: 'revoked', alreadyRevoked: false });
  t.equal((await scim(`Bearer ${token.token as string}`)).statusCode, 401, 'the revoked token is refused');
  const again = await call('DELETE', `/admin/tenants/${tenant.id}/credentials/${token.id as string}`);
  t.equal(again.statusCode, 200, 'revoking twice is no error');
  t.match(again.json(), { state: 'revoked', alreadyRevoked: true });
  t.equal((await call('DELETE', `/admin/tenants/${env.tenant.id}/credentials/${clientId as string}`)).statusCode, 404, "another tenant's credential is not found");

  const disconnected = await call('POST', `/admin/tenants/${tenant.id}/disconnect`);
  t.equal(disconnected.statusCode, 200);
  t.match(disconnected.json(), { connected: false, alreadyDisconnected: false, credentials: 1 });
  t.match((await call('POST', `/admin/tenants/${tenant.id}/disconnect`)).json(), { connected: false, alreadyDisconnected: true, credentials: 0 });
  const refused = await call('POST', `/admin/tenants/${tenant.id}/tokens`);
  t.equal(refused.statusCode, 409, 'no credential for a disconnected tenant');
  t.match(refused.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '409', detail: /is disconnected; connect it first/ });
  t.match((await call('POST', `/admin/tenants/${tenant.id}/connect`)).json(), { connected: true, alreadyConnected: false });
  t.match((await call('POST', `/admin/tenants/${tenant.id}/connect`)).json(), { connected: true, alreadyConnected: true });

  const events = await env.db.selectFrom('audit_events').selectAll().where('tenant_id', '=', tenant.id).orderBy('id').execute();
  t.same(
    events.map((e) => [e.action, e.object_type, (e.details as { operation?: string }).operation ?? null]),
    [
      ['create', 'tenant', null],
      ['credential', 'credential', 'issue'],
      ['credential', 'credential', 'issue'],
      ['settings', 'tenant', null],
      ['credential', 'credential', 'revoke'],
      ['disconnect', 'tenant', null],
      ['connect', 'tenant', null],
    ],
    'one audit event per change, none for what was already done',
  );
  for (const e of events) t.match(e.details, { via: 'admin-api', adminCredentialId: adminId }, `${e.action} names the admin credential`);
  t.notMatch(JSON.stringify(events), new RegExp(`${token.token as string}|${clientSecret as string}`), 'no secret in the audit log');
});

t.test('onboarding by API refuses bad input with SCIM errors, and unknown tenants with 404', async (t) => {
  const env = await testApp(t);
  const { call } = await adminClient(env);
  const cases: [string, 'POST' | 'PATCH', string, unknown, RegExp][] = [
    ['no name', 'POST', '/admin/tenants', { verifiedDomains: [] }, /name must be 1 to 200 characters/],
    ['an empty name', 'POST', '/admin/tenants', { name: '   ' }, /name must be 1 to 200 characters/],
    ['a list body', 'POST', '/admin/tenants', [], /must be a JSON object/],
    ['an unknown field', 'POST', '/admin/tenants', { name: 'X', domains: ['x.example'] }, /Unknown field domains/],
    ['a bad domain', 'POST', '/admin/tenants', { name: 'X', verifiedDomains: ['not a domain'] }, /not a domain name/],
    ['domains not a list', 'POST', '/admin/tenants', { name: 'X', verifiedDomains: 'x.example' }, /verifiedDomains must be a list/],
    ['an admin role', 'POST', '/admin/tenants', { name: 'X', roleMapping: { Boss: 'admin' } }, /sync never grants admin/],
    ['retention out of range', 'PATCH', `/admin/tenants/${env.tenant.id}`, { retentionDays: 9999 }, /retentionDays must be a whole number/],
    ['nothing to change', 'PATCH', `/admin/tenants/${env.tenant.id}`, {}, /Nothing to change/],
    ['a bad lifetime', 'POST', `/admin/tenants/${env.tenant.id}/tokens`, { expires: 'soon' }, /not a duration/],
    ['an unknown credential field', 'POST', `/admin/tenants/${env.tenant.id}/clients`, { scope: 'x' }, /Unknown field scope/],
  ];
  for (const [label, method, url, body, detail] of cases) {
    const res = await call(method, url, body);
    t.equal(res.statusCode, 400, label);
    t.match(res.headers['content-type'], /^application\/scim\+json/, label);
    t.match(res.json(), { status: '400', scimType: 'invalidValue', detail }, label);
  }
  t.equal((await call('POST', '/admin/tenants', '{"name": ')).statusCode, 400, 'malformed JSON');
  t.equal(await env.db.selectFrom('tenants').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow().then((r) => Number(r.n)), 1, 'no tenant was created');
  t.match(await env.db.selectFrom('tenants').selectAll().where('id', '=', env.tenant.id).executeTakeFirstOrThrow(), { retention_days: 30 }, 'nothing was changed');

  const unknown = '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11';
  for (const [method, url] of [
    ['PATCH', `/admin/tenants/${unknown}`],
    ['POST', `/admin/tenants/${unknown}/disconnect`],
    ['POST', `/admin/tenants/${unknown}/connect`],
    ['POST', `/admin/tenants/${unknown}/tokens`],
    ['POST', `/admin/tenants/${unknown}/clients`],
    ['GET', `/admin/tenants/${unknown}/credentials`],
    ['DELETE', `/admin/tenants/${unknown}/credentials/${unknown}`],
    ['DELETE', `/admin/tenants/${env.tenant.id}/credentials/${unknown}`],
    ['POST', '/admin/tenants/nope/tokens'],
  ] as const) {
    const res = await call(method, url, method === 'PATCH' ? { name: 'X' } : undefined);
    t.equal(res.statusCode, 404, `${method} ${url}`);
    t.match(res.json(), { status: '404', detail: /^No (tenant|credential) / });
  }
  const anonymous = await env.app.inject({ method: 'POST', url: '/admin/tenants', headers: { 'content-type': 'application/json' }, payload: '{"name":"X"}' });
  t.equal(anonymous.statusCode, 401, 'onboarding needs an admin token');
  const withScimToken = await env.app.inject({ method: 'POST', url: `/admin/tenants/${env.tenant.id}/tokens`, headers: { authorization: `Bearer ${env.token}` } });
  t.equal(withScimToken.statusCode, 401, "a tenant's SCIM token cannot issue credentials");
});

t.test('a verified domain belongs to one tenant: the API, the CLI and the database refuse a second claim', async (t) => {
  const env = await testApp(t);
  const { call } = await adminClient(env);
  const io = { out: () => undefined, err: (s: string) => errors.push(s), env: testEnv({ DATABASE_URL: env.database.url }) };
  const errors: string[] = [];

  const taken = await call('POST', '/admin/tenants', { name: 'Copy School', verifiedDomains: ['other.example', 'SCHOOL.example'] });
  t.equal(taken.statusCode, 409);
  t.match(taken.json(), {
    status: '409',
    scimType: 'uniqueness',
    detail: `The domain school.example is already a verified domain of tenant Test School (${env.tenant.id}); a domain belongs to one tenant only.`,
  });
  const other = (await call('POST', '/admin/tenants', { name: 'Other School', verifiedDomains: ['other.example'] })).json();
  const moved = await call('PATCH', `/admin/tenants/${other.id as string}`, { verifiedDomains: ['other.example', 'school.example'] });
  t.equal(moved.statusCode, 409, 'a change cannot take it either');
  t.match(moved.json().detail, /school\.example is already a verified domain of tenant Test School/);
  t.equal((await call('PATCH', `/admin/tenants/${env.tenant.id}`, { verifiedDomains: ['school.example', 'extra.school.example'] })).statusCode, 200, 'its owner keeps it');

  t.equal(await runCli(['tenant', 'create', '--name', 'CLI Copy', '--domain', 'School.Example'], io), 1);
  t.match(errors.join('\n'), /The domain school\.example is already a verified domain of tenant Test School/);
  t.equal(await runCli(['tenant', 'set', other.id as string, '--domain', 'extra.school.example'], io), 1);

  // The database holds the line too, for a write that skips the check.
  await t.rejects(updateTenantSettings(env.db, other.id as string, { verifiedDomains: ['school.example'] }), { code: '23505', constraint: 'tenants_verified_domain_owner' });
  // Two tenants claiming one new domain at once: exactly one gets it.
  const claims = await Promise.all(
    ['A', 'B', 'C'].map((n) => call('POST', '/admin/tenants', { name: `Race ${n}`, verifiedDomains: ['race.example'] })),
  );
  t.same(claims.map((c) => c.statusCode).sort(), [201, 409, 409], 'one claim wins, the others are refused');
  const owners = await env.db.selectFrom('tenants').select('name').where(sql<boolean>`verified_domains @> ARRAY['race.example']`).execute();
  t.equal(owners.length, 1);
});

/** A test app with an admin token issued through the CLI, the CLI's output, and the admin API's view of the test tenant. */
async function withAdminToken(t: Test) {
  const env = await testApp(t);
  const out: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => out.push(s), env: testEnv({ DATABASE_URL: env.database.url }) };
  t.equal(await runCli(['admin-token', 'issue', '--json'], io), 0, out.join('\n'));
  const { token } = JSON.parse(out.pop() ?? '{}') as { token: string };
  const tenantView = async (): Promise<unknown> =>
    (await env.app.inject({ method: 'GET', url: `/admin/tenants/${env.tenant.id}`, headers: { authorization: `Bearer ${token}` } })).json();
  return { env, scim: client(env.app, env.headers), out, io, token, tenantView };
}

t.test('conflicts of the last 24 hours are those seen in them, however long ago they opened', async (t) => {
  const { env, scim, out, io, tenantView } = await withAdminToken(t);
  const overview = async () => (await tenantView()) as { openConflicts24h: number; openConflicts: number };
  const cliOverview = async () => {
    t.equal(await runCli(['status', '--tenant', env.tenant.id, '--json'], io), 0);
    return JSON.parse(out.pop() ?? '{}') as { openConflicts24h: number; openConflicts: number };
  };

  await env.db
    .insertInto('accounts')
    .values({ tenant_id: env.tenant.id, managed_by: 'manual', role: 'admin', user_name: 'head', email: 'pupil1@school.example', scim: '{}' })
    .execute();
  t.equal((await scim('POST', '/Users', entraUser(1))).statusCode, 409);
  await sql`UPDATE sync_conflicts SET at = at - interval '2 days', last_seen_at = last_seen_at - interval '2 days'`.execute(env.db);
  t.match(await overview(), { openConflicts24h: 0, openConflicts: 1 }, 'opened two days ago and not seen since: not of the last 24 hours');

  t.equal((await scim('POST', '/Users', entraUser(1))).statusCode, 409, "Entra's next cycle meets it again");
  t.match(await overview(), { openConflicts24h: 1, openConflicts: 1 }, 'seen again now: of the last 24 hours');
  t.match(await cliOverview(), { openConflicts24h: 1, openConflicts: 1 }, 'the CLI says the same');
});

t.test('a school whose only Secret Token expired is failing, and says what to do; a new token ends it', async (t) => {
  const { env, scim, out, io, tenantView } = await withAdminToken(t);
  const health = async () => ((await tenantView()) as { health: string }).health;
  const cliHealth = async () => {
    t.equal(await runCli(['status', '--tenant', env.tenant.id], io), 0);
    return (out.pop() ?? '').split('\n').find((line) => line.startsWith('Health')) ?? '';
  };

  t.equal((await scim('POST', '/Users', entraUser(1))).statusCode, 201);
  t.equal(await health(), 'healthy', 'it syncs');
  await sql`UPDATE credentials SET expires_at = now() - interval '1 minute' WHERE tenant_id = ${env.tenant.id}::uuid`.execute(env.db);
  t.equal(await health(), 'failing', 'its only credential has expired: every request Entra sends is refused');
  t.match(await cliHealth(), /failing: no credential works: .*expired or been revoked.*portal-scim token issue --tenant /, 'and the CLI says why and what to do');

  t.equal(await runCli(['token', 'issue', '--tenant', env.tenant.id, '--json'], io), 0);
  out.pop();
  t.equal(await health(), 'healthy', 'a new token ends it');

  t.equal(await runCli(['tenant', 'create', '--name', 'New School', '--json'], io), 0);
  const fresh = (JSON.parse(out.pop() ?? '{}') as { id: string }).id;
  t.equal(await runCli(['status', '--tenant', fresh], io), 0);
  t.match(out.pop() ?? '', /Health: +never synced: no request from Entra yet, and no credential issued: issue a Secret Token/, 'a school not yet given a credential is told apart');
});

t.test('audit events list by when they happened, also one written after later ones, and page on', async (t) => {
  const { env, scim, token } = await withAdminToken(t);
  const admin = async (url: string): Promise<unknown> => (await env.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } })).json();
  for (let i = 1; i <= 3; i++) t.equal((await scim('POST', '/Users', entraUser(i))).statusCode, 201);
  const [first, second, third] = await env.db.selectFrom('audit_events').select(['id', 'at']).where('tenant_id', '=', env.tenant.id).orderBy('id').execute();
  if (!first || !second || !third) throw new Error('three creates, three events');
  // A failed write that waited out an outage: written last, at the time Entra got its answer, between the first two creates.
  const between = new Date((first.at.getTime() + second.at.getTime()) / 2);
  await recordAudit(env.db, { tenantId: env.tenant.id, action: 'update', objectType: 'user', outcome: 'failure', details: { status: 503 }, at: between });
  // And two events of one time.
  await sql`UPDATE audit_events SET at = (SELECT at FROM audit_events WHERE id = ${second.id}) WHERE id = ${third.id}`.execute(env.db);

  const newestFirst = ['Pupil3@School.example', 'Pupil2@School.example', null, 'Pupil1@School.example'];
  const whole = (await admin(`/admin/tenants/${env.tenant.id}/audit`)) as { events: { object_ref: string | null }[] };
  t.same(
    whole.events.map((e) => e.object_ref),
    newestFirst,
    'newest first by time; the later-written failure where its time puts it, and of one time the later-written first',
  );
  const seen: (string | null)[] = [];
  let next: string | undefined = `/admin/tenants/${env.tenant.id}/audit?limit=1`;
  while (next !== undefined) {
    const page = (await admin(next)) as { events: { object_ref: string | null }[]; next?: string };
    seen.push(...page.events.map((e) => e.object_ref));
    next = page.next;
  }
  t.same(seen, newestFirst, 'page by page, the same order, each event once');
  const other = await env.db.selectFrom('audit_events').select((eb) => eb.fn.max('id').as('id')).executeTakeFirstOrThrow();
  for (const before of [String(Number(other.id) + 1000), '0']) {
    const res = await env.app.inject({ method: 'GET', url: `/admin/tenants/${env.tenant.id}/audit?before=${before}`, headers: { authorization: `Bearer ${token}` } });
    t.equal(res.statusCode, 400, `before=${before}, no event of the tenant: refused, not an empty last page`);
    t.match(res.json(), { scimType: 'invalidValue', detail: 'before must be an event id from a previous page.' });
  }
});
