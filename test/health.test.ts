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
import { TEST_SECRET, testApp, testEnv } from './helpers/app.js';

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
  let embedded = await openEmbeddedPostgres({ dataDir });
  t.teardown(() => embedded.stop());
  const { db } = createDb(embedded.url, { poolSize: 2, connectionTimeoutMs: 1000 });
  t.teardown(() => db.destroy());
  const app = await buildApp({ config: loadConfig(testEnv()), db, keys: signingKeys(TEST_SECRET) });
  t.teardown(() => app.close());

  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, 'ready while up');

  await embedded.stop();
  const down = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(down.statusCode, 503, 'not ready while down');
  t.equal(down.headers['retry-after'], '5');
  t.match(down.json(), { status: 'unavailable' });
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'still alive while the database is down');

  embedded = await openEmbeddedPostgres({ dataDir });
  t.equal(embedded.owned, true);
  const back = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(back.statusCode, 200, 'ready again without a restart of the app');
});
