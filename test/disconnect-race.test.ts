// Rule 8 under concurrency: a SCIM write in flight while the tenant is
// disconnected ends as one of the two serial orders. Write first: it lands,
// and the disconnect then turns its row manual like every other. Disconnect
// first: the write is refused as its token would be, and writes nothing.
// Never a synced row in a disconnected tenant. Each order is forced with a
// lock held by a transaction of the test, never left to timing, and each
// wait is identified by who blocks whom (pg_blocking_pids).
import t from 'tap';
import { mergeAccounts } from '../src/services/accounts.js';
import { disconnectTenant } from '../src/services/tenants.js';
import { testApp, type TestApp } from './helpers/app.js';
import { connection, holder, untilBlocked, watcher } from './helpers/locks.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

const CLI = { via: 'cli' } as const;

/** What only a write refused at its tenant guard says (the token check's refusal says otherwise). */
const REFUSED_AT_GUARD = /disconnected and its tokens revoked; nothing was written/;

async function accountsOf(env: TestApp): Promise<{ synced: number; all: number }> {
  const { rows } = await env.database.pool.query<{ synced: number; all: number }>(
    `SELECT count(*) FILTER (WHERE managed_by = 'sync')::int AS synced, count(*)::int AS all FROM accounts WHERE tenant_id = $1 AND deleted_at IS NULL`,
    [env.tenant.id],
  );
  return rows[0] ?? { synced: -1, all: -1 };
}

t.test('a create in flight when the tenant is disconnected lands, and the disconnect waits for it and turns it manual', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  // The test's transaction brings a deleted synced account of the same
  // userName back to life without committing, so the create waits on the
  // unique index inside its statement, past its guards. It touches no lock
  // of the tenant's.
  const { rows } = await env.database.pool.query<{ id: string }>(
    `INSERT INTO accounts (tenant_id, managed_by, user_name, scim, deleted_at) VALUES ($1, 'sync', 'pupil1@school.example', '{}', now()) RETURNING id`,
    [env.tenant.id],
  );
  const blockedBy = watcher(await connection(t, env));
  const { hold, pid: holdPid } = await holder(t, env);
  await hold.query('UPDATE accounts SET deleted_at = NULL WHERE id = $1', [rows[0]?.id]);

  const created = scim('POST', '/Users', entraUser(1));
  const [createPid] = (await untilBlocked(blockedBy, holdPid, 1, created)) ?? [];
  t.ok(createPid, 'the create waits on the held row');

  const disconnected = disconnectTenant(env.db, env.tenant.id, CLI);
  // Without its turn on the tenant the disconnect would finish here,
  // without seeing the row that is still to commit.
  t.ok(await untilBlocked(blockedBy, createPid ?? -1, 1, disconnected), 'the disconnect waits for the create in flight');
  await hold.query('ROLLBACK');

  const answer = await created;
  t.equal(answer.statusCode, 201, answer.body);
  await disconnected;
  const row = await env.database.pool.query<{ managed_by: string }>('SELECT managed_by FROM accounts WHERE id = $1', [answer.json().id]);
  t.same(row.rows, [{ managed_by: 'manual' }], 'the disconnect turned the new account manual');
  t.same(await accountsOf(env), { synced: 0, all: 1 }, 'no synced account is left in the disconnected tenant');
});

