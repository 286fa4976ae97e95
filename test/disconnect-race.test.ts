// Rule 8 under concurrency: a SCIM write in flight while the tenant is
// disconnected ends as one of the two serial orders. Write first: it lands,
// and the disconnect then turns its row manual like every other. Disconnect
// first: the write is refused as its token would be, and writes nothing.
// Never a synced row in a disconnected tenant. Each order is forced with a
// lock held by a transaction of the test, not left to timing.
import type { PoolClient } from 'pg';
import t, { type Test } from 'tap';
import { disconnectTenant } from '../src/services/tenants.js';
import { testApp, type TestApp } from './helpers/app.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

const CLI = { via: 'cli' } as const;

/** Backends of this test's database waiting on a lock, other than `except`. */
async function lockWaiters(env: TestApp, except: PoolClient): Promise<number> {
  const { rows } = await env.database.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1`,
    [(except as unknown as { processID: number }).processID],
  );
  return rows[0]?.n ?? 0;
}

/** Waits until `count` backends wait on a lock, or `done` settles first; true when they wait. */
async function untilWaiting(env: TestApp, holder: PoolClient, count: number, done?: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void done?.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 400 && !settled; i++) {
    if ((await lockWaiters(env, holder)) >= count) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
}

async function holder(t: Test, env: TestApp): Promise<PoolClient> {
  const connection = await env.database.pool.connect();
  t.teardown(() => connection.release());
  await connection.query('BEGIN');
  return connection;
}

async function syncedRows(env: TestApp): Promise<{ accounts: number; all: number }> {
  const { rows } = await env.database.pool.query<{ synced: number; all: number }>(
    `SELECT count(*) FILTER (WHERE managed_by = 'sync')::int AS synced, count(*)::int AS all FROM accounts WHERE tenant_id = $1`,
    [env.tenant.id],
  );
  return { accounts: rows[0]?.synced ?? -1, all: rows[0]?.all ?? -1 };
}

t.test('a create in flight when the tenant is disconnected lands, and the disconnect turns it manual', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  // A transaction of the test holds the userName's place in the unique
  // index, so the create waits inside its statement, past its guards.
  const hold = await holder(t, env);
  await hold.query(`INSERT INTO accounts (tenant_id, managed_by, user_name, scim) VALUES ($1, 'sync', 'pupil1@school.example', '{}')`, [env.tenant.id]);
  const created = scim('POST', '/Users', entraUser(1));
  t.ok(await untilWaiting(env, hold, 1, created), 'the create waits on the held row');

  const disconnected = disconnectTenant(env.db, env.tenant.id, CLI);
  // The disconnect waits for the write in flight; were it not to, it would
  // finish here without seeing the row that is still to commit.
  t.ok(await untilWaiting(env, hold, 2, disconnected), 'the disconnect waits for the write in flight');
  await hold.query('ROLLBACK');

  const answer = await created;
  t.equal(answer.statusCode, 201, answer.body);
  const result = await disconnected;
  t.equal(result.accounts, 1, 'the disconnect turned the new account manual');
  t.same(await syncedRows(env), { accounts: 0, all: 1 }, 'no synced account is left in the disconnected tenant');
  const row = await env.database.pool.query<{ managed_by: string }>('SELECT managed_by FROM accounts WHERE id = $1', [answer.json().id]);
  t.equal(row.rows[0]?.managed_by, 'manual');
});

t.test('a write reaching the tenant while a disconnect holds it is refused once the disconnect commits', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const existing = await scim('POST', '/Users', entraUser(2));
  t.equal(existing.statusCode, 201, existing.body);

  // The test's transaction is a disconnect that has marked the tenant and
  // not committed yet: the writes pass the token check and meet it at their guards.
  const hold = await holder(t, env);
  await hold.query('SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE', [env.tenant.id]);
  await hold.query('UPDATE tenants SET disconnected_at = now() WHERE id = $1', [env.tenant.id]);
  await hold.query(`UPDATE accounts SET managed_by = 'manual', version = version + 1 WHERE tenant_id = $1 AND managed_by = 'sync'`, [env.tenant.id]);

  // A user create, a class create and a change of the existing user.
  const writes = [
    scim('POST', '/Users', entraUser(3)),
    scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', externalId: 'class-7a' }),
    scim('PATCH', `/Users/${existing.json().id}`, patch({ op: 'Replace', path: 'displayName', value: 'Renamed' })),
  ];
  t.ok(await untilWaiting(env, hold, writes.length, Promise.all(writes)), 'the writes wait for the disconnect');
  await hold.query('COMMIT');

  // The change, planned from the account as it was, reads it again once its
  // guard fails and finds no user of Entra's: it too is told of the disconnect.
  for (const answer of await Promise.all(writes)) {
    t.equal(answer.statusCode, 401, answer.body);
    t.match(answer.headers['www-authenticate'], /^Bearer realm="portal-scim", error="invalid_token"/);
    t.match(answer.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '401', detail: /disconnected/ });
  }
  t.same(await syncedRows(env), { accounts: 0, all: 1 }, 'no account was written: the one account is the one from before, manual');
  const { rows } = await env.database.pool.query<{ display_name: string; version: number }>('SELECT display_name, version FROM accounts WHERE id = $1', [existing.json().id]);
  t.same(rows, [{ display_name: 'Pupil 2', version: 2 }], 'the change was not applied (the version is the disconnect\'s)');
  const classes = await env.database.pool.query('SELECT 1 FROM classes WHERE tenant_id = $1', [env.tenant.id]);
  t.equal(classes.rowCount, 0, 'no class was written');
  const audits = await env.database.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1 AND outcome = 'success' AND action IN ('create', 'update')`,
    [env.tenant.id],
  );
  t.equal(audits.rows[0]?.n, 1, 'only the first create is audited as written');
});

