// Rule 12's upkeep: changes older than CHANGE_FEED_RETENTION_DAYS leave the
// feed in the hourly job, beside the purge of deleted accounts. Several
// instances prune at once, over one tenant or many, without failing or
// deleting a row twice; the highest position removed is kept for readers to
// compare, and the horizon says where to follow the feed from after a read.
import { Writable } from 'node:stream';
import pg from 'pg';
import { sql } from 'kysely';
import t from 'tap';
import { loadConfig } from '../src/config.js';
import { pruneChangeEvents } from '../src/db/change-feed.js';
import { createDb, type Db } from '../src/db/database.js';
import { createLogger } from '../src/logger.js';
import { runHourlyJob } from '../src/server.js';
import { testEnv } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';

/** Appends change rows of a made-up account, as old as given. */
async function oldChanges(db: Db, tenantId: string, count: number, daysAgo: number): Promise<void> {
  await sql`INSERT INTO change_events (tenant_id, object_type, object_id, action, at)
    SELECT ${tenantId}::uuid, 'account', gen_random_uuid(), 'updated', now() - make_interval(days => ${daysAgo}::int)
      FROM generate_series(1, ${count}::int)`.execute(db);
}

async function countChanges(db: Db, olderThanDays: number): Promise<number> {
  const row = await sql<{ n: number }>`SELECT count(*)::int AS n FROM change_events WHERE at < now() - make_interval(days => ${olderThanDays}::int)`.execute(db);
  return row.rows[0]?.n ?? -1;
}

