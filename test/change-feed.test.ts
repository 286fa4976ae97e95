// Rule 12: the change feed. Every change to an account, class or membership
// appends a row in the same transaction, whoever writes; portal_changes()
// returns them in position order and never skips a change whose transaction
// commits after one with a larger position has been read.
import pg from 'pg';
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import type { Db } from '../src/db/database.js';
import { disconnectTenant } from '../src/db/tenants.js';
import { testApp } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

interface Change {
  position: string;
  tenant_id: string;
  object_type: string;
  object_id: string;
  related_id: string | null;
  action: string;
  changed: string[];
}

/** Every change of the tenant after `after`, read through portal_changes in pages, waiting (a bounded time) until `until` holds. */
async function follow(db: Db, tenantId: string, until: (changes: Change[]) => boolean): Promise<Change[]> {
  const seen: Change[] = [];
  let after = '0';
  // The feed waits for every transaction older than a row to end; other
  // test files share the server, so their transactions may hold it back a while.
  const deadline = Date.now() + 60_000;
  for (;;) {
    const page = await sql<Change>`SELECT * FROM portal_changes(${after}::numeric, 100)`.execute(db);
    for (const row of page.rows) {
      after = row.position;
      if (row.tenant_id === tenantId) seen.push(row);
    }
    if (page.rows.length === 0) {
      if (until(seen) || Date.now() > deadline) return seen;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

const brief = (c: Change) => `${c.object_type} ${c.action}${c.changed.length > 0 ? ` ${c.changed.join(',')}` : ''}`;

t.test('every SCIM write of an account, a class or a membership is in the feed, in order, with the changed columns', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const user = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const other = (await scim('POST', '/Users', entraUser(2))).json().id as string;
  t.equal((await scim('PATCH', `/Users/${user}`, patch({ op: 'Replace', path: 'active', value: 'False' }))).statusCode, 200);
  t.equal((await scim('PATCH', `/Users/${user}`, patch({ op: 'Replace', path: 'active', value: 'True' }))).statusCode, 200);
  t.equal((await scim('PATCH', `/Users/${user}`, patch({ op: 'Replace', path: 'name.familyName', value: 'Changed' }, { op: 'Replace', path: 'title', value: 'Pupil' }))).statusCode, 200);
  const klass = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', externalId: 'c-1', members: [{ value: user }] })).json().id as string;
  t.equal((await scim('PATCH', `/Groups/${klass}`, patch({ op: 'Add', path: 'members', value: [{ value: other }] }))).statusCode, 204);
  t.equal((await scim('PATCH', `/Groups/${klass}`, patch({ op: 'Replace', path: 'displayName', value: 'Class 7B' }))).statusCode, 204);
  t.equal((await scim('DELETE', `/Users/${user}`)).statusCode, 204);
  t.equal((await scim('DELETE', `/Groups/${klass}`)).statusCode, 204);

  const changes = await follow(env.db, env.tenant.id, (c) => c.length >= 14);
  t.same(changes.map(brief), [
    'account created',
    'account created',
    'account deactivated active',
    'account reactivated active',
    'account updated family_name',
    'class created',
    'membership created',
    'membership created',
    'class updated',
    'class updated display_name',
    // In one transaction the account's memberships go before the account
    // (a row trigger), and a class before the memberships it takes along.
    'membership deleted',
    'account deleted deleted_at',
    'class deleted',
    'membership deleted',
  ]);
  t.same(
    changes.filter((c) => c.object_type === 'account').map((c) => c.object_id),
    [user, other, user, user, user, user],
    'each names its account',
  );
  const memberships = changes.filter((c) => c.object_type === 'membership');
  t.same(memberships.map((c) => [c.object_id, c.related_id]), [[klass, user], [klass, other], [klass, user], [klass, other]], 'a membership names its class and its account');
  const positions = changes.map((c) => BigInt(c.position));
  t.ok(positions.every((p, i) => i === 0 || p > (positions[i - 1] ?? 0n)), 'positions grow');
  const stored = await env.db.selectFrom('change_events').select(sql<number>`count(*)::int`.as('n')).executeTakeFirstOrThrow();
  t.equal(stored.n, 14, 'nothing else was written');
});

t.test('a class write that changes its name and its members records the memberships first', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const first = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const second = (await scim('POST', '/Users', entraUser(2))).json().id as string;
  const klass = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 8A', externalId: 'c-8', members: [{ value: first }] })).json().id as string;
  const put = await scim('PUT', `/Groups/${klass}`, { schemas: [GROUP], displayName: 'Class 8B', externalId: 'c-8', members: [{ value: second }] });
  t.equal(put.statusCode, 200);
  t.same(
    (put.json().members as { value: string }[]).map((m) => m.value),
    [second],
    'the class has its new member',
  );
  const changes = await follow(env.db, env.tenant.id, (c) => c.length >= 7);
  t.same(changes.map(brief), [
    'account created',
    'account created',
    'class created',
    'membership created',
    'membership deleted',
    'membership created',
    'class updated display_name',
  ]);
  t.same(
    changes.filter((c) => c.object_type === 'membership').map((c) => c.related_id),
    [first, first, second],
    'the memberships name their accounts',
  );
  const stored = await env.db.selectFrom('classes').select(['display_name']).where('id', '=', klass).executeTakeFirstOrThrow();
  t.equal(stored.display_name, 'Class 8B');
});

t.test('writers outside SCIM are in the feed too: the portal, a disconnect, the purge', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const user = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const manual = await env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'by.hand@school.example', scim: '{}' }).returning('id').executeTakeFirstOrThrow();
  await disconnectTenant(env.db, env.tenant.id);
  await env.db.updateTable('accounts').set({ deleted_at: new Date(Date.now() - 40 * 86_400_000) }).where('id', '=', manual.id).execute();
  await sql`DELETE FROM accounts WHERE id = ${manual.id}::uuid`.execute(env.db);
  const changes = await follow(env.db, env.tenant.id, (c) => c.length >= 5);
  t.same(
    changes.map((c) => [brief(c), c.object_id]),
    [
      ['account created', user],
      ['account created', manual.id],
      ['account disconnected managed_by_sync,role_source,grade_source', user],
      ['account deleted deleted_at', manual.id],
      ['account purged', manual.id],
    ],
  );
});