t.test('writes that pass a cached token check after a disconnect are refused with 401 and write nothing', async (t) => {
  const env = await testApp(t, { CREDENTIAL_CACHE_SECONDS: '60' });
  const scim = client(env.app, env.headers);
  const user = await scim('POST', '/Users', entraUser(4));
  const klass = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 8B', externalId: 'class-8b', members: [{ value: user.json().id }] });
  t.equal(klass.statusCode, 201, klass.body);
  const result = await disconnectTenant(env.db, env.tenant.id, CLI);
  t.match(result, { accounts: 1, classes: 1 });

  // The credential is still cached as live, so each request reaches its write.
  const answers = [
    await scim('POST', '/Users', entraUser(5)),
    await scim('PATCH', `/Users/${user.json().id}`, patch({ op: 'Replace', path: 'displayName', value: 'Renamed' })),
    await scim('PUT', `/Users/${user.json().id}`, entraUser(4, { displayName: 'Replaced' })),
    await scim('DELETE', `/Users/${user.json().id}`),
    await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 9C', externalId: 'class-9c' }),
    await scim('PATCH', `/Groups/${klass.json().id}`, patch({ op: 'Add', path: 'members', value: [{ value: user.json().id }] })),
    await scim('DELETE', `/Groups/${klass.json().id}`),
  ];
  t.same(
    answers.map((a) => a.statusCode),
    answers.map(() => 401),
    answers.map((a) => a.body).join('\n'),
  );
  for (const answer of answers) t.match(answer.json(), { status: '401', detail: /disconnected/ });
  const rows = await env.database.pool.query<{ what: string; managed_by: string; name: string | null; deleted: boolean }>(
    `SELECT 'account' AS what, managed_by, display_name AS name, deleted_at IS NOT NULL AS deleted FROM accounts WHERE tenant_id = $1
     UNION ALL SELECT 'class', managed_by, display_name, false FROM classes WHERE tenant_id = $1 ORDER BY what`,
    [env.tenant.id],
  );
  t.same(
    rows.rows,
    [
      { what: 'account', managed_by: 'manual', name: 'Pupil 4', deleted: false },
      { what: 'class', managed_by: 'manual', name: 'Class 8B', deleted: false },
    ],
    'the account and the class stay as the disconnect left them; nothing new',
  );
});
