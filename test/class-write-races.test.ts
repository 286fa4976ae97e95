// A class write planned from the class as it was meets a write that commits
// before it: another change of the class, or its delete. The write's
// statement locks the class row where it reads its guards, so it sees what
// committed meanwhile: a change planned from an older version is planned
// again on the locked path (or refused by its If-Match), and a class deleted
// meanwhile is a 404, never a write lost or an answer for nothing written.
// The other write is a transaction of the test, held open until the SCIM
// write waits for it (pg_blocking_pids), so the order never rests on timing.
import type { LightMyRequestResponse } from 'fastify';
import t, { type Test } from 'tap';
import { mergeAccounts } from '../src/services/accounts.js';
import { testApp, type TestApp } from './helpers/app.js';
import { handMembershipSql } from './helpers/contract-sql.js';
import { holder, untilBlocked, watcher, connection } from './helpers/locks.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

async function classAndHolder(t: Test, env: TestApp, update: string) {
  const scim = client(env.app, env.headers);
  const created = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', externalId: 'g-7a' });
  t.equal(created.statusCode, 201);
  const id = created.json().id as string;
  const blockedBy = watcher(await connection(t, env));
  const { hold, pid } = await holder(t, env);
  await hold.query(update, [id]);
  return { scim, id, hold, waitsFor: (write: Promise<unknown>) => untilBlocked(blockedBy, pid, 1, write) };
}

const classRow = (env: TestApp, id: string) =>
  env.db.selectFrom('classes').select(['display_name', 'external_id', 'version']).where('tenant_id', '=', env.tenant.id).where('id', '=', id).executeTakeFirst();

/** The events of the class's writes after its create (a refused write's failure event included). */
const groupEvents = (env: TestApp) =>
  env.db
    .selectFrom('audit_events')
    .select(['action', 'outcome', 'details'])
    .where('tenant_id', '=', env.tenant.id)
    .where('object_type', '=', 'group')
    .where('action', '<>', 'create')
    .orderBy('id')
    .execute();

// The rename of another writer (the portal, a second instance) that commits while the PATCH waits.
const RENAME = `UPDATE classes SET display_name = 'Class 7B', version = version + 1, updated_at = clock_timestamp() WHERE id = $1`;

t.test('a change planned before another change committed keeps both', async (t) => {
  const env = await testApp(t);
  const { scim, id, hold, waitsFor } = await classAndHolder(t, env, RENAME);
  const changed = scim('PATCH', `/Groups/${id}`, patch({ op: 'Replace', path: 'externalId', value: 'g-7a-2' }));
  t.ok(await waitsFor(changed), 'the PATCH waits for the other change');
  await hold.query('COMMIT');

  const answer = await changed;
  t.equal(answer.statusCode, 204, answer.body);
  t.same(await classRow(env, id), { display_name: 'Class 7B', external_id: 'g-7a-2', version: 3 }, 'the rename is kept, and the PATCH is written on top');
  t.match(await groupEvents(env), [{ action: 'update', outcome: 'success', details: { changed: ['externalId'] } }], 'the event names what this write changed');
  const read = await scim('GET', `/Groups/${id}`);
  t.match(read.json(), { displayName: 'Class 7B', externalId: 'g-7a-2', meta: { version: 'W/"3"' } });
});

t.test('If-Match names the version the other change replaced: 412, and nothing is written', async (t) => {
  const env = await testApp(t);
  const { scim, id, hold, waitsFor } = await classAndHolder(t, env, RENAME);
  const changed = scim('PATCH', `/Groups/${id}`, patch({ op: 'Replace', path: 'externalId', value: 'g-7a-2' }), { 'if-match': 'W/"1"' });
  t.ok(await waitsFor(changed), 'the PATCH waits for the other change');
  await hold.query('COMMIT');

  const answer = await changed;
  t.equal(answer.statusCode, 412);
  t.match(answer.json(), { status: '412', detail: /its version is W\/"2", not W\/"1"/ });
  t.same(await classRow(env, id), { display_name: 'Class 7B', external_id: 'g-7a', version: 2 });
  t.match(await groupEvents(env), [{ action: 'update', outcome: 'failure', details: { status: 412 } }], 'only the refusal is recorded');
});