async function tenant(db: Db): Promise<string> {
  return (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Feed School') RETURNING id`.execute(db)).rows[0]?.id ?? '';
}

t.test('CHANGE_FEED_RETENTION_DAYS is 30 days unless set, and a bad value names the variable', async (t) => {
  t.equal(loadConfig({}).changeFeedRetentionDays, 30);
  t.equal(loadConfig({ CHANGE_FEED_RETENTION_DAYS: '7' }).changeFeedRetentionDays, 7);
  t.throws(() => loadConfig({ CHANGE_FEED_RETENTION_DAYS: '0' }), /^CHANGE_FEED_RETENTION_DAYS: must be between 1 and 3650/);
  t.throws(() => loadConfig({ CHANGE_FEED_RETENTION_DAYS: 'a month' }), /^CHANGE_FEED_RETENTION_DAYS: must be a whole number/);
});

t.test('several prunes at once delete every old change exactly once, keep the recent ones, and none fails', async (t) => {
  const { db, url } = await testDatabase(t);
  const id = await tenant(db);
  await oldChanges(db, id, 2400, 40);
  await oldChanges(db, id, 150, 10);
  // Four instances, each with its own pool, pruning in small batches so their batches interleave.
  const instances = Array.from({ length: 4 }, () => createDb(url, { poolSize: 1 }).db);
  t.teardown(() => Promise.all(instances.map((i) => i.destroy())));
  const results = await Promise.allSettled(instances.map((instance) => pruneChangeEvents(instance, 30, 50)));
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'], 'no prune failed');
  const deleted = results.map((r) => (r.status === 'fulfilled' ? r.value : 0));
  t.equal(deleted.reduce((a, b) => a + b, 0), 2400, `the counts add up to the old rows, each deleted once (${deleted.join(' + ')})`);
  t.equal(await countChanges(db, 30), 0, 'no old change is left');
  t.equal(await countChanges(db, 0), 150, 'the recent changes are all kept');
  t.equal(await pruneChangeEvents(db, 30), 0, 'a prune with nothing to do deletes nothing');
});

t.test('several prunes at once over many tenants neither deadlock nor fail', async (t) => {
  const { db, url } = await testDatabase(t);
  const tenants = (await sql<{ id: string }>`INSERT INTO tenants (name) SELECT 'School ' || n FROM generate_series(1, 200) n RETURNING id`.execute(db)).rows.map((r) => r.id);
  const instances = Array.from({ length: 4 }, () => createDb(url, { poolSize: 1 }).db);
  t.teardown(() => Promise.all(instances.map((i) => i.destroy())));
  for (let round = 1; round <= 2; round++) {
    // Rows of all tenants in one order of time, so each batch spans many of them.
    await sql`INSERT INTO change_events (tenant_id, object_type, object_id, action, at)
      SELECT t, 'account', gen_random_uuid(), 'updated', now() - interval '40 days' + make_interval(secs => n)
        FROM unnest(${tenants}::uuid[]) t, generate_series(1, 20) n`.execute(db);
    const results = await Promise.allSettled(instances.map((instance) => pruneChangeEvents(instance, 30, 300)));
    t.same(results.map((r) => (r.status === 'fulfilled' ? 'fulfilled' : String(r.reason))), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'], `round ${round}: no prune failed`);
    t.equal(results.reduce((sum, r) => sum + (r.status === 'fulfilled' ? r.value : 0), 0), 4000, `round ${round}: every old row deleted once`);
  }
  const marked = await sql<{ n: number }>`SELECT count(*)::int AS n FROM change_feed_pruned`.execute(db);
  t.equal(marked.rows[0]?.n, 200, 'each tenant has how far its feed was pruned');
});

t.test('a prune skips the rows another prune holds instead of waiting for it', async (t) => {
  const { db, url } = await testDatabase(t);
  const id = await tenant(db);
  await oldChanges(db, id, 120, 40);
  // Another instance's batch in flight: ten old rows locked by an open transaction.
  const other = new pg.Client({ connectionString: url });
  await other.connect();
  t.teardown(() => other.end());
  await other.query('BEGIN');
  await other.query(`SELECT position FROM change_events ORDER BY at LIMIT 10 FOR UPDATE`);
  t.equal(await pruneChangeEvents(db, 30, 50), 110, 'the free rows are deleted at once, the held ones left');
  await other.query('COMMIT');
  t.equal(await pruneChangeEvents(db, 30, 50), 10, 'and deleted by the next prune once free');
  t.equal(await countChanges(db, 0), 0);
});

t.test('the hourly job purges deleted accounts past their retention and prunes the feed past its own', async (t) => {
  const { db } = await testDatabase(t);
  const id = await tenant(db);
  const gone = await db
    .insertInto('accounts')
    .values({ tenant_id: id, managed_by: 'sync', user_name: 'left@school.example', scim: '{}', deleted_at: new Date(Date.now() - 40 * 86_400_000) })
    .returning('id')
    .executeTakeFirstOrThrow();
  await oldChanges(db, id, 30, 8);
  await oldChanges(db, id, 20, 6);
  const lines: string[] = [];
  const logger = createLogger('info', new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));

  await runHourlyJob(db, loadConfig(testEnv({ CHANGE_FEED_RETENTION_DAYS: '7' })), logger);

  t.equal((await db.selectFrom('accounts').select('id').where('id', '=', gone.id).execute()).length, 0, 'the deleted account is purged');
  const audit = await db.selectFrom('audit_events').select(['action', 'details']).where('tenant_id', '=', id).execute();
  t.match(audit, [{ action: 'purge', details: { accounts: 1 } }], 'and the purge audited');
  t.equal(await countChanges(db, 7), 0, 'changes older than CHANGE_FEED_RETENTION_DAYS are pruned');
  const kept = await db.selectFrom('change_events').select(['action', 'object_id']).where('at', '>', new Date(Date.now() - 7 * 86_400_000)).orderBy('position').execute();
  t.equal(kept.filter((c) => c.action === 'updated').length, 20, 'younger changes are kept');
  t.same(
    kept.filter((c) => c.action !== 'updated'),
    [
      { action: 'deleted', object_id: gone.id },
      { action: 'purged', object_id: gone.id },
    ],
    "the account's insert as deleted and the purge's own change stay in the feed",
  );
  const logged = lines.map((l) => JSON.parse(l) as { msg: string; changes?: number; accounts?: number });
  t.match(logged, [{ msg: 'purged deleted accounts', accounts: 1 }, { msg: 'pruned the change feed', changes: 30 }]);
});

t.test('portal_changes_pruned tells a reader that the prune removed changes it had not read', async (t) => {
  const { db } = await testDatabase(t);
  const id = await tenant(db);
  const pruned = async () => (await sql<{ upto: string }>`SELECT portal_changes_pruned()::text AS upto`.execute(db)).rows[0]?.upto;
  // The rows left, read directly: portal_changes() also waits for transactions of other databases of the cluster.
  const since = async (after: string) => (await sql<{ position: string }>`SELECT position::text FROM change_events WHERE position > ${after}::numeric`.execute(db)).rows;
  await oldChanges(db, id, 100, 40);
  await oldChanges(db, id, 10, 1);
  t.equal(await pruned(), '0', 'nothing pruned yet: a reader from 0 misses nothing');
  const highestOld = (await sql<{ p: string }>`SELECT max(position)::text AS p FROM change_events WHERE at < now() - interval '30 days'`.execute(db)).rows[0]?.p ?? '';

  t.equal(await pruneChangeEvents(db, 30, 30), 100);
  t.equal(await pruned(), highestOld, 'the highest position removed');
  t.equal((await since(highestOld)).length, 10, 'every change left is after it: a reader at it has missed nothing');
  t.equal((await since('0')).length, 10, 'a reader from 0 gets only what is left, and portal_changes_pruned() above its position tells it so');
  t.equal(await pruneChangeEvents(db, 30), 0);
  t.equal(await pruned(), highestOld, 'a prune with nothing to do leaves it');
});

t.test('portal_changes_horizon: what a REPEATABLE READ of the views does not hold comes after it', async (t) => {
  const { db, url } = await testDatabase(t);
  const id = await tenant(db);
  const connect = async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    t.teardown(() => client.end());
    return client;
  };
  const [late, reader] = [await connect(), await connect()];
  const change = (client: pg.Client | Db) =>
    client instanceof pg.Client
      ? client.query<{ position: string }>(`INSERT INTO change_events (tenant_id, object_type, object_id, action) VALUES ($1, 'account', gen_random_uuid(), 'updated') RETURNING position::text`, [id]).then((r) => r.rows[0]?.position ?? '')
      : sql<{ position: string }>`INSERT INTO change_events (tenant_id, object_type, object_id, action) VALUES (${id}::uuid, 'account', gen_random_uuid(), 'updated') RETURNING position::text`.execute(client).then((r) => r.rows[0]?.position ?? '');

  const before = await change(db); // committed before anything below
  await late.query('BEGIN');
  const lateChange = await change(late); // its transaction runs on while the reader reads
  const meanwhile = await change(db); // committed before the reader's snapshot, by a newer transaction

  await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
  const horizon = (await reader.query<{ h: string }>('SELECT portal_changes_horizon()::text AS h')).rows[0]?.h ?? '';
  const read = (await reader.query<{ position: string }>('SELECT position::text FROM change_events')).rows.map((r) => r.position);
  await late.query('COMMIT');
  await reader.query('COMMIT');

  t.ok(read.includes(before) && read.includes(meanwhile) && !read.includes(lateChange), 'the read holds what committed before it, not the running transaction');
  // Positions compared directly: portal_changes() would also wait for other databases' transactions of the cluster.
  const after = (await sql<{ position: string }>`SELECT position::text FROM change_events WHERE position > ${horizon}::numeric`.execute(db)).rows.map((r) => r.position);
  t.ok(after.includes(lateChange), 'the change the read missed comes after the horizon');
  t.ok(after.includes(meanwhile), 'one of a newer transaction may come again: it is in the read and after the horizon');
});
