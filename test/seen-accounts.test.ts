// A PATCH starts from the account as this instance last saw it (seen-accounts.ts)
// only while the account still has that version: changes made meanwhile by
// another instance, the portal team's tools or a delete are never undone.
import t from 'tap';
import type { Test } from 'tap';
import { buildApp } from '../src/app.js';
import { SEEN_ACCOUNTS_MAX, SeenAccounts } from '../src/scim/seen-accounts.js';
import type { AccountResource } from '../src/db/accounts.js';
import { testApp } from './helpers/app.js';
import { client, entraUser, patch } from './helpers/scim.js';

/** Two instances of the server on one database, as behind a load balancer; a user created on A (so A remembers it). */
async function twoInstances(t: Test) {
  const env = await testApp(t);
  const b = await buildApp({ config: env.config, db: env.db, pool: env.database.pool, keys: env.keys });
  t.teardown(() => b.close());
  const onA = client(env.app, env.headers);
  const onB = client(b, env.headers);
  const created = await onA('POST', '/Users', entraUser(1));
  t.equal(created.statusCode, 201);
  const id = created.json<{ id: string }>().id;
  const row = () => env.db.selectFrom('accounts').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const audits = () =>
    env.db
      .selectFrom('audit_events')
      .select(['action', 'details'])
      .where('object_id', '=', id)
      .orderBy('at')
      .execute();
  return { ...env, onA, onB, id, row, audits };
}

t.test('a PATCH on one instance keeps what another instance changed since it last saw the user', async (t) => {
  const { onA, onB, id, row, audits } = await twoInstances(t);

  const onOther = await onB('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Changed on B' }));
  t.equal(onOther.statusCode, 200);
  t.equal(onOther.json().meta.version, 'W/"2"');

  const res = await onA('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'name.givenName', value: 'Changed on A' }));
  t.equal(res.statusCode, 200);
  t.match(res.json(), { displayName: 'Changed on B', name: { givenName: 'Changed on A', familyName: 'Number 1' }, meta: { version: 'W/"3"' } });
  t.equal(res.headers.etag, 'W/"3"');
  t.match(await row(), { display_name: 'Changed on B', given_name: 'Changed on A', family_name: 'Number 1', version: 3 });
  t.match(
    (await audits()).map((a) => [a.action, a.details]),
    [
      ['create', {}],
      ['update', { changed: ['displayName'] }],
      ['update', { changed: ['name'] }],
    ],
    'each change is audited once, with what it changed',
  );

  // A remembers its own write: the next change on A starts from it.
  const next = await onA('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Again on A' }));
  t.match(next.json(), { displayName: 'Again on A', name: { givenName: 'Changed on A' }, meta: { version: 'W/"4"' } });
  t.match(await row(), { display_name: 'Again on A', given_name: 'Changed on A', version: 4 });
});

t.test('a PATCH that changes nothing of what A saw is still applied to what another instance wrote', async (t) => {
  const { onA, onB, id, row, audits } = await twoInstances(t);
  t.equal((await onB('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Changed on B' }))).statusCode, 200);

  // "Pupil 1" is what A saw: no change there, but a change of the current user.
  const back = await onA('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Pupil 1' }));
  t.equal(back.statusCode, 200);
  t.match(back.json(), { displayName: 'Pupil 1', meta: { version: 'W/"3"' } });
  t.match(await row(), { display_name: 'Pupil 1', version: 3 });

  // The reverse: a change of what A saw that is already true of the current user answers it unchanged.
  t.equal((await onB('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Set on B' }))).statusCode, 200);
  const same = await onA('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Set on B' }));
  t.equal(same.statusCode, 200);
  t.match(same.json(), { displayName: 'Set on B', meta: { version: 'W/"4"' } });
  t.match(await row(), { display_name: 'Set on B', version: 4 });
  t.equal((await audits()).length, 4, 'create and three changes; the no-op wrote nothing');
});

t.test('If-Match is compared with the stored version, never with a remembered one', async (t) => {
  const { onA, onB, id, row } = await twoInstances(t);
  t.equal((await onB('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Changed on B' }))).statusCode, 200);

  const current = await onA('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'title', value: 'Pupil' }), { 'if-match': 'W/"2"' });
  t.equal(current.statusCode, 200, 'the version B wrote matches');
  t.match(current.json(), { displayName: 'Changed on B', title: 'Pupil', meta: { version: 'W/"3"' } });

  const stale = await onA('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'title', value: 'Teacher' }), { 'if-match': 'W/"1"' });
  t.equal(stale.statusCode, 412);
  t.match(stale.json(), { status: '412', detail: /W\/"3"/ });
  t.match(await row(), { version: 3 });
});