t.test('a member batch with If-Match adds no member when the class changed under it', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const user = await scim('POST', '/Users', entraUser(1));
  t.equal(user.statusCode, 201);
  const { id, hold, waitsFor } = await classAndHolder(t, env, RENAME);
  const added = scim('PATCH', `/Groups/${id}`, patch({ op: 'Add', path: 'members', value: [{ value: user.json().id }] }), { 'if-match': 'W/"1"' });
  t.ok(await waitsFor(added), 'the batch waits for the other change');
  await hold.query('COMMIT');

  t.equal((await added).statusCode, 412);
  const members = await env.db.selectFrom('class_memberships').select('account_id').where('tenant_id', '=', env.tenant.id).execute();
  t.same(members, [], 'the refused batch added nobody');
  t.same(await classRow(env, id), { display_name: 'Class 7B', external_id: 'g-7a', version: 2 });
});

for (const method of ['PUT', 'PATCH'] as const) {
  t.test(`a ${method} of a class deleted while it waited answers 404`, async (t) => {
    const env = await testApp(t);
    const { scim, id, hold, waitsFor } = await classAndHolder(t, env, 'DELETE FROM classes WHERE id = $1');
    const body =
      method === 'PUT'
        ? { schemas: [GROUP], displayName: 'Class 7A', externalId: 'g-7a', description: 'Mathematics' }
        : patch({ op: 'Replace', path: 'externalId', value: 'g-7a-2' });
    const written = scim(method, `/Groups/${id}`, body);
    t.ok(await waitsFor(written), `the ${method} waits for the delete`);
    await hold.query('COMMIT');

    const answer = await written;
    t.equal(answer.statusCode, 404);
    t.match(answer.json(), { status: '404', detail: `No group ${id}.` });
    t.equal(await classRow(env, id), undefined);
    t.match(await groupEvents(env), [{ outcome: 'failure', details: { status: 404 } }], 'only the refusal is recorded');
  });
}

