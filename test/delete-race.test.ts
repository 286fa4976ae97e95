// Rule 7 under concurrency: a member add racing the user's DELETE ends as one
// of the two serial orders, on one instance or two. Add then delete: both
// succeed and the membership is gone with the account. Delete then add: the
// add is refused, the user being no user any more. Never a membership of a
// deleted account, in the table, the portal's view or the class's members.
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { buildApp } from '../src/app.js';
import { createDb } from '../src/db/database.js';
import { testApp } from './helpers/app.js';
import { GROUP, client, entraUser, patch, type Send } from './helpers/scim.js';

const PAIRS = 300;
/** Pairs in flight at once: enough to overlap on every connection, bounded for the machine. */
const AT_ONCE = 20;

async function race(t: Test, twoInstances: boolean): Promise<void> {
  const env = await testApp(t);
  let other: Send = client(env.app, env.headers);
  if (twoInstances) {
    // A second instance: its own app and pool on the same database.
    const second = createDb(env.database.url, { poolSize: 5 });
    const app = await buildApp({ config: env.config, db: second.db, pool: second.pool, keys: env.keys });
    t.teardown(async () => {
      await app.close();
      await second.db.destroy();
    });
    other = client(app, env.headers);
  }
  const scim = client(env.app, env.headers);
  const klass = await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Race class', externalId: 'race-class' });
  t.equal(klass.statusCode, 201, klass.body);
  const classId = klass.json().id as string;

  const ids: string[] = [];
  for (let start = 0; start < PAIRS; start += AT_ONCE) {
    const created = await Promise.all(Array.from({ length: Math.min(AT_ONCE, PAIRS - start) }, (_, k) => scim('POST', '/Users', entraUser(start + k + 1))));
    for (const c of created) ids.push(c.json().id as string);
  }

  const outcomes = { addFirst: 0, deleteFirst: 0, other: [] as string[] };
  for (let start = 0; start < PAIRS; start += AT_ONCE) {
    await Promise.all(
      ids.slice(start, start + AT_ONCE).map(async (id, k) => {
        // Which request leaves first alternates, so both orders are tried.
        const add = () => scim('PATCH', `/Groups/${classId}`, patch({ op: 'Add', path: 'members', value: [{ value: id }] }));
        const remove = () => other('DELETE', `/Users/${id}`);
        const [added, deleted] = k % 2 === 0 ? await Promise.all([add(), remove()]) : (await Promise.all([remove(), add()])).reverse();
        if (deleted?.statusCode !== 204) outcomes.other.push(`DELETE ${deleted?.statusCode}: ${deleted?.body}`);
        if (added?.statusCode === 204) outcomes.addFirst++;
        else if (added?.statusCode === 400 && added.json().scimType === 'invalidValue' && /not a user here/.test(added.body)) outcomes.deleteFirst++;
        else outcomes.other.push(`PATCH ${added?.statusCode}: ${added?.body}`);
      }),
    );
  }
  t.same(outcomes.other, [], 'every delete succeeds, every add succeeds or is refused as no user');
  t.equal(outcomes.addFirst + outcomes.deleteFirst, PAIRS, `${outcomes.addFirst} adds came first, ${outcomes.deleteFirst} deletes`);

  const orphans = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM class_memberships m JOIN accounts a ON a.tenant_id = m.tenant_id AND a.id = m.account_id
     WHERE a.deleted_at IS NOT NULL`.execute(env.db);
  t.equal(orphans.rows[0]?.n, 0, 'no membership of a deleted account is left');
  const viewed = await sql<{ n: number }>`SELECT count(*)::int AS n FROM portal_class_memberships WHERE class_id = ${classId}::uuid`.execute(env.db);
  t.equal(viewed.rows[0]?.n, 0, "the portal's view shows no member");
  const deleted = await sql<{ n: number }>`SELECT count(*)::int AS n FROM accounts WHERE tenant_id = ${env.tenant.id}::uuid AND deleted_at IS NOT NULL`.execute(env.db);
  t.equal(deleted.rows[0]?.n, PAIRS, 'every user is deleted');
  const group = await scim('GET', `/Groups/${classId}`);
  t.same(group.json().members ?? [], [], 'the class lists no member');
}

t.test('a member add racing the user delete on one instance leaves no membership behind', (t) => race(t, false));
t.test('the same race across two instances', (t) => race(t, true));

t.test("the portal's membership view never shows a deleted account, whoever wrote the row", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const klass = await env.db.insertInto('classes').values({ tenant_id: env.tenant.id, display_name: 'Hand class', scim: '{}' }).returning('id').executeTakeFirstOrThrow();
  await env.db.insertInto('class_memberships').values({ tenant_id: env.tenant.id, class_id: klass.id, account_id: id, manual: true }).execute();
  t.equal((await env.db.selectFrom('portal_class_memberships' as 'class_memberships').select('account_id').execute()).length, 1, 'a live member is shown');
  // A writer that marks the account deleted without the SCIM path (the portal, a script).
  await env.db.updateTable('accounts').set({ deleted_at: new Date() }).where('id', '=', id).execute();
  t.same(await env.db.selectFrom('class_memberships').select('account_id').where('account_id', '=', id).execute(), [], 'its memberships went with it');
  await env.db.insertInto('class_memberships').values({ tenant_id: env.tenant.id, class_id: klass.id, account_id: id, manual: true }).execute();
  t.same(await env.db.selectFrom('portal_class_memberships' as 'class_memberships').select('account_id').execute(), [], 'a membership written later is not shown');
});
