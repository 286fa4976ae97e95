// A failed write is an audit event even when no database connection is free
// to record it at once: the event waits and is written as soon as one is.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import t from 'tap';
import { buildApp } from '../src/app.js';
import { signingKeys } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { createDb } from '../src/db/database.js';
import { TEST_SECRET, tenantWithToken, testEnv } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';

t.test('the audit event of a failed write waits for a free connection instead of being dropped', async (t) => {
  const database = await testDatabase(t);
  // The app's own small pool, so the test can take every connection of it.
  const { db, pool } = createDb(database.url, { poolSize: 2, connectionTimeoutMs: 300 });
  t.teardown(() => db.destroy());
  const config = loadConfig(testEnv({ CREDENTIAL_CACHE_SECONDS: '60' }));
  const keys = signingKeys(TEST_SECRET);
  const app = await buildApp({ config, db, pool, keys });
  t.teardown(() => app.close());
  const { headers, tenant } = await tenantWithToken(database.db, config, keys);
  t.equal((await app.inject({ method: 'GET', url: '/scim/v2/Users?count=1', headers })).statusCode, 200, 'the credential check is remembered');

  // The fault: every connection of the app's pool is taken. Each is released
  // in teardown whatever happens, or closing the pool would wait for it; and
  // opening one may take longer than the pool's short timeout on a busy machine.
  const taken: pg.PoolClient[] = [];
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    for (const client of taken) client.release();
  };
  t.teardown(release);
  while (taken.length < 2) {
    const client = await pool.connect().catch(() => undefined);
    if (client) taken.push(client);
  }

  const userIds = [randomUUID(), randomUUID()];
  const failed = [];
  for (const userId of userIds) {
    const res = await app.inject({ method: 'PATCH', url: `/scim/v2/Users/${userId}`, headers, payload: '{"Operations": [' });
    t.equal(res.statusCode, 400, 'a broken PATCH fails');
    failed.push({ userId, requestId: String(res.headers['x-request-id']) });
  }
  const events = () =>
    database.db
      .selectFrom('audit_events')
      .select(['request_id', 'action', 'object_type', 'object_id', 'outcome', 'credential_id', 'details'])
      .where('tenant_id', '=', tenant.id)
      .where('outcome', '=', 'failure')
      .orderBy('id')
      .execute();
  t.same(await events(), [], 'no connection was free: nothing is recorded yet');
  const answeredBy = Date.now();

  // Written a second later, as after a short outage.
  await sleep(1000);
  const releasedAt = Date.now();
  release();
  let recorded = await events();
  for (let i = 0; i < 100 && recorded.length < failed.length; i++) {
    await sleep(100);
    recorded = await events();
  }
  const credentialId = (await database.db.selectFrom('credentials').select('id').where('tenant_id', '=', tenant.id).executeTakeFirstOrThrow()).id;
  t.same(
    recorded,
    failed.map(({ userId, requestId }) => ({
      request_id: requestId,
      action: 'update',
      object_type: 'user',
      object_id: userId,
      outcome: 'failure',
      credential_id: credentialId,
      details: { status: 400, scimType: 'invalidSyntax', detail: 'The request body is not valid JSON.', message: 'The request body is not valid JSON.' },
    })),
    'both failed writes are recorded, in order, once a connection is free',
  );
  const times = await database.db.selectFrom('audit_events').select('at').where('tenant_id', '=', tenant.id).where('outcome', '=', 'failure').execute();
  t.equal(times.length, failed.length);
  for (const { at } of times) t.ok(at.getTime() <= answeredBy && at.getTime() < releasedAt, 'each bears the time it failed, not the time it was written');
});
