// Rule 8 with rule 5: a disconnect keeps the memberships Entra made (the
// portal's while the tenant is disconnected). After a reconnect, a member
// Entra adds again is Entra's again, so Entra's later removal takes the pupil
// out; members a portal user added by hand, before or during the
// disconnection, stay the portal's; a kept member Entra never adds again
// stays as the disconnect left it.
import t from 'tap';
import { sql } from 'kysely';
import { mergeAccounts } from '../src/services/accounts.js';
import { handMembershipSql } from './helpers/contract-sql.js';
import { connection } from './helpers/locks.js';
import { testApp, type TestApp } from './helpers/app.js';
import { cli } from './helpers/cli.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

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

/** A disconnect and a connect, and a client with the new token. */
async function reconnected(env: TestApp) {
  if ((await cli(env, 'tenant', 'disconnect', env.tenant.id)).code !== 0) throw new Error('disconnect failed');
  if ((await cli(env, 'tenant', 'connect', env.tenant.id)).code !== 0) throw new Error('connect failed');
  const issued = await cli(env, 'token', 'issue', '--tenant', env.tenant.id, '--json');
  return client(env.app, { authorization: `Bearer ${JSON.parse(issued.out).token as string}`, 'content-type': 'application/scim+json' });
}

t.test("a member the disconnect kept that a teacher adds by hand is the portal's own: Entra's removal leaves it", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const pupil = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const klass = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a', members: [{ value: pupil }] })).json().id as string;
  if ((await cli(env, 'tenant', 'disconnect', env.tenant.id)).code !== 0) throw new Error('disconnect failed');
  const portal = await connection(t, env);
  const { last } = await env.db.selectFrom('change_events').select((eb) => eb.fn.max('position').as('last')).executeTakeFirstOrThrow();
  await portal.query(handMembershipSql().add, [env.tenant.id, klass, pupil]);
  t.same(
    await env.db.selectFrom('class_memberships').select(['synced', 'manual', 'manual_by_disconnect']).where('class_id', '=', klass).execute(),
    [{ synced: false, manual: true, manual_by_disconnect: false }],
    "the contract's hand-add makes it the portal's own",
  );
  t.same(await env.db.selectFrom('change_events').select('action').where('position', '>', last).execute(), [], 'which the portal sees no change in: no feed row');
  if ((await cli(env, 'tenant', 'connect', env.tenant.id)).code !== 0) throw new Error('connect failed');
  const issued = await cli(env, 'token', 'issue', '--tenant', env.tenant.id, '--json');
  const again = client(env.app, { authorization: `Bearer ${JSON.parse(issued.out).token as string}`, 'content-type': 'application/scim+json' });
  t.equal((await again('POST', '/Users', entraUser(1))).statusCode, 201);
  t.equal((await again('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a' })).json().id, klass);
  t.equal((await again('PATCH', `/Groups/${klass}`, patch({ op: 'Add', path: 'members', value: [{ value: pupil }] }))).statusCode, 204);
  t.equal((await again('PATCH', `/Groups/${klass}`, patch({ op: 'Remove', path: 'members', value: [{ value: pupil }] }))).statusCode, 204);
  t.same(
    await env.db.selectFrom('class_memberships').select(['account_id', 'synced', 'manual']).where('class_id', '=', klass).execute(),
    [{ account_id: pupil, synced: false, manual: true }],
    'the member the teacher added stays, manual',
  );
});

t.test("a merge after a reconnect: a membership Entra has again through the absorbed account is Entra's", async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  // A pupil Entra synced without an object id, in a class of Entra's, and one whose membership the portal also holds by hand.
  const pupil = (await scim('POST', '/Users', entraUser(1, { externalId: null }))).json().id as string;
  const other = (await scim('POST', '/Users', entraUser(2, { externalId: null }))).json().id as string;
  const klass = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a', members: [{ value: pupil }, { value: other }] })).json().id as string;
  const again = await reconnected(env);
  const portal = await connection(t, env);
  // Entra's first cycle after the reconnect: both under new addresses (new accounts), the class taken back, the new accounts added.
  const fresh: string[] = [];
  for (const n of [1, 2]) {
    const created = await again('POST', '/Users', entraUser(n, { userName: `Pupil${n}.new@School.example`, emails: [{ primary: true, type: 'work', value: `pupil${n}.new@school.example` }] }));
    t.equal(created.statusCode, 201);
    fresh.push(created.json().id as string);
  }
  const [freshPupil, freshOther] = fresh as [string, string];
  t.equal((await again('POST', '/Groups', { schemas: [GROUP], displayName: '9A', externalId: 'class-9a' })).json().id, klass);
  t.equal((await again('PATCH', `/Groups/${klass}`, patch({ op: 'Add', path: 'members', value: [{ value: freshPupil }] }))).statusCode, 204);
  // The second one Entra has not added yet; a teacher adds the old account by hand.
  await portal.query(handMembershipSql().add, [env.tenant.id, klass, other]);

  await mergeAccounts(env.db, pupil, freshPupil, { via: 'cli' });
  await mergeAccounts(env.db, other, freshOther, { via: 'cli' });
  const merged = await env.db.selectFrom('class_memberships').select(['account_id', 'synced', 'manual', 'manual_by_disconnect']).where('class_id', '=', klass).execute();
  t.same(
    Object.fromEntries(merged.map((m) => [m.account_id, [m.synced, m.manual, m.manual_by_disconnect]])),
    { [pupil]: [true, false, false], [other]: [false, true, false] },
    "Entra has the first again: the membership is Entra's; the second the teacher added stays the portal's",
  );
  t.equal((await again('PATCH', `/Groups/${klass}`, patch({ op: 'Remove', path: 'members', value: [{ value: freshPupil }] }))).statusCode, 204);
  t.same(
    (await env.db.selectFrom('class_memberships').select('account_id').where('class_id', '=', klass).execute()).map((m) => m.account_id),
    [other],
    "Entra's removal (by the id it knows, now an alias) takes the first out",
  );
});
