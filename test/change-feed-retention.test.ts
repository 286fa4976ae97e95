// Rule 12's upkeep: changes older than CHANGE_FEED_RETENTION_DAYS leave the
// feed in the hourly job, beside the purge of deleted accounts. Several
// instances prune at once without waiting on each other, failing, or
// deleting a row twice.
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