t.test('a user deleted or handed to the portal since an instance saw it is not found by its PATCH', async (t) => {
  const { onA, onB, id, row, db, audits } = await twoInstances(t);
  t.equal((await onB('DELETE', `/Users/${id}`)).statusCode, 204);
  const afterDelete = await onA('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'displayName', value: 'Too late' }));
  t.equal(afterDelete.statusCode, 404);
  t.match(afterDelete.json(), { status: '404' });
  t.match(await row(), { display_name: 'Pupil 1', version: 2 });
  t.type((await row()).deleted_at, Date);
  t.same(
    (await audits()).map((a) => a.action),
    ['create', 'delete', 'update'],
    'the refused change is audited as a failure, nothing else',
  );

  // Disconnecting a tenant turns its synced accounts manual (and moves their version).
  const other = await onA('POST', '/Users', entraUser(2));
  const otherId = other.json<{ id: string }>().id;
  await db
    .updateTable('accounts')
    .set((eb) => ({ managed_by: 'manual', version: eb('version', '+', 1) }))
    .where('id', '=', otherId)
    .execute();
  const manual = await onA('PATCH', `/Users/${otherId}`, patch({ op: 'Replace', path: 'displayName', value: 'Not ours' }));
  t.equal(manual.statusCode, 404);
  t.match(await db.selectFrom('accounts').selectAll().where('id', '=', otherId).executeTakeFirstOrThrow(), {
    managed_by: 'manual',
    display_name: 'Pupil 2',
    version: 2,
  });
});

t.test('a PATCH the remembered user cannot take is applied to the current one', async (t) => {
  const { onA, onB, id, row } = await twoInstances(t);
  // B gives the user a home address; A still has the user without one.
  const added = await onB('PATCH', `/Users/${id}`, patch({ op: 'Add', path: 'emails', value: [{ type: 'home', value: 'home1@example.net' }] }));
  t.equal(added.statusCode, 200);
  // On A's user this filter matches nothing (400 noTarget); on the current one it does.
  const res = await onA('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'emails[value co "home1@"].type', value: 'other' }));
  t.equal(res.statusCode, 200);
  t.match(res.json().emails, [
    { type: 'work', value: 'pupil1@school.example' },
    { type: 'other', value: 'home1@example.net' },
  ]);
  const stored = await row();
  t.equal(stored.version, 3);
  t.match(stored.scim, { emails: [{ type: 'work' }, { type: 'other', value: 'home1@example.net' }] });
});

t.test('the remembered accounts: frozen, per tenant, bounded', async (t) => {
  const seen = new SeenAccounts();
  const row = (id: string, version = 1): AccountResource => ({
    id,
    external_id: null,
    user_name: `${id}@school.example`,
    active: true,
    scim: { name: { givenName: 'Ann' } },
    version,
    created_at: new Date(0),
    updated_at: new Date(0),
    role: 'student',
  });
  seen.remember('tenant-a', row('one'));
  const got = seen.get('tenant-a', 'one');
  t.match(got, { id: 'one', version: 1, scim: { name: { givenName: 'Ann' } } });
  t.throws(() => {
    (got?.scim.name as { givenName: string }).givenName = 'Changed in place';
  }, TypeError, 'a remembered row is frozen to its depth');
  t.match(seen.get('tenant-a', 'one'), { scim: { name: { givenName: 'Ann' } } }, 'what a caller does to a row is not remembered');
  t.equal(seen.get('tenant-b', 'one'), undefined, 'another tenant does not see it');

  seen.forget('tenant-a', 'one');
  t.equal(seen.get('tenant-a', 'one'), undefined);

  for (let i = 0; i <= SEEN_ACCOUNTS_MAX; i++) seen.remember('tenant-a', row(`u${i}`));
  t.equal(seen.size, SEEN_ACCOUNTS_MAX);
  t.equal(seen.get('tenant-a', 'u0'), undefined, 'the least recently used is dropped first');
  t.ok(seen.get('tenant-a', `u${SEEN_ACCOUNTS_MAX}`));
});