t.test('a locked class write holding the class lets a membership of it be written by a transaction that holds a member (a merge)', async (t) => {
  const env = await testApp(t, {}, { writeStrategy: 'locked' });
  const scim = client(env.app, env.headers);
  const [joining, other] = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  const created = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', externalId: 'g-7a' });
  const id = created.json().id as string;

  // The other transaction holds the account the class write will name, as a merge holds both of its accounts.
  const blockedBy = watcher(await connection(t, env));
  const { hold, pid } = await holder(t, env);
  await hold.query('SELECT 1 FROM accounts WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [env.tenant.id, joining]);
  const added = scim('PATCH', `/Groups/${id}`, patch({ op: 'Add', path: 'members', value: [{ value: joining }] }));
  t.ok(await untilBlocked(blockedBy, pid, 1, added), 'the class write holds the class and waits for the account');

  // Its membership insert checks the class (a key share): it does not wait for the class write.
  await hold.query('INSERT INTO class_memberships (tenant_id, class_id, account_id, synced) VALUES ($1, $2, $3, true)', [env.tenant.id, id, other]);
  await hold.query('COMMIT');

  t.equal((await added).statusCode, 204);
  const members = await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', id).orderBy('account_id').execute();
  t.same(members.map((m) => m.account_id), [joining, other].sort(), 'both wrote: neither was aborted as a deadlock');
});

// The portal keeps a member by hand (the database contract's statement)
// while Entra's removal waits for the row: the removal reads the row as the
// portal left it, so the member stays by hand only and leaves Entra's list,
// on either write path.
for (const writeStrategy of ['quick', 'locked'] as const) {
  for (const method of ['PATCH', 'PUT'] as const) {
    t.test(`a ${method} removing a member the portal keeps by hand meanwhile leaves it manual only (${writeStrategy} path)`, async (t) => {
      const env = await testApp(t, {}, { writeStrategy });
      const scim = client(env.app, env.headers);
      const pupil = (await scim('POST', '/Users', entraUser(1))).json().id as string;
      const created = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', externalId: 'g-7a', members: [{ value: pupil }] });
      t.equal(created.statusCode, 201);
      const id = created.json().id as string;

      const blockedBy = watcher(await connection(t, env));
      const { hold, pid } = await holder(t, env);
      await hold.query(handMembershipSql().add, [env.tenant.id, id, pupil]);
      const removed =
        method === 'PATCH'
          ? scim('PATCH', `/Groups/${id}`, patch({ op: 'Remove', path: 'members', value: [{ value: pupil }] }))
          : scim('PUT', `/Groups/${id}`, { schemas: [GROUP], displayName: 'Class 7A', externalId: 'g-7a', members: [] });
      t.ok(await untilBlocked(blockedBy, pid, 1, removed), 'the removal waits for the portal');
      await hold.query('COMMIT');

      const answer = await removed;
      t.equal(answer.statusCode, method === 'PATCH' ? 204 : 200, answer.body);
      const rows = await env.db.selectFrom('class_memberships').select(['account_id', 'synced', 'manual']).where('class_id', '=', id).execute();
      t.same(rows, [{ account_id: pupil, synced: false, manual: true }], 'kept by hand, no longer from Entra');
      const read = await scim('GET', `/Groups/${id}`);
      t.same(read.json().members ?? [], [], 'SCIM shows Entra no member');
      t.match(read.json(), { meta: { version: 'W/"2"' } });
    });
  }
}

t.test("the contract's statements for members added by hand keep what Entra holds, and Entra keeps what the portal holds", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const { add, remove } = handMembershipSql();
  const [synced, handOnly] = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: synced }] })).json().id as string;
  const portal = await connection(t, env);
  const removeByHand = async (account: string) => {
    await portal.query('BEGIN');
    for (const statement of remove) await portal.query(statement, [env.tenant.id, id, account]);
    await portal.query('COMMIT');
  };
  const rows = () => env.db.selectFrom('class_memberships').select(['account_id', 'synced', 'manual']).where('class_id', '=', id).orderBy('account_id').execute();
  const byAccount = <T extends { account_id: string }>(list: T[]) => list.sort((a, b) => a.account_id.localeCompare(b.account_id));

  for (const account of [synced, handOnly]) await portal.query(add, [env.tenant.id, id, account]);
  t.same(await rows(), byAccount([{ account_id: synced, synced: true, manual: true }, { account_id: handOnly, synced: false, manual: true }]));
  for (const account of [synced, handOnly]) await removeByHand(account);
  t.same(await rows(), [{ account_id: synced, synced: true, manual: false }], 'the member Entra holds stays, the one held by hand only goes');
  t.same(((await scim('GET', `/Groups/${id}`)).json().members as { value: string }[]).map((m) => m.value), [synced]);

  // Entra writes while the portal's removal holds the row, in its transaction
  // between the first two statements and the rest: Entra's write comes after it.
  const blockedBy = watcher(await connection(t, env));
  const [lock, ...rest] = remove;
  const whileRemovingByHand = async (account: string, write: () => Promise<LightMyRequestResponse>) => {
    const { hold, pid } = await holder(t, env);
    for (const statement of [lock ?? '', rest[0] ?? '']) await hold.query(statement, [env.tenant.id, id, account]);
    const written = write();
    t.ok(await untilBlocked(blockedBy, pid, 1, written), "Entra's write waits for the portal's removal");
    for (const statement of rest.slice(1)) await hold.query(statement, [env.tenant.id, id, account]);
    await hold.query('COMMIT');
    return written;
  };

  await portal.query(add, [env.tenant.id, id, handOnly]);
  const added = await whileRemovingByHand(handOnly, () => scim('PATCH', `/Groups/${id}`, patch({ op: 'Add', path: 'members', value: [{ value: handOnly }] })));
  t.equal(added.statusCode, 204);
  t.same(await rows(), byAccount([{ account_id: synced, synced: true, manual: false }, { account_id: handOnly, synced: true, manual: false }]), 'a member of Entra only');

  await portal.query(add, [env.tenant.id, id, synced]);
  const removed = await whileRemovingByHand(synced, () => scim('PATCH', `/Groups/${id}`, patch({ op: 'Remove', path: 'members', value: [{ value: synced }] })));
  t.equal(removed.statusCode, 204);
  t.same(await rows(), [{ account_id: handOnly, synced: true, manual: false }], 'both removed it: no row is left');
});

