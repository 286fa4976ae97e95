// The example consumer (examples/change-consumer/) follows the change feed
// as a process of its own. Killed with SIGKILL in the middle of a batch of a
// stream of SCIM changes, and started again, it applies every change exactly
// once, in order: none missed (not even those made while it was down), none
// twice. Every wait polls with a generous deadline.
import { spawn, type ChildProcess } from 'node:child_process';
import { sql } from 'kysely';
import pg from 'pg';
import t, { type Test } from 'tap';
import type { Db } from '../src/db/database.js';
import { pruneChangeEvents } from '../src/db/change-feed.js';
import { testApp } from './helpers/app.js';
import { GROUP, client, entraUser, patch, type Send } from './helpers/scim.js';

const DEADLINE_MS = 60_000;

interface Consumer {
  child: ChildProcess;
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startConsumer(t: Test, url: string): Consumer {
  const child = spawn(process.execPath, ['examples/change-consumer/consumer.js'], {
    env: { PATH: process.env.PATH, DATABASE_URL: url, CONSUMER_BATCH_SIZE: '20', CONSUMER_POLL_MS: '200' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const collect = (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean));
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, lines, exited };
}

/** Polls until check holds, or fails the wait naming what it waited for. */
async function until(what: string, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`waited ${DEADLINE_MS / 1000} s for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Whether the consumer's cursor stands at the last change written (none in flight). */
async function caughtUp(db: Db): Promise<boolean> {
  const row = await sql<{ done: boolean }>`
    SELECT (SELECT position FROM change_consumer_cursor WHERE name = 'example') = (SELECT max(position) FROM change_events) AS done`.execute(db);
  return row.rows[0]?.done === true;
}

async function tableExists(db: Db, name: string): Promise<boolean> {
  return (await sql<{ found: boolean }>`SELECT to_regclass(${name}) IS NOT NULL AS found`.execute(db)).rows[0]?.found === true;
}

async function create(scim: Send, n: number): Promise<string> {
  const res = await scim('POST', '/Users', entraUser(n));
  if (res.statusCode !== 201) throw new Error(`POST /Users ${n}: ${res.statusCode} ${res.body}`);
  return res.json().id as string;
}

t.test('killed mid-batch and started again, the consumer applies every change exactly once, in order', async (t) => {
  const env = await testApp(t);
  const { db } = env;
  const scim = client(env.app, env.headers);
  const ok = async (method: string, url: string, body: unknown, status: number) => {
    const res = await scim(method, url, body);
    t.equal(res.statusCode, status, `${method} ${url}`);
    return res;
  };

  // Part 1, with the consumer running: users and a class of three.
  const first = startConsumer(t, env.database.url);
  await until('the consumer to follow the feed', () => first.lines.some((l) => l.includes('following the change feed')));
  const users: string[] = [];
  for (let n = 1; n <= 8; n++) users.push(await create(scim, n));
  const members = (ids: (string | undefined)[]) => ids.map((value) => ({ value }));
  const classA = (await ok('POST', '/Groups', { schemas: [GROUP], displayName: '7A', externalId: 'class-7a', members: members(users.slice(0, 3)) }, 201)).json().id as string;
  await until('the consumer to apply part 1', () => caughtUp(db));

  // Part 2: one SCIM delete writes two changes in one transaction, a
  // membership's and then the account's. With the consumer's account table
  // share-locked (a lock that holds back no one's feed), the consumer applies
  // the membership, then waits inside its batch at the account: it is killed there.
  const locker = new pg.Client({ connectionString: env.database.url });
  await locker.connect();
  t.teardown(() => locker.end());
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE change_consumer_accounts IN SHARE MODE');
  const lockerXid = await locker.query<{ xid: string | null }>('SELECT pg_current_xact_id_if_assigned()::text AS xid');
  t.equal(lockerXid.rows[0]?.xid, null, 'the lock takes no transaction id, so the feed is not held back by it');
  await ok('DELETE', `/Users/${users[2] ?? ''}`, undefined, 204);
  const consumerWaits = async () => {
    const rows = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE datname = current_database() AND application_name = 'change-consumer' AND wait_event_type = 'Lock' AND xact_start IS NOT NULL`.execute(db);
    return rows.rows[0]?.n === 1;
  };
  await until('the consumer to wait inside its batch', consumerWaits);
  const appliedBeforeKill = (await sql<{ n: number }>`SELECT count(*)::int AS n FROM change_consumer_log`.execute(db)).rows[0]?.n ?? 0;
  first.child.kill('SIGKILL');
  t.match(await first.exited, { signal: 'SIGKILL' }, 'the consumer was killed');
  await locker.query('ROLLBACK');

  // Part 3, while no consumer runs: its notifications go nowhere.
  await ok('PATCH', `/Users/${users[1] ?? ''}`, patch({ op: 'Replace', path: 'active', value: 'False' }), 200);
  await ok('PATCH', `/Groups/${classA}`, patch({ op: 'Add', path: 'members', value: members([users[6]]) }), 204);
  for (let n = 9; n <= 10; n++) users.push(await create(scim, n));
  const classB = (await ok('POST', '/Groups', { schemas: [GROUP], displayName: '7B', externalId: 'class-7b', members: members(users.slice(3, 6)) }, 201)).json().id as string;

  // Part 4, with the consumer started again, changes keep coming.
  const second = startConsumer(t, env.database.url);
  await ok('PATCH', `/Users/${users[1] ?? ''}`, patch({ op: 'Replace', path: 'active', value: 'True' }), 200);
  await ok('PATCH', `/Users/${users[4] ?? ''}`, patch({ op: 'Replace', path: 'name.familyName', value: 'Renamed' }), 200);
  await ok('PATCH', `/Groups/${classA}`, patch({ op: 'Remove', path: 'members', value: members([users[0]]) }), 204);
  await ok('DELETE', `/Groups/${classB}`, undefined, 204);
  users.push(await create(scim, 11));
  await until('the restarted consumer to catch up', () => caughtUp(db));
  second.child.kill('SIGTERM');
  t.match(await second.exited, { code: 0 }, 'it stops cleanly on SIGTERM');
  t.ok(second.lines.some((l) => l.includes('"msg":"stopped"')), 'after its batch');

  // Every change of the feed, and what the consumer applied, by position.
  const feed = await sql<{ position: string; object_type: string; object_id: string; related_id: string | null; action: string }>`
    SELECT position::text, object_type, object_id, related_id, action FROM change_events ORDER BY change_events.position`.execute(db);
  const applied = await sql<{ position: string; object_type: string; object_id: string; related_id: string | null; action: string }>`
    SELECT position::text, object_type, object_id, related_id, action FROM change_consumer_log ORDER BY seq`.execute(db);
  const twice = await sql<{ position: string; n: number }>`
    SELECT position::text, count(*)::int AS n FROM change_consumer_log GROUP BY position HAVING count(*) <> 1`.execute(db);

  t.ok(appliedBeforeKill > 0 && appliedBeforeKill < feed.rows.length, `killed in the middle of the stream (${appliedBeforeKill} of ${feed.rows.length} changes applied)`);
  t.ok(feed.rows.length >= 30, `a stream of changes (${feed.rows.length})`);
  t.same(twice.rows, [], 'no position was applied twice (counted per position)');
  t.same(applied.rows.map((r) => r.position), feed.rows.map((r) => r.position), 'every change was applied, in position order, none missed');
  t.same(applied.rows, feed.rows, 'each as the feed has it');
  const deleted = feed.rows.filter((r) => r.object_id === users[2] || r.related_id === users[2]).map((r) => `${r.object_type} ${r.action}`);
  t.same(deleted.slice(-2), ['membership deleted', 'account deleted'], 'the batch the consumer was killed in was applied once, after the restart');

  // The account table holds each account's last action, as the feed says.
  const states = await sql<{ account_id: string; last_action: string }>`SELECT account_id, last_action FROM change_consumer_accounts`.execute(db);
  const lastAction = new Map<string, string>();
  for (const r of feed.rows) if (r.object_type === 'account') lastAction.set(r.object_id, r.action);
  t.same(new Map(states.rows.map((r) => [r.account_id, r.last_action])), lastAction, "each account's last action");
  t.equal(lastAction.get(users[2] ?? ''), 'deleted');
  t.equal(lastAction.get(users[1] ?? ''), 'reactivated');
  t.ok(await tableExists(db, 'change_consumer_cursor'));
  t.same(await memberships(db, 'change_consumer_memberships'), await memberships(db, 'portal_class_memberships'), 'its copy of the memberships is the view');
});