t.test('deleted accounts stay visible as tombstones until purged', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const user = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  t.equal((await scim('DELETE', `/Users/${user}`)).statusCode, 204);
  const tombstones = await sql<{ tenant_id: string; id: string; deleted_at: Date }>`SELECT * FROM portal_account_tombstones`.execute(env.db);
  t.match(tombstones.rows, [{ tenant_id: env.tenant.id, id: user, deleted_at: Date }]);
  t.same((await sql`SELECT id FROM portal_accounts WHERE id = ${user}::uuid`.execute(env.db)).rows, [], 'not in the live view');
  await sql`UPDATE accounts SET deleted_at = now() - interval '31 days' WHERE id = ${user}::uuid`.execute(env.db);
  await sql`DELETE FROM accounts WHERE deleted_at < now() - interval '30 days'`.execute(env.db);
  t.same((await sql`SELECT id FROM portal_account_tombstones`.execute(env.db)).rows, [], 'gone once purged');
});

t.test('a change that commits after a later one was read is not skipped', async (t) => {
  const { db, url } = await testDatabase(t);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Feed School') RETURNING id`.execute(db)).rows[0]?.id ?? '';
  const early = new pg.Client({ connectionString: url });
  const late = new pg.Client({ connectionString: url });
  await early.connect();
  await late.connect();
  t.teardown(async () => {
    await early.end();
    await late.end();
  });
  const write = (client: pg.Client, name: string) =>
    client.query(`INSERT INTO accounts (tenant_id, managed_by, user_name) VALUES ($1, 'sync', $2)`, [tenant, name]);
  // The early transaction writes first (the smaller position) and commits last.
  await early.query('BEGIN');
  await write(early, 'early@school.example');
  await late.query('BEGIN');
  await write(late, 'late@school.example');
  await late.query('COMMIT');

  const naive = await sql<{ position: string }>`SELECT position::text FROM change_events WHERE tenant_id = ${tenant}::uuid ORDER BY change_events.position`.execute(db);
  t.equal(naive.rows.length, 1, 'a reader by position alone sees the late change now, and would move past the early one');
  const before = await sql<Change>`SELECT * FROM portal_changes(0, 100) WHERE tenant_id = ${tenant}::uuid`.execute(db);
  t.same(before.rows, [], 'portal_changes holds the late change back while the early transaction runs');

  await early.query('COMMIT');
  const after = await follow(db, tenant, (c) => c.length >= 2);
  const names = await sql<{ id: string; user_name: string }>`SELECT id, user_name FROM accounts`.execute(db);
  const nameOf = new Map(names.rows.map((r) => [r.id, r.user_name]));
  t.same(after.map((c) => nameOf.get(c.object_id)), ['early@school.example', 'late@school.example'], 'both, in position order, once the early one ended');
  t.ok(BigInt(after[0]?.position ?? 0) < BigInt(naive.rows[0]?.position ?? 0), 'the early change has the smaller position');
});

