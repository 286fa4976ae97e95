// Rule 8 with rule 5: a disconnect keeps the memberships Entra made (the
// portal's while the tenant is disconnected). After a reconnect, a member
// Entra adds again is Entra's again, so Entra's later removal takes the pupil
// out; members a portal user added by hand, before or during the
// disconnection, stay the portal's; a kept member Entra never adds again
// stays as the disconnect left it.
import t from 'tap';
import { sql } from 'kysely';
import { runCli } from '../src/cli.js';
import { handMembershipSql } from './helpers/contract-sql.js';
import { connection } from './helpers/locks.js';
import { testApp, testEnv, type TestApp } from './helpers/app.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

async function cli(env: TestApp, ...argv: string[]) {
  const out: string[] = [];
  const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => out.push(s), env: testEnv({ DATABASE_URL: env.database.url }) });
  return { code, out: out.join('\n') };
}

t.test("after a disconnect and a reconnect, Entra's removal takes out a member it added again; hand-added members stay", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const ids: string[] = [];
  for (const n of [1, 2, 3, 4, 5]) ids.push((await scim('POST', '/Users', entraUser(n))).json().id as string);
  const [leaver, stays, handBefore, handDuring, notAgain] = ids as [string, string, string, string, string];
  const members = [leaver, stays, handBefore, notAgain].map((value) => ({ value }));
  const klass = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a', members })).json().id as string;
  const portal = await connection(t, env);
  const hand = handMembershipSql();
  // A teacher added a member Entra also has, before the disconnect.
  await portal.query(hand.add, [env.tenant.id, klass, handBefore]);

  t.equal((await cli(env, 'tenant', 'disconnect', env.tenant.id)).code, 0);
  const kept = await env.db.selectFrom('class_memberships').select(['account_id', 'synced', 'manual', 'manual_by_disconnect']).where('class_id', '=', klass).execute();
  t.same(
    Object.fromEntries(kept.map((m) => [m.account_id, [m.synced, m.manual, m.manual_by_disconnect]])),
    { [leaver]: [false, true, true], [stays]: [false, true, true], [handBefore]: [false, true, false], [notAgain]: [false, true, true] },
    "the disconnect makes every membership the portal's, marking those no portal user added",
  );
  // While disconnected the class is the portal's: a teacher adds a member by hand.
  await portal.query(hand.add, [env.tenant.id, klass, handDuring]);

  t.equal((await cli(env, 'tenant', 'connect', env.tenant.id)).code, 0);
  const issued = await cli(env, 'token', 'issue', '--tenant', env.tenant.id, '--json');
  const again = client(env.app, { authorization: `Bearer ${JSON.parse(issued.out).token as string}`, 'content-type': 'application/scim+json' });
  // Entra's first cycle after the reconnect: the users and the class are adopted again, then the members Entra has are sent.
  for (const n of [1, 2, 3, 4, 5]) t.equal((await again('POST', '/Users', entraUser(n))).statusCode, 201);
  t.equal((await again('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a' })).json().id, klass, 'the class is adopted again');
  const { last } = await env.db.selectFrom('change_events').select((eb) => eb.fn.max('position').as('last')).executeTakeFirstOrThrow();
  const add = await again('PATCH', `/Groups/${klass}`, patch({ op: 'Add', path: 'members', value: [leaver, stays, handBefore, handDuring].map((value) => ({ value })) }));
  t.equal(add.statusCode, 204, add.body);
  const feed = await env.db
    .selectFrom('change_events')
    .select(['related_id', 'action', 'changed'])
    .where('object_type', '=', 'membership')
    .where('position', '>', last)
    .execute();
  t.same(
    Object.fromEntries(feed.map((c) => [c.related_id, [c.action, [...(c.changed ?? [])].sort()]])),
    { [leaver]: ['updated', ['manual', 'synced']], [stays]: ['updated', ['manual', 'synced']], [handBefore]: ['updated', ['synced']], [handDuring]: ['updated', ['synced']] },
    'the feed says which members are Entra’s again',
  );

  // The leaver moves to another class in School Data Sync; Entra removes the member, and the hand-added ones too.
  const remove = await again('PATCH', `/Groups/${klass}`, patch({ op: 'Remove', path: 'members', value: [leaver, handBefore, handDuring].map((value) => ({ value })) }));
  t.equal(remove.statusCode, 204, remove.body);
  const left = (await sql<{ account_id: string; synced: boolean; manual: boolean }>`SELECT account_id, synced, manual FROM portal_class_memberships WHERE class_id = ${klass}::uuid`.execute(env.db)).rows;
  t.same(
    Object.fromEntries(left.map((m) => [m.account_id, [m.synced, m.manual]])),
    { [stays]: [true, false], [handBefore]: [false, true], [handDuring]: [false, true], [notAgain]: [false, true] },
    'the leaver is out; hand-added members stay; the member Entra did not add again stays as the disconnect left it',
  );
  const shown = (await again('GET', `/Groups/${klass}`)).json<{ members: { value: string }[] }>();
  t.same(
    shown.members.map((m) => m.value),
    [stays],
    'SCIM shows the one member that is Entra’s',
  );
  t.equal((await env.db.selectFrom('class_memberships').select('account_id').where('manual_by_disconnect', '=', true).execute()).length, 1, 'only the member Entra never added again keeps the mark');
});