/** A table's memberships, in one order, as the consumer's copy and the view both have them. */
async function memberships(db: Db, table: 'change_consumer_memberships' | 'portal_class_memberships'): Promise<unknown[]> {
  return (await sql`SELECT class_id, account_id, synced, manual FROM ${sql.table(table)} ORDER BY class_id, account_id`.execute(db)).rows;
}

t.test('changes of one membership listed in the other order of their commits: the copy made from the view ends as the view', async (t) => {
  const env = await testApp(t);
  const { db } = env;
  const scim = client(env.app, env.headers);
  const [a, b] = [await create(scim, 1), await create(scim, 2)];
  const classId = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '8C', members: [{ value: b }] })).json().id as string;
  const consumer = startConsumer(t, env.database.url);
  await until('the consumer to follow the feed', () => consumer.lines.some((l) => l.includes('following the change feed')));

  // A teacher adds two pupils by hand in one transaction (the contract's
  // statement). It has its transaction id from the first; meanwhile Entra
  // removes the second pupil and commits; then the teacher adds that pupil.
  const portal = new pg.Client({ connectionString: env.database.url });
  await portal.connect();
  t.teardown(() => portal.end());
  const addByHand = (account: string) =>
    portal.query(
      `INSERT INTO class_memberships (tenant_id, class_id, account_id, manual)
       SELECT tenant_id, $2, id, true FROM accounts WHERE tenant_id = $1 AND id = $3 AND deleted_at IS NULL FOR SHARE
       ON CONFLICT (tenant_id, class_id, account_id) DO UPDATE SET manual = true, manual_by_disconnect = false
        WHERE NOT class_memberships.manual OR class_memberships.manual_by_disconnect`,
      [env.tenant.id, classId, account],
    );
  await portal.query('BEGIN');
  await addByHand(a);
  t.equal((await scim('PATCH', `/Groups/${classId}`, patch({ op: 'Remove', path: 'members', value: [{ value: b }] }))).statusCode, 204);
  await addByHand(b);
  await portal.query('COMMIT');
  await until('the consumer to catch up', () => caughtUp(db));

  const listed = await sql<{ action: string }>`
    SELECT action FROM change_events WHERE object_type = 'membership' AND related_id = ${b}::uuid ORDER BY position`.execute(db);
  t.same(listed.rows.map((r) => r.action), ['created', 'created', 'deleted'], "the feed lists the teacher's add before Entra's removal that committed first");
  t.same(await memberships(db, 'portal_class_memberships'), [
    { class_id: classId, account_id: a, synced: false, manual: true },
    { class_id: classId, account_id: b, synced: false, manual: true },
  ].sort((x, y) => x.account_id.localeCompare(y.account_id)), 'both pupils are in the class, by hand');
  t.same(await memberships(db, 'change_consumer_memberships'), await memberships(db, 'portal_class_memberships'), "the consumer's copy is the view, not what the last action says");
});

