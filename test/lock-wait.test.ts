// One tenant's class held by a lock (a long transaction, a stuck portal job)
// costs that tenant quick 503s with Retry-After, and nothing else: its PATCHes
// give up at the lock timeout, it may hold only its share of the pool, and the
// other tenants keep being answered. Every refused write is still in the
// audit log, written once a connection is free.
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { signingKeys } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { TEST_SECRET, tenantWithToken, testEnv } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';
import { startServerProcess } from './helpers/process.js';
import { GROUP, entraUser, patch } from './helpers/scim.js';

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

t.test("a locked class gives its tenant 503s within the lock timeout while other tenants' lookups answer", async (t) => {
  const database = await testDatabase(t);
  const config = loadConfig(testEnv());
  const keys = signingKeys(TEST_SECRET);
  const school = await tenantWithToken(database.db, config, keys, 'Locked School', ['locked.example']);
  const other = await tenantWithToken(database.db, config, keys, 'Other School', ['school.example']);
  const server = await startServerProcess({
    DATABASE_URL: database.url,
    CREDENTIAL_CACHE_SECONDS: '60',
    DATABASE_POOL_SIZE: '4',
    TENANT_CONCURRENCY: '2',
    TENANT_QUEUE_TIMEOUT_MS: '500',
    DATABASE_LOCK_TIMEOUT_MS: '1000',
    // Far beyond the test: only the lock timeout and the tenant's share can answer the PATCHes.
    DATABASE_STATEMENT_TIMEOUT_MS: '120000',
  });
  t.teardown(() => server.stop());
  const sender =
    (headers: Record<string, string>) =>
    async (method: string, path: string, body?: unknown): Promise<Answer> => {
      const res = await fetch(`${server.url}/scim/v2${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
      const text = await res.text();
      return { status: res.status, headers: res.headers, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
    };
  const locked = sender(school.headers);
  const others = sender(other.headers);

  const pupils: string[] = [];
  for (let i = 0; i < 4; i++) pupils.push(String((await locked('POST', '/Users', { ...entraUser(i), userName: `pupil${i}@locked.example` })).body.id));
  const created = await locked('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7B', externalId: 'class-7b' });
  t.equal(created.status, 201);
  const classId = String(created.body.id);
  t.equal((await others('POST', '/Users', entraUser(1))).status, 201);
  const lookup = `/Users?filter=${encodeURIComponent('userName eq "pupil1@school.example"')}`;

  // The fault: another session holds the class row and does not let go.
  const holder = await database.pool.connect();
  t.teardown(() => holder.release());
  await holder.query('BEGIN');
  await holder.query('SELECT 1 FROM classes WHERE id = $1 FOR UPDATE', [classId]);
  let lockHeld = true;

  // Twelve PATCHes at once for the locked class: member batches (one
  // statement) and renames (a transaction that locks the class first).
  const patches = Array.from({ length: 12 }, (_, i) =>
    locked(
      'PATCH',
      `/Groups/${classId}`,
      i % 2 === 0 ? patch({ op: 'Add', path: 'members', value: [{ value: pupils[i % 4] }] }) : patch({ op: 'Replace', path: 'displayName', value: `Renamed ${i}` }),
    ).then((answer) => ({ ...answer, whileLocked: lockHeld })),
  );
  let patchesDone = false;
  const allPatches = Promise.all(patches).finally(() => (patchesDone = true));

  // Meanwhile the other school looks its users up, one after another.
  const lookups: { status: number; ms: number }[] = [];
  while (!patchesDone && lookups.length < 2000) {
    const start = performance.now();
    const answer = await others('GET', lookup);
    lookups.push({ status: answer.status, ms: Math.round(performance.now() - start) });
  }
  // The lock is held until every PATCH has answered, or for 60 s at most.
  const answers = await Promise.race([allPatches, sleep(60_000).then(() => undefined)]);
  lockHeld = false;
  await holder.query('ROLLBACK');

  t.ok(answers, 'every PATCH answered while the class was still locked');
  for (const [i, answer] of (answers ?? []).entries()) {
    t.equal(answer.status, 503, `PATCH ${i + 1}: 503`);
    t.equal(answer.headers.get('retry-after'), '5', `PATCH ${i + 1}: Retry-After`);
    t.match(answer.body, { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '503' });
    t.ok(answer.whileLocked, `PATCH ${i + 1}: answered before the lock was released`);
  }
  t.ok(lookups.length > 0, `the other school made ${lookups.length} lookups meanwhile`);
  t.same([...new Set(lookups.map((l) => l.status))], [200], "all of the other school's lookups answered 200");
  t.comment(`other tenant while the class was locked: ${lookups.length} lookups, all ${[...new Set(lookups.map((l) => l.status))].join('/')}, slowest ${Math.max(...lookups.map((l) => l.ms))} ms`);

  // Nothing of the refused PATCHes was written.
  const row = await database.db.selectFrom('classes').select(['display_name', 'version']).where('id', '=', classId).executeTakeFirstOrThrow();
  t.equal(row.display_name, 'Class 7B', 'the class keeps its name');
  const members = await database.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', classId).execute();
  t.same(members, [], 'and has no members');

  // Every refused PATCH is a failure in the audit log, some written only once connections were free again.
  let failures = 0;
  for (let i = 0; i < 100 && failures < patches.length; i++) {
    const rows = await database.db
      .selectFrom('audit_events')
      .select('id')
      .where('tenant_id', '=', school.tenant.id)
      .where('object_id', '=', classId)
      .where('outcome', '=', 'failure')
      .execute();
    failures = rows.length;
    if (failures < patches.length) await sleep(100);
  }
  t.equal(failures, patches.length, 'each refused PATCH left a failure in the audit log');

  // With the lock gone the same change goes through.
  const retried = await locked('PATCH', `/Groups/${classId}`, patch({ op: 'Add', path: 'members', value: [{ value: pupils[0] }] }));
  t.equal(retried.status, 204, "Entra's retry succeeds once the lock is gone");
  t.notOk(server.lines.some((l) => /"level":50/.test(l)), 'nothing was logged as an error');
});