// The portal adds a member by hand (the contract's statement) while Entra
// deletes the account: the statement holds a share of the account, so the
// delete waits for it and then takes the new membership with it; a delete
// that got there first leaves the statement nothing to add.
t.test("a user delete waits for the portal's hand add of that user and takes the membership with it; after the delete the add adds nothing", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const { add } = handMembershipSql();
  const [pupil, other] = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', entraUser(2))).json().id as string];
  const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Chess club' })).json().id as string;

  const blockedBy = watcher(await connection(t, env));
  const { hold, pid } = await holder(t, env);
  await hold.query(add, [env.tenant.id, id, pupil]);
  const deleted = scim('DELETE', `/Users/${pupil}`);
  t.ok(await untilBlocked(blockedBy, pid, 1, deleted), 'the delete waits for the portal');
  await hold.query('COMMIT');
  t.equal((await deleted).statusCode, 204);
  t.same(await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', id).execute(), [], 'the membership went with the account');
  const feed = await env.db
    .selectFrom('change_events')
    .select(['object_type', 'action'])
    .where('tenant_id', '=', env.tenant.id)
    .where((eb) => eb.or([eb('object_id', '=', pupil), eb.and([eb('object_id', '=', id), eb('related_id', '=', pupil)])]))
    .orderBy('position')
    .execute();
  t.same(
    feed.map((c) => `${c.action} ${c.object_type}`),
    ['created account', 'created membership', 'deleted membership', 'deleted account'],
    'the feed tells the portal the member left',
  );

  t.equal((await scim('DELETE', `/Users/${other}`)).statusCode, 204);
  const result = await (await connection(t, env)).query(add, [env.tenant.id, id, other]);
  t.equal(result.rowCount, 0, 'a deleted account is added to no class');
  t.same(await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', id).execute(), []);
});

// Entra removes a member whose membership another write added while the
// removal waited for the class: the removal reads the class's members after
// that write, not from before it, and the member leaves.
t.test('a removal that waited for the class removes a membership the other write added', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const pupil = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const { id, hold, waitsFor } = await classAndHolder(t, env, RENAME);
  await hold.query('INSERT INTO class_memberships (tenant_id, class_id, account_id, synced) VALUES ($1, $2, $3, true)', [env.tenant.id, id, pupil]);
  const removed = scim('PATCH', `/Groups/${id}`, patch({ op: 'Remove', path: 'members', value: [{ value: pupil }] }));
  t.ok(await waitsFor(removed), 'the removal waits for the other write');
  await hold.query('COMMIT');

  t.equal((await removed).statusCode, 204);
  t.same(await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', id).execute(), [], 'the member left');
  t.match(await classRow(env, id), { display_name: 'Class 7B', version: 3 });
  t.match(await groupEvents(env), [{ action: 'update', outcome: 'success', details: { changed: ['members'] } }]);
});

// A merge of two synced members of a class, while Entra removes both. The
// merge takes both accounts' memberships before it writes any, in the order
// (class, account) that a removal locks a class's leaving rows in, so the two
// take turns instead of each holding one row the other waits for. The merge
// is paused after its first membership write by a lock of the test's on the
// table its absorbed account's delete writes to.
for (const method of ['PATCH', 'PUT'] as const) {
  t.test(`a merge of two members and a ${method} removing both take turns, never a deadlock`, async (t) => {
    const env = await testApp(t);
    const scim = client(env.app, env.headers);
    const watch = await connection(t, env);
    const deadlocks = async () => Number((await watch.query('SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()')).rows[0].deadlocks);
    const before = await deadlocks();
    // The kept account is one Entra made without an externalId, so a merge may keep it.
    const { externalId: _unused, ...unlinked } = entraUser(2);
    const [first, second] = [(await scim('POST', '/Users', entraUser(1))).json().id as string, (await scim('POST', '/Users', unlinked)).json().id as string];
    const other = (await scim('POST', '/Users', entraUser(3))).json().id as string;
    // The absorbed account first in the class's key order: the removal locks its row before the kept one's.
    const [absorb, keep] = first < second ? [first, second] : [second, first];
    if (absorb === second) {
      // Only the second was made without an externalId; make the one kept unlinked too.
      await env.db.updateTable('accounts').set({ external_id: null }).where('id', '=', keep).execute();
    }
    const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [first, second, other].map((value) => ({ value })) })).json().id as string;

    const blockedBy = watcher(watch);
    const { hold, pid } = await holder(t, env);
    await hold.query('LOCK TABLE class_departures IN SHARE MODE');
    const merged = mergeAccounts(env.db, keep, absorb, { via: 'cli' });
    const mergePid = (await untilBlocked(blockedBy, pid, 1, merged))?.[0];
    t.ok(mergePid, "the merge waits at its absorbed account's delete");
    const removed =
      method === 'PATCH'
        ? scim('PATCH', `/Groups/${id}`, patch({ op: 'Remove', path: 'members', value: [{ value: absorb }, { value: keep }] }))
        : scim('PUT', `/Groups/${id}`, { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: other }] });
    t.ok(await untilBlocked(blockedBy, mergePid ?? -1, 1, removed), 'the removal waits for the merge');
    await hold.query('COMMIT');

    const [mergeResult, answer] = await Promise.allSettled([merged, removed]);
    t.equal(mergeResult.status, 'fulfilled', 'the merge committed');
    t.equal(answer.status === 'fulfilled' ? answer.value.statusCode : 0, method === 'PATCH' ? 204 : 200, answer.status === 'fulfilled' ? answer.value.body : '');
    t.equal(await deadlocks(), before, 'no deadlock');
    const rows = await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', id).execute();
    t.same(rows.map((r) => r.account_id), [other], 'the merged member left the class');
  });
}

