// A connection lost while a transaction holds it between two statements (a
// PostgreSQL restart, a failover, a terminated backend): the transaction
// fails and the process goes on. pg-pool listens for a client's errors only
// while the client is idle in the pool; without a listener of our own the
// error of a checked-out client would end the process.
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import pg from 'pg';
import t from 'tap';
import { testApp } from './helpers/app.js';
import { adminUrl, testDatabase } from './helpers/database.js';

t.test("a connection lost between a transaction's statements fails the transaction, not the process", async (t) => {
  const { db, pool, url } = await testDatabase(t);
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());

  const outcome = await db
    .transaction()
    .execute(async (trx) => {
      const pid = (await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx)).rows[0]!.pid;
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      // The backend is gone once PostgreSQL no longer lists it; its last word
      // reaches this client's socket while no statement of it is running.
      while ((await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount !== 0) await sleep(10);
      await sleep(200);
      await sql`SELECT 1`.execute(trx);
      return 'committed';
    })
    .catch((error: unknown) => error);
  t.type(outcome, Error, 'the transaction failed');
  t.equal((await sql<{ one: number }>`SELECT 1 AS one`.execute(db)).rows[0]?.one, 1, 'the next statement gets a working connection');
  t.ok(pool.totalCount <= 1, 'the lost connection left the pool');
});

t.test('a database closed to connections for maintenance answers 503 with Retry-After, not 500', async (t) => {
  const { app, headers, database } = await testApp(t);
  t.equal((await app.inject({ method: 'GET', url: '/scim/v2/Users?count=1', headers })).statusCode, 200);
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  t.teardown(() => admin.end());
  await admin.query(`ALTER DATABASE ${database.name} ALLOW_CONNECTIONS false`);
  t.teardown(() => admin.query(`ALTER DATABASE ${database.name} ALLOW_CONNECTIONS true`));
  // The app's open connections go too, so its next request needs a new one.
  await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [database.name]);
  for (const [method, url] of [
    ['GET', '/scim/v2/Users?count=1'],
    ['POST', '/scim/v2/Users'],
  ] as const) {
    const res = await app.inject({ method, url, headers: { ...headers, 'content-type': 'application/scim+json' }, ...(method === 'POST' ? { payload: { schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName: 'closed@school.example' } } : {}) });
    t.equal(res.statusCode, 503, `${method} ${url}`);
    t.ok(res.headers['retry-after'], 'with Retry-After');
    t.equal(res.json().status, '503');
  }
});