t.test('many concurrent writers and a reader polling meanwhile: the reader gets every change once, in order', async (t) => {
  const { db, url } = await testDatabase(t);
  const tenant = (await sql<{ id: string }>`INSERT INTO tenants (name) VALUES ('Feed School') RETURNING id`.execute(db)).rows[0]?.id ?? '';
  const WRITERS = 12;
  const TRANSACTIONS = 25;
  const writers = await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      return client;
    }),
  );
  t.teardown(() => Promise.all(writers.map((w) => w.end())));

  let writing = true;
  let committed = 0;
  const read: Change[] = [];
  const reader = (async () => {
    let after = '0';
    const deadline = Date.now() + 60_000;
    for (;;) {
      const page = await sql<Change>`SELECT * FROM portal_changes(${after}::numeric, 37)`.execute(db);
      for (const row of page.rows) {
        after = row.position;
        if (row.tenant_id === tenant) read.push(row);
      }
      if (page.rows.length === 0) {
        if ((!writing && read.length >= committed * 2) || Date.now() > deadline) return;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  })();

  // Each transaction writes two rows and holds them open for a random while,
  // so positions are handed out in one order and committed in another.
  await Promise.all(
    writers.map(async (client, w) => {
      for (let i = 0; i < TRANSACTIONS; i++) {
        await client.query('BEGIN');
        await client.query(`INSERT INTO accounts (tenant_id, managed_by, user_name) VALUES ($1, 'sync', $2), ($1, 'sync', $3)`, [
          tenant,
          `w${w}-${i}-a@school.example`,
          `w${w}-${i}-b@school.example`,
        ]);
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 15)));
        if (i % 7 === 3) {
          await client.query('ROLLBACK');
        } else {
          await client.query('COMMIT');
          committed++;
        }
      }
    }),
  );
  writing = false;
  await reader;

  const written = await sql<{ position: string }>`SELECT position::text FROM change_events WHERE tenant_id = ${tenant}::uuid ORDER BY change_events.position`.execute(db);
  const rolledBack = WRITERS * Array.from({ length: TRANSACTIONS }, (_, i) => i).filter((i) => i % 7 === 3).length;
  t.equal(committed, WRITERS * TRANSACTIONS - rolledBack);
  t.equal(written.rows.length, committed * 2, 'the committed changes, and none of the rolled-back ones, are in the feed');
  t.same(read.map((c) => c.position), written.rows.map((r) => r.position), 'the reader read every change once, in position order');
});

async function listen(t: Test, url: string): Promise<() => Promise<number>> {
  const listener = new pg.Client({ connectionString: url });
  await listener.connect();
  t.teardown(() => listener.end());
  let heard = 0;
  listener.on('notification', (n) => {
    if (n.channel === 'portal_changes') heard++;
  });
  await listener.query('LISTEN portal_changes');
  // Resolves with how many notifications came once at least one has, or 0 after a generous wait.
  return async () => {
    const deadline = Date.now() + 10_000;
    while (heard === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return heard;
  };
}

t.test('LISTEN portal_changes wakes a reader after SCIM writes commit', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const woken = await listen(t, env.database.url);
  const created = await Promise.all([1, 2, 3, 4].map((n) => scim('POST', '/Users', entraUser(n))));
  t.same(created.map((r) => r.statusCode), [201, 201, 201, 201]);
  const heard = await woken();
  t.ok(heard >= 1 && heard <= 4, `the writes woke the reader (${heard} notifications for 4 writes)`);
  const changes = await follow(env.db, env.tenant.id, (c) => c.length >= 4);
  t.equal(changes.length, 4, 'and the feed has the four creates');
});

t.test('LISTEN portal_changes wakes a reader after a disconnect', async (t) => {
  const env = await testApp(t);
  const woken = await listen(t, env.database.url);
  await disconnectTenant(env.db, env.tenant.id);
  t.equal(await woken(), 1);
});
