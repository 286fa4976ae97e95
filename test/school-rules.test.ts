// The school rules the SCIM layer already enforces: manual classes and
// accounts are invisible to SCIM, and members added by hand survive Entra's
// changes of a synced class.
import t from 'tap';
import { testApp } from './helpers/app.js';
import { GROUP, client, entraUser, patch } from './helpers/scim.js';

t.test('manual classes and accounts are invisible to SCIM and never changed', async (t) => {
  const { app, headers, db, tenant } = await testApp(t);
  const scim = client(app, headers);
  const manualClass = await db
    .insertInto('classes')
    .values({ tenant_id: tenant.id, managed_by: 'manual', display_name: 'Chess club', scim: '{}' })
    .returningAll()
    .executeTakeFirstOrThrow();
  const manualAccount = await db
    .insertInto('accounts')
    .values({ tenant_id: tenant.id, managed_by: 'manual', user_name: 'hand@school.example', scim: '{}' })
    .returningAll()
    .executeTakeFirstOrThrow();

  t.equal((await scim('GET', `/Groups/${manualClass.id}`)).statusCode, 404);
  t.equal((await scim('GET', `/Groups?filter=${encodeURIComponent('displayName eq "Chess club"')}`)).json().totalResults, 0);
  t.equal((await scim('GET', '/Groups')).json().totalResults, 0);
  t.equal((await scim('PATCH', `/Groups/${manualClass.id}`, patch({ op: 'replace', path: 'displayName', value: 'x' }))).statusCode, 404);
  t.equal((await scim('DELETE', `/Groups/${manualClass.id}`)).statusCode, 404);
  t.equal((await scim('GET', `/Users/${manualAccount.id}`)).statusCode, 404);
  t.equal((await scim('DELETE', `/Users/${manualAccount.id}`)).statusCode, 404);
  const after = await db.selectFrom('classes').selectAll().where('id', '=', manualClass.id).executeTakeFirstOrThrow();
  t.match(after, { display_name: 'Chess club', version: 1 }, 'the manual class is unchanged');
  const account = await db.selectFrom('accounts').selectAll().where('id', '=', manualAccount.id).executeTakeFirstOrThrow();
  t.match(account, { deleted_at: null, version: 1 }, 'the manual account is unchanged');

  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 2B' })).json().id as string;
  const res = await scim('PATCH', `/Groups/${group}`, patch({ op: 'add', path: 'members', value: [{ value: manualAccount.id }] }));
  t.equal(res.statusCode, 400, 'a manual account cannot be made a member by SCIM');
});

t.test('members added by hand survive every SCIM change of the class', async (t) => {
  const { app, headers, db, tenant } = await testApp(t);
  const scim = client(app, headers);
  const synced = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  const teacher = (await scim('POST', '/Users', entraUser(2))).json().id as string;
  const handAdded = await db
    .insertInto('accounts')
    .values({ tenant_id: tenant.id, managed_by: 'manual', user_name: 'helper@school.example', scim: '{}' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const group = (await scim('POST', '/Groups', { schemas: [GROUP], displayName: 'Class 3A', members: [{ value: synced }] })).json().id as string;
  await db.insertInto('class_memberships').values({ tenant_id: tenant.id, class_id: group, account_id: handAdded.id, manual: true }).execute();
  await db.insertInto('class_memberships').values({ tenant_id: tenant.id, class_id: group, account_id: teacher, manual: true }).execute();

  const rows = () =>
    db.selectFrom('class_memberships').select(['account_id', 'synced', 'manual']).where('class_id', '=', group).orderBy('account_id').execute();
  const shown = async () => ((await scim('GET', `/Groups/${group}`)).json().members as { value: string }[]).map((m) => m.value);
  t.same(await shown(), [synced], 'SCIM shows the synced members only');

  // Entra adds a member the portal had added by hand: both sources hold it.
  await scim('PATCH', `/Groups/${group}`, patch({ op: 'Add', path: 'members', value: [{ value: teacher }] }));
  t.match(await rows(), [...[{ account_id: handAdded.id, synced: false, manual: true }, { account_id: synced, synced: true, manual: false }, { account_id: teacher, synced: true, manual: true }].sort((a, b) => a.account_id.localeCompare(b.account_id))]);

  await scim('PATCH', `/Groups/${group}`, patch({ op: 'Remove', path: 'members', value: [{ value: teacher }] }));
  t.ok((await rows()).some((r) => r.account_id === teacher && r.manual && !r.synced), 'an Entra remove keeps the hand-added membership');

  await scim('PUT', `/Groups/${group}`, { schemas: [GROUP], displayName: 'Class 3A', members: [] });
  t.same(
    (await rows()).map((r) => r.account_id).sort(),
    [handAdded.id, teacher].sort(),
    'PUT with a full member list removes synced members and keeps the hand-added ones',
  );
  await scim('PATCH', `/Groups/${group}`, patch({ op: 'remove', path: 'members' }));
  t.equal((await rows()).length, 2, 'removing all members keeps the hand-added ones');

  await scim('DELETE', `/Users/${synced}`);
  t.equal((await db.selectFrom('class_memberships').select('account_id').where('account_id', '=', synced).execute()).length, 0, 'a deleted user leaves every class');
});

t.test('a PUT that leaves active out keeps a deactivated leaver deactivated (rule 6); one that sends it decides', async (t) => {
  const { app, headers, db } = await testApp(t);
  const scim = client(app, headers);
  const id = (await scim('POST', '/Users', entraUser(1))).json().id as string;
  t.equal((await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'False' }))).statusCode, 200);
  const state = async () => (await db.selectFrom('accounts').select(['active', 'version']).where('id', '=', id).executeTakeFirstOrThrow());
  const reactivations = async () => (await db.selectFrom('audit_events').select('id').where('object_id', '=', id).where('action', '=', 'reactivate').execute()).length;

  const { active: _omitted, ...withoutActive } = entraUser(1, { displayName: 'Pupil One' });
  const kept = await scim('PUT', `/Users/${id}`, withoutActive);
  t.equal(kept.statusCode, 200);
  t.equal(kept.json().active, false, 'answered inactive');
  t.match(await state(), { active: false }, 'stored inactive');
  t.equal(kept.json().displayName, 'Pupil One', 'the rest of the PUT is written');
  t.equal(await reactivations(), 0, 'no reactivation');
  const unchanged = await scim('PUT', `/Users/${id}`, withoutActive);
  t.equal(unchanged.json().meta.version, kept.json().meta.version, 'the same PUT again changes nothing');

  const back = await scim('PUT', `/Users/${id}`, { ...withoutActive, active: true });
  t.equal(back.json().active, true, 'a PUT that sends active: true reactivates');
  t.match(await state(), { active: true });
  t.equal(await reactivations(), 1);
  const stillActive = await scim('PUT', `/Users/${id}`, withoutActive);
  t.equal(stillActive.json().active, true, 'and leaving it out then keeps the account active');
});
