// Prometheus metrics: only the admin credential reads them; requests count by
// route pattern, method, status and tenant; audit outcomes count by tenant;
// each tenant's health is a gauge; each app has its own registry; METRICS_PORT
// serves them without a credential.
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { Registry } from 'prom-client';
import t from 'tap';
import { signAdminToken, signToken } from '../src/auth/tokens.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { createCredential, revokeCredential } from '../src/db/credentials.js';
import { createMetrics, listenMetrics } from '../src/metrics.js';
import { testApp, testEnv, tenantWithToken, type TestApp } from './helpers/app.js';
import { capturedLogger } from './helpers/log-lines.js';
import { GROUP, USER, client, entraUser, patch } from './helpers/scim.js';

async function adminToken(env: TestApp): Promise<string> {
  const credential = await createAdminCredential(env.db, 'metrics test', null);
  return signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
}

/** The value of one series in the exposition text; undefined when it is not there. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v) && Object.keys(found).length === Object.keys(labels).length) return Number(match[3]);
  }
  return undefined;
}

t.test('GET /metrics needs the admin credential', async (t) => {
  const env = await testApp(t);
  const token = await adminToken(env);
  for (const [label, authorization] of [
    ['no credential', undefined],
    ["a tenant's SCIM token", `Bearer ${env.token}`],
    ['garbage', 'Bearer a.b.c'],
  ] as const) {
    const res = await env.app.inject({ method: 'GET', url: '/metrics', headers: authorization ? { authorization } : {} });
    t.equal(res.statusCode, 401, label);
    t.match(res.headers['www-authenticate'], /portal-scim-admin/, label);
    t.notMatch(res.body, /portal_scim_http_requests_total/, `${label}: no metrics in the answer`);
  }
  const res = await env.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], Registry.PROMETHEUS_CONTENT_TYPE);
  t.match(res.body, /# TYPE portal_scim_http_requests_total counter/);
  t.match(res.body, /# TYPE portal_scim_http_request_duration_seconds histogram/);
  t.match(res.body, /# TYPE portal_scim_provisioning_events_total counter/);
  t.ok((sample(res.body, 'portal_scim_db_pool_connections', {}) ?? 0) >= 1, 'the pool holds a connection');
  t.equal(sample(res.body, 'portal_scim_db_pool_waiting_requests', {}), 0, 'nothing waits for the pool');
  t.ok(sample(res.body, 'portal_scim_db_pool_idle_connections', {}) !== undefined);
});

t.test('SCIM requests and provisioning outcomes are counted per tenant, route and status', async (t) => {
  const env = await testApp(t);
  const token = await adminToken(env);
  const scim = client(env.app, env.headers);
  const tenant = env.tenant.id;

  // A portal admin whose e-mail Entra's user 3 collides with (a conflict), and
  // a manual account Entra's user 4 adopts.
  await env.db
    .insertInto('accounts')
    .values([
      { tenant_id: tenant, managed_by: 'manual', role: 'admin', user_name: 'head', email: 'pupil3@school.example', scim: '{}' },
      { tenant_id: tenant, managed_by: 'manual', role: 'student', user_name: 'old-4', email: 'pupil4@school.example', scim: '{}' },
    ])
    .execute();
  const first = await scim('POST', '/Users', entraUser(1));
  t.equal(first.statusCode, 201);
  t.equal((await scim('POST', '/Users', entraUser(2))).statusCode, 201);
  t.equal((await scim('POST', '/Users', entraUser(3))).statusCode, 409);
  t.equal((await scim('POST', '/Users', entraUser(4))).statusCode, 201);
  const id = first.json().id as string;
  t.equal((await scim('GET', `/Users/${id}`)).statusCode, 200);
  t.equal((await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'active', value: false }))).statusCode, 200);
  t.equal((await scim('DELETE', `/Users/${id}`)).statusCode, 204);
  t.equal((await scim('GET', `/Users/${id}`)).statusCode, 404);
  t.equal((await scim('PUT', `/Users/${id}`, entraUser(1))).statusCode, 404);
  const group = await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A', externalId: 'class-7a' });
  t.equal(group.statusCode, 201);
  t.equal((await scim('DELETE', `/Groups/${group.json().id as string}`)).statusCode, 204);

  // A second tenant that has synced before but sends nothing now.
  const quiet = await tenantWithToken(env.db, env.config, env.keys, 'Quiet School', ['quiet.example']);
  await env.db.updateTable('tenants').set({ last_request_at: new Date('2024-01-02T03:04:05Z') }).where('id', '=', quiet.tenant.id).execute();

  const res = await env.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } });
  t.equal(res.statusCode, 200);
  const text = res.body;
  const requests = (route: string, method: string, status: number) =>
    sample(text, 'portal_scim_http_requests_total', { route, method, status: String(status), tenant });
  t.equal(requests('/scim/v2/Users', 'POST', 201), 3, 'three creates answered 201');
  t.equal(requests('/scim/v2/Users', 'POST', 409), 1, 'the conflict answered 409');
  t.equal(requests('/scim/v2/Users/:id', 'GET', 200), 1);
  t.equal(requests('/scim/v2/Users/:id', 'GET', 404), 1);
  t.equal(requests('/scim/v2/Users/:id', 'DELETE', 204), 1);
  t.equal(requests('/scim/v2/Groups', 'POST', 201), 1);
  t.notMatch(text, new RegExp(id), 'raw URLs never become labels');
  t.equal(
    sample(text, 'portal_scim_http_request_duration_seconds_count', { route: '/scim/v2/Users', method: 'POST' }),
    4,
    'every POST /Users is timed',
  );

  const outcome = (object: string, action: string, result: string) =>
    sample(text, 'portal_scim_provisioning_events_total', { tenant, object, action, outcome: result });
  t.equal(outcome('user', 'create', 'success'), 2, 'created');
  t.equal(outcome('user', 'adopt', 'success'), 1, 'adopted');
  t.equal(outcome('user', 'conflict', 'conflict'), 1, 'conflicts');
  t.equal(outcome('user', 'deactivate', 'success'), 1, 'deactivated');
  t.equal(outcome('user', 'delete', 'success'), 1, 'deleted');
  t.equal(outcome('user', 'update', 'failure'), 1, 'the failed PUT');
  t.equal(outcome('group', 'create', 'success'), 1);
  t.equal(outcome('group', 'delete', 'success'), 1);

  t.equal(
    sample(text, 'portal_scim_tenant_last_request_timestamp_seconds', { tenant: quiet.tenant.id }),
    Date.parse('2024-01-02T03:04:05Z') / 1000,
    "a tenant's last request comes from the database",
  );

  // A second app in the same process keeps its own registry.
  const other = await testApp(t);
  const otherToken = await adminToken(other);
  const otherText = (await other.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${otherToken}` } })).body;
  t.notMatch(otherText, new RegExp(tenant), "the other app counted none of this app's requests");
  t.equal(sample(otherText, 'portal_scim_provisioning_events_total', { tenant, object: 'user', action: 'create', outcome: 'success' }), undefined);
});

t.test('a write whose transaction does not commit is not counted', async (t) => {
  const env = await testApp(t, {}, { writeStrategy: 'locked' });
  const token = await adminToken(env);
  const scim = client(env.app, env.headers);
  // Refuses one userName when its transaction commits, after the write's own statement (and its audit row) succeeded.
  await sql`CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.user_name = 'refused@school.example' THEN RAISE EXCEPTION 'refused at commit' USING ERRCODE = '23514'; END IF;
      RETURN NULL;
    END $$`.execute(env.db);
  await sql`CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON accounts DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()`.execute(env.db);
  t.equal((await scim('POST', '/Users', entraUser(1))).statusCode, 201);
  const refused = await scim('POST', '/Users', entraUser(2, { userName: 'refused@school.example' }));
  t.equal(refused.statusCode, 400, refused.body);
  t.equal(await env.db.selectFrom('accounts').select('id').where('user_name', '=', 'refused@school.example').executeTakeFirst(), undefined, 'nothing was written');
  t.equal((await env.db.selectFrom('audit_events').select('id').where('action', '=', 'create').where('outcome', '=', 'success').execute()).length, 1);
  const text = (await env.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } })).body;
  t.equal(sample(text, 'portal_scim_provisioning_events_total', { tenant: env.tenant.id, object: 'user', action: 'create', outcome: 'success' }), 1, 'only the committed create is counted');
});

t.test("a gauge gives each tenant's health as one of five states", async (t) => {
  const env = await testApp(t);
  const token = await adminToken(env);
  const scim = client(env.app, env.headers);
  t.equal((await scim('POST', '/Users', entraUser(1))).statusCode, 201);
  t.equal((await scim('POST', '/Users', { schemas: [USER] })).statusCode, 400);
  t.equal((await scim('POST', '/Users', { schemas: [USER] })).statusCode, 400);
  const fresh = await tenantWithToken(env.db, env.config, env.keys, 'New School', ['new.example']);
  const quiet = await tenantWithToken(env.db, env.config, env.keys, 'Quiet School', ['quiet.example']);
  await env.db.updateTable('tenants').set({ last_request_at: new Date(Date.now() - 5 * 3_600_000) }).where('id', '=', quiet.tenant.id).execute();
  const gone = await tenantWithToken(env.db, env.config, env.keys, 'Gone School', ['gone.example']);
  await env.db.updateTable('tenants').set({ disconnected_at: new Date() }).where('id', '=', gone.tenant.id).execute();
  // Request counts reach the database every 10 seconds; a scrape reads what is there.
  await env.app.flushRequestCounts();

  const text = (await env.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${token}` } })).body;
  t.match(text, /# TYPE portal_scim_tenant_health gauge/);
  const states = ['failing', 'silent', 'never synced', 'healthy', 'disconnected'];
  const health = (tenant: string) => Object.fromEntries(states.map((state) => [state, sample(text, 'portal_scim_tenant_health', { tenant, state })]));
  const only = (state: string) => Object.fromEntries(states.map((s) => [s, s === state ? 1 : 0]));
  t.same(health(env.tenant.id), only('failing'), 'two of three writes failed');
  t.same(health(fresh.tenant.id), only('never synced'));
  t.same(health(quiet.tenant.id), only('silent'), 'five hours without a request');
  t.same(health(gone.tenant.id), only('disconnected'));
});

t.test('METRICS_PORT serves the registry without a credential, and is validated', async (t) => {
  const env = await testApp(t);
  await client(env.app, env.headers)('GET', '/Users');
  const server = await listenMetrics(env.app.metricsRegistry, '127.0.0.1', 0);
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const res = await fetch(`${base}/metrics`);
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), Registry.PROMETHEUS_CONTENT_TYPE);
  t.equal(
    sample(await res.text(), 'portal_scim_http_requests_total', { route: '/scim/v2/Users', method: 'GET', status: '200', tenant: env.tenant.id }),
    1,
  );
  t.equal((await fetch(`${base}/`)).status, 404, 'nothing else is served there');

  t.equal(loadConfig(testEnv({ METRICS_PORT: '9464' })).metricsPort, 9464);
  t.equal(loadConfig(testEnv()).metricsPort, undefined);
  for (const bad of [{ METRICS_PORT: 'abc' }, { METRICS_PORT: '70000' }, { METRICS_PORT: '8080', PORT: '8080' }]) {
    let caught: unknown;
    try {
      loadConfig(testEnv(bad));
    } catch (error) {
      caught = error;
    }
    t.type(caught, ConfigError, JSON.stringify(bad));
    t.equal((caught as ConfigError).variable, 'METRICS_PORT');
  }
});

t.test("a refused token of this server (revoked or expired) counts, and logs, under the tenant it names; a forged one under none", async (t) => {
  const { logger, lines } = capturedLogger();
  const env = await testApp(t, {}, { logger });
  const settings = { keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience };
  const revoked = await createCredential(env.db, { tenantId: env.tenant.id, kind: 'token' });
  await revokeCredential(env.db, revoked.id);
  const tokens = {
    revoked: signToken(settings, { tid: env.tenant.id, jti: revoked.id }),
    expired: signToken(settings, { tid: env.tenant.id, jti: env.credentialId }, new Date(Date.now() - 120_000)),
    forged: `${env.token.slice(0, -4)}AAAA`,
  };
  for (const [name, token] of Object.entries(tokens)) {
    const res = await env.app.inject({ method: 'GET', url: '/scim/v2/Users', headers: { authorization: `Bearer ${token}`, 'x-request-id': name } });
    t.equal(res.statusCode, 401, name);
  }
  const completed = (id: string) => lines.find((l) => l.requestId === id && l.msg === 'request completed');
  t.match(completed('revoked'), { tenantId: env.tenant.id, res: { statusCode: 401 } }, "a revoked token's refusal names its tenant");
  t.match(completed('expired'), { tenantId: env.tenant.id, res: { statusCode: 401 } }, "an expired token's too");
  t.notOk('tenantId' in (completed('forged') ?? {}), 'a forged token names none');
  t.notOk(JSON.stringify(lines).includes(tokens.expired), 'no token in the log');

  const text = (await env.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${await adminToken(env)}` } })).body;
  t.equal(sample(text, 'portal_scim_http_requests_total', { route: '/scim/v2/Users', method: 'GET', status: '401', tenant: env.tenant.id }), 2, 'two refusals counted under the tenant');
  t.equal(sample(text, 'portal_scim_http_requests_total', { route: '/scim/v2/Users', method: 'GET', status: '401', tenant: '' }), 1, 'the forged one under none');
});

t.test('an event that stands for several refused answers counts each of them', async (t) => {
  const env = await testApp(t);
  const metrics = createMetrics({ db: env.db, health: { silentAfterMs: 3_600_000 } });
  const refused = { tenantId: env.tenant.id, action: 'create', objectType: 'user', outcome: 'failure', details: { status: 429 } } as const;
  metrics.countAudit(refused);
  metrics.countAudit({ ...refused, details: { status: 429, answers: 29 } });
  const text = await metrics.registry.getSingleMetricAsString('portal_scim_provisioning_events_total');
  t.equal(sample(text, 'portal_scim_provisioning_events_total', { tenant: env.tenant.id, object: 'user', action: 'create', outcome: 'failure' }), 30);
});