// A class delete holds its class and then deletes its memberships: a merge
// takes the classes of its memberships (a key share) before it locks any of
// them, so it waits for the delete holding nothing the delete needs.
t.test('a merge of a member and a delete of its class take turns, never a deadlock', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const watch = await connection(t, env);
  const deadlocks = async () => Number((await watch.query('SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()')).rows[0].deadlocks);
  const before = await deadlocks();
  const absorb = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const keep = (
    await env.db
      .insertInto('accounts')
      .values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'pupil1.old@school.example', scim: '{}' })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
  const id = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 7A', members: [{ value: absorb }] })).json().id as string;

  const blockedBy = watcher(watch);
  const { hold, pid } = await holder(t, env);
  await hold.query('SELECT 1 FROM classes WHERE id = $1 FOR UPDATE', [id]);
  const merged = mergeAccounts(env.db, keep, absorb, { via: 'cli' });
  t.ok(await untilBlocked(blockedBy, pid, 1, merged), 'the merge waits for the class');
  await hold.query('DELETE FROM classes WHERE id = $1', [id]);
  await hold.query('COMMIT');

  const result = await Promise.allSettled([merged]);
  t.equal(result[0]?.status, 'fulfilled', 'the merge committed');
  t.equal(await deadlocks(), before, 'no deadlock');
  t.same(await env.db.selectFrom('class_memberships').selectAll().where('class_id', '=', id).execute(), [], 'the class went with its memberships');
  t.match(await env.db.selectFrom('accounts').select(['managed_by', 'external_id']).where('id', '=', keep).executeTakeFirstOrThrow(), { managed_by: 'sync', external_id: '00000000-0000-4000-8000-000000000001' });
});

// Entra adopts a manual class again (rule 8) naming the account a merge
// absorbs, while the merge holds that account and waits for the kept one.
// The adoption holds the class as every class write does (FOR NO KEY
// UPDATE), which the merge's key share of its classes passes.
for (const writeStrategy of ['quick', 'locked'] as const) {
  t.test(`a merge and an adoption of a class naming the absorbed account take turns (${writeStrategy} path)`, async (t) => {
    const env = await testApp(t, {}, { writeStrategy });
    const scim = client(env.app, env.headers);
    const watch = await connection(t, env);
    const deadlocks = async () => Number((await watch.query('SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()')).rows[0].deadlocks);
    const before = await deadlocks();
    const absorb = (await scim('POST', '/Users', entraUser(1))).json().id as string;
    // The kept account sorts after the absorbed one, so the merge locks the absorbed one first; a hand member of a class Entra once synced.
    const keep = 'ffffffff-ffff-4fff-8fff-ffffffffffff';
    await env.db.insertInto('accounts').values({ id: keep, tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'pupil1.old@school.example', scim: '{}' }).execute();
    const klass = (await env.db.insertInto('classes').values({ tenant_id: env.tenant.id, managed_by: 'manual', display_name: '9A', external_id: 'class-9a', scim: '{}' }).returning('id').executeTakeFirstOrThrow()).id;
    await env.db.insertInto('class_memberships').values({ tenant_id: env.tenant.id, class_id: klass, account_id: keep, synced: false, manual: true }).execute();

    const blockedBy = watcher(watch);
    const { hold, pid } = await holder(t, env);
    await hold.query('SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE', [keep]);
    const merged = mergeAccounts(env.db, keep, absorb, { via: 'cli' });
    const mergePid = (await untilBlocked(blockedBy, pid, 1, merged))?.[0];
    t.ok(mergePid, 'the merge holds the absorbed account and waits for the kept one');
    const adopted = scim('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a', members: [{ value: absorb }] });
    t.ok(await untilBlocked(blockedBy, mergePid ?? -1, 1, adopted), 'the adoption waits for the merge');
    await hold.query('COMMIT');

    const [merge, adoption] = await Promise.allSettled([merged, adopted]);
    t.equal(merge.status, 'fulfilled', 'the merge committed');
    t.equal(await deadlocks(), before, 'no deadlock');
    t.equal(adoption.status === 'fulfilled' ? adoption.value.statusCode : 0, 201, adoption.status === 'fulfilled' ? adoption.value.body : '');
    t.equal(adoption.status === 'fulfilled' ? adoption.value.json().id : '', klass, 'the class is adopted');
    const rows = await env.db.selectFrom('class_memberships').select(['account_id', 'synced', 'manual']).where('class_id', '=', klass).execute();
    t.same(rows, [{ account_id: keep, synced: true, manual: true }], 'the absorbed id names the kept account, now a member from Entra and by hand');
  });
}