t.test('a consumer that starts after the prune removed changes makes its copy from the views, then follows from the horizon', async (t) => {
  const env = await testApp(t);
  const { db } = env;
  const scim = client(env.app, env.headers);
  const [a, b] = [await create(scim, 1), await create(scim, 2)];
  const classId = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '9D', members: [{ value: a }, { value: b }] })).json().id as string;
  // Everything so far is older than the retention and pruned, as on a server that has run for months.
  await sql`UPDATE change_events SET at = now() - interval '40 days'`.execute(db);
  t.ok((await pruneChangeEvents(db, 30)) > 0, 'the prune removed the history');

  const consumer = startConsumer(t, env.database.url);
  await until('the consumer to read the views', () => consumer.lines.some((l) => l.includes('read the views again')));
  t.equal((await scim('PATCH', `/Groups/${classId}`, patch({ op: 'Remove', path: 'members', value: [{ value: a }] }))).statusCode, 204);
  await until('the consumer to catch up', () => caughtUp(db));
  t.same(await memberships(db, 'change_consumer_memberships'), await memberships(db, 'portal_class_memberships'), 'its copy is the view: what the prune removed and what came after');
  t.same(
    (await memberships(db, 'change_consumer_memberships')).map((m) => (m as { account_id: string }).account_id),
    [b],
    'the member left, the other kept',
  );
});

t.test('two copies of one consumer starting at once on a pruned feed both go on, and the copy is the view', async (t) => {
  const env = await testApp(t);
  const { db } = env;
  const scim = client(env.app, env.headers);
  const [a, b] = [await create(scim, 1), await create(scim, 2)];
  await scim('POST', '/Groups', { schemas: [GROUP], displayName: '9E', members: [{ value: a }, { value: b }] });
  await sql`UPDATE change_events SET at = now() - interval '40 days'`.execute(db);
  t.ok((await pruneChangeEvents(db, 30)) > 0);

  const copies = [startConsumer(t, env.database.url), startConsumer(t, env.database.url)];
  await until('both copies to follow the feed', () => copies.every((c) => c.lines.some((l) => l.includes('following the change feed'))));
  await until('one of them to read the views', () => copies.some((c) => c.lines.some((l) => l.includes('read the views again'))));
  await create(scim, 3);
  await until('the copies to catch up', () => caughtUp(db));
  for (const copy of copies) t.equal(copy.child.exitCode, null, 'still running: a copy that lost the race looked again');
  t.same(await memberships(db, 'change_consumer_memberships'), await memberships(db, 'portal_class_memberships'));
});