t.test('writes that meet a disconnect in progress wait for it, then are refused and write nothing', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const existing = await scim('POST', '/Users', entraUser(2));
  const stalled = await scim('POST', '/Users', entraUser(3));
  t.equal(existing.statusCode, 201, existing.body);
  t.equal(stalled.statusCode, 201, stalled.body);

  // The test's transaction share-locks one account, so the real disconnect
  // stops at turning the accounts manual: it holds the tenant's turn and has
  // marked the tenant, and has not committed.
  const blockedBy = watcher(await connection(t, env));
  const { hold, pid: holdPid } = await holder(t, env);
  await hold.query('SELECT 1 FROM accounts WHERE id = $1 FOR SHARE', [stalled.json().id]);
  const disconnected = disconnectTenant(env.db, env.tenant.id, CLI);
  const [disconnectPid] = (await untilBlocked(blockedBy, holdPid, 1, disconnected)) ?? [];
  t.ok(disconnectPid, 'the disconnect is under way, waiting on the held account');

  // The token check still sees the credential live; the writes meet the disconnect at their guards.
  const writes = [
    scim('POST', '/Users', entraUser(4)),
    scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', externalId: 'class-7a' }),
    scim('PATCH', `/Users/${existing.json().id}`, patch({ op: 'Replace', path: 'displayName', value: 'Renamed' })),
  ];
  const waiting = await untilBlocked(blockedBy, disconnectPid ?? -1, writes.length, Promise.all(writes), '%tenant_is_connected%');
  t.equal(waiting?.length, writes.length, 'each write waits for the disconnect at its guard');
  await hold.query('ROLLBACK');

  // The change, planned from the account as it was, reads it again once its
  // guard fails and finds no user of Entra's: it too is told of the disconnect.
  for (const answer of await Promise.all(writes)) {
    t.equal(answer.statusCode, 401, answer.body);
    t.match(answer.headers['www-authenticate'], /^Bearer realm="portal-scim", error="invalid_token"/);
    t.match(answer.json(), { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '401', detail: REFUSED_AT_GUARD });
  }
  t.match(await disconnected, { accounts: 2, classes: 0 });
  t.same(await accountsOf(env), { synced: 0, all: 2 }, 'no account was written: the two from before, manual');
  const { rows } = await env.database.pool.query<{ display_name: string }>('SELECT display_name FROM accounts WHERE id = $1', [existing.json().id]);
  t.same(rows, [{ display_name: 'Pupil 2' }], 'the change was not applied');
  const classes = await env.database.pool.query('SELECT 1 FROM classes WHERE tenant_id = $1', [env.tenant.id]);
  t.equal(classes.rowCount, 0, 'no class was written');
  const audits = await env.database.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM audit_events WHERE tenant_id = $1 AND outcome = 'success' AND action IN ('create', 'update')`,
    [env.tenant.id],
  );
  t.equal(audits.rows[0]?.n, 2, 'only the two creates from before are audited as written');
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
  for (const answer of answers) t.match(answer.json(), { status: '401', detail: REFUSED_AT_GUARD });
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

t.test('a merge in flight when the tenant is disconnected: the disconnect waits for it and turns the kept account manual', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const absorbed = await scim('POST', '/Users', entraUser(6));
  t.equal(absorbed.statusCode, 201, absorbed.body);
  const { rows } = await env.database.pool.query<{ id: string }>(
    `INSERT INTO accounts (tenant_id, managed_by, user_name, scim) VALUES ($1, 'manual', 'portal.pupil@school.example', '{}') RETURNING id`,
    [env.tenant.id],
  );
  const keep = rows[0]?.id ?? '';

  // The test's transaction share-locks the account to absorb, so the merge
  // stops at locking it, after the tenant's turn.
  const blockedBy = watcher(await connection(t, env));
  const { hold, pid: holdPid } = await holder(t, env);
  await hold.query('SELECT 1 FROM accounts WHERE id = $1 FOR SHARE', [absorbed.json().id]);
  const merged = mergeAccounts(env.db, keep, absorbed.json().id as string, CLI);
  const [mergePid] = (await untilBlocked(blockedBy, holdPid, 1, merged)) ?? [];
  t.ok(mergePid, 'the merge waits on the held account');

  const disconnected = disconnectTenant(env.db, env.tenant.id, CLI);
  t.ok(await untilBlocked(blockedBy, mergePid ?? -1, 1, disconnected), 'the disconnect waits for the merge in flight');
  await hold.query('ROLLBACK');

  t.equal((await merged).kept.id, keep);
  await disconnected;
  const kept = await env.database.pool.query<{ managed_by: string; deleted: boolean }>('SELECT managed_by, deleted_at IS NOT NULL AS deleted FROM accounts WHERE id = $1', [keep]);
  t.same(kept.rows, [{ managed_by: 'manual', deleted: false }], 'the kept account, synced by the merge, was turned manual by the disconnect');
  t.same(await accountsOf(env), { synced: 0, all: 1 }, 'no synced account is left in the disconnected tenant');
});
