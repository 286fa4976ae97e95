// A municipality's switch-over: the portal links the accounts and classes its
// old sync made to their Entra objects (the contract's statements, read from
// docs/database-contract.md), and Entra's first cycle then takes each over by
// its object id, whatever order Entra sends them in and whatever addresses
// changed meanwhile.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import type { PreviewReport } from '../src/services/preview.js';
import { testApp, type TestApp } from './helpers/app.js';
import { cli } from './helpers/cli.js';
import { handMembershipSql, linkSql, manualAccountSql } from './helpers/contract-sql.js';
import { entraExport, type ExportUser } from './helpers/entra-export.js';
import { connection } from './helpers/locks.js';
import { GROUP, USER, client } from './helpers/scim.js';

const objectId = (n: number) => `0c0c0c0c-0000-4000-8000-${String(n).padStart(12, '0')}`;

// Hanna Hansson's account from the old sync still has the alias hanna@ as its
// e-mail, which Entra has since given Hanna Holm.
const hansson: ExportUser = { userPrincipalName: 'hanna.hansson@school.example', mail: 'hanna.hansson@school.example', displayName: 'Hanna Hansson', givenName: 'Hanna', surname: 'Hansson', objectId: objectId(1) };
const holm: ExportUser = { userPrincipalName: 'hanna@school.example', mail: 'hanna@school.example', displayName: 'Hanna Holm', givenName: 'Hanna', surname: 'Holm', objectId: objectId(2) };
// Omar was renamed in Entra: no address of his old account matches any more.
const omar: ExportUser = { userPrincipalName: 'omar.said@school.example', mail: 'omar.said@school.example', displayName: 'Omar Said', givenName: 'Omar', surname: 'Said', objectId: objectId(3) };

const asScim = (u: ExportUser) => ({
  schemas: [USER],
  externalId: u.objectId,
  userName: u.userPrincipalName,
  active: true,
  displayName: u.displayName,
  name: { givenName: u.givenName, familyName: u.surname },
  emails: [{ type: 'work', value: u.mail, primary: true }],
});

/** The school as the old sync left it, linked by the contract's statements. */
async function oldSync(t: Test, env: TestApp) {
  const portal = await connection(t, env);
  const link = linkSql();
  const account = async (userName: string, email: string) =>
    (await portal.query<{ id: string }>(manualAccountSql(), [env.tenant.id, 'student', userName, email])).rows[0]?.id as string;
  const accounts = { hansson: await account('hanna.h@school.example', 'hanna@school.example'), omar: await account('omar.a@school.example', 'omar.a@school.example') };
  const klass = (await portal.query<{ id: string }>("INSERT INTO classes (tenant_id, managed_by, display_name) VALUES ($1, 'manual', '7A') RETURNING id", [env.tenant.id])).rows[0]?.id as string;
  for (const id of Object.values(accounts)) await portal.query(handMembershipSql().add, [env.tenant.id, klass, id]);
  // A teacher's own member, added by hand, stays the portal's.
  const guest = await account('guest@school.example', 'guest@school.example');
  await portal.query(handMembershipSql().add, [env.tenant.id, klass, guest]);

  t.equal((await portal.query(link.account, [env.tenant.id, accounts.hansson, hansson.objectId])).rowCount, 1);
  t.equal((await portal.query(link.account, [env.tenant.id, accounts.omar, omar.objectId])).rowCount, 1);
  t.equal((await portal.query(link.klass, [env.tenant.id, klass, 'group-7a'])).rowCount, 1);
  for (const id of Object.values(accounts)) t.equal((await portal.query(link.member, [env.tenant.id, klass, id])).rowCount, 1);
  t.equal((await portal.query(link.account, [env.tenant.id, accounts.omar, omar.objectId])).rowCount, 0, 'a link already made writes nothing');
  t.equal((await portal.query(link.member, [env.tenant.id, klass, accounts.omar])).rowCount, 0, 'nor does a member already Entra’s');
  return { portal, accounts, klass, guest };
}

for (const order of [
  ['Holm', 'Hansson'],
  ['Hansson', 'Holm'],
] as const) {
  t.test(`linked accounts are taken over by object id, ${order.join(' before ')}`, async (t) => {
    const env = await testApp(t);
    const { accounts } = await oldSync(t, env);
    const scim = client(env.app, env.headers);
    const sent: Record<string, { status: number; id: string }> = {};
    for (const name of order) {
      const res = await scim('POST', '/Users', asScim(name === 'Holm' ? holm : hansson));
      sent[name] = { status: res.statusCode, id: res.json<{ id: string }>().id };
    }
    t.same(sent.Hansson, { status: 201, id: accounts.hansson }, 'Hansson keeps her account, though her userName changed');
    t.equal(sent.Holm?.status, 201);
    t.not(sent.Holm?.id, accounts.hansson, 'Holm gets an account of her own, though her address is the old account’s e-mail');
    const adopted = await env.db
      .selectFrom('audit_events')
      .select(['object_id', 'details'])
      .where('tenant_id', '=', env.tenant.id)
      .where('action', '=', 'adopt')
      .execute();
    t.match(adopted, [{ object_id: accounts.hansson, details: { matchedBy: 'externalId', portalAccount: { userName: 'hanna.h@school.example' } } }]);
    const row = await env.db.selectFrom('accounts').select(['user_name', 'email', 'managed_by', 'external_id']).where('id', '=', accounts.hansson).executeTakeFirstOrThrow();
    t.same(row, { user_name: hansson.userPrincipalName, email: hansson.mail, managed_by: 'sync', external_id: hansson.objectId });
  });
}

t.test('a linked class is taken over with its members; Entra removes the old sync’s members, never a hand-added one', async (t) => {
  const env = await testApp(t);
  const { accounts, klass, guest } = await oldSync(t, env);
  const scim = client(env.app, env.headers);
  const renamed = await scim('POST', '/Users', asScim(omar));
  t.equal(renamed.json<{ id: string }>().id, accounts.omar, 'a renamed pupil keeps his account');

  // Entra looks the class up by name, finds none (it is not synced yet), and creates it.
  const lookup = await scim('GET', `/Groups?excludedAttributes=members&filter=${encodeURIComponent('displayName eq "7A"')}`);
  t.equal(lookup.json<{ totalResults: number }>().totalResults, 0);
  const created = await scim('POST', '/Groups', { schemas: [GROUP], displayName: '7A', externalId: 'group-7a' });
  t.equal(created.statusCode, 201);
  t.equal(created.json<{ id: string }>().id, klass, 'the class keeps its id, so its licences stay');
  const classes = await env.db.selectFrom('classes').select(['id', 'managed_by']).where('tenant_id', '=', env.tenant.id).execute();
  t.same(classes, [{ id: klass, managed_by: 'sync' }], 'no second class of the same name');
  const members = async () =>
    (
      await env.db
        .selectFrom('class_memberships')
        .select(['account_id', 'synced', 'manual'])
        .where('tenant_id', '=', env.tenant.id)
        .where('class_id', '=', klass)
        .execute()
    ).sort((a, b) => a.account_id.localeCompare(b.account_id));
  const expected = (rows: { account_id: string; synced: boolean; manual: boolean }[]) => rows.sort((a, b) => a.account_id.localeCompare(b.account_id));
  t.same(
    await members(),
    expected([
      { account_id: accounts.hansson, synced: true, manual: false },
      { account_id: accounts.omar, synced: true, manual: false },
      { account_id: guest, synced: false, manual: true },
    ]),
    'the old sync’s members are there from the start, as Entra’s',
  );

  // Omar moves to another class in Entra; then the class is removed for a moment of reorganisation.
  const removed = await scim('PATCH', `/Groups/${klass}`, {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
    Operations: [{ op: 'Remove', path: `members[value eq "${accounts.omar}"]` }],
  });
  t.equal(removed.statusCode, 204);
  t.same(
    await members(),
    expected([
      { account_id: accounts.hansson, synced: true, manual: false },
      { account_id: guest, synced: false, manual: true },
    ]),
    'Entra removes a member the old sync made',
  );
  const replaced = await scim('PATCH', `/Groups/${klass}`, {
    schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
    Operations: [{ op: 'Replace', path: 'members', value: [] }],
  });
  t.equal(replaced.statusCode, 204);
  t.same(await members(), [{ account_id: guest, synced: false, manual: true }], 'and never the teacher’s own');
});

t.test('the link statements leave admins, synced and deleted rows, and object ids already taken alone', async (t) => {
  const env = await testApp(t);
  const portal = await connection(t, env);
  const link = linkSql();
  const account = async (role: string, userName: string) => (await portal.query<{ id: string }>(manualAccountSql(), [env.tenant.id, role, userName, userName])).rows[0]?.id as string;
  const admin = await account('admin', 'rektor@school.example');
  t.equal((await portal.query(link.account, [env.tenant.id, admin, objectId(10)])).rowCount, 0, 'an admin (rule 3)');

  const synced = (await client(env.app, env.headers)('POST', '/Users', asScim(holm))).json<{ id: string }>().id;
  t.equal((await portal.query(link.account, [env.tenant.id, synced, objectId(11)])).rowCount, 0, 'a synced account');

  const first = await account('student', 'a@school.example');
  const second = await account('student', 'b@school.example');
  t.equal((await portal.query(link.account, [env.tenant.id, first, objectId(12)])).rowCount, 1);
  t.equal((await portal.query(link.account, [env.tenant.id, second, objectId(12)])).rowCount, 0, 'an object id another account has');
  t.equal((await portal.query(link.account, [env.tenant.id, second, holm.objectId])).rowCount, 0, 'an object id a synced account has');

  const gone = await account('student', 'gone@school.example');
  await portal.query('UPDATE accounts SET deleted_at = now() WHERE tenant_id = $1 AND id = $2', [env.tenant.id, gone]);
  t.equal((await portal.query(link.account, [env.tenant.id, gone, objectId(13)])).rowCount, 0, 'a deleted account');

  const synced7a = (await client(env.app, env.headers)('POST', '/Groups', { schemas: [GROUP], displayName: '8B', externalId: 'group-8b' })).json<{ id: string }>().id;
  t.equal((await portal.query(link.klass, [env.tenant.id, synced7a, 'group-other'])).rowCount, 0, 'a synced class');
  const manual = (await portal.query<{ id: string }>("INSERT INTO classes (tenant_id, managed_by, display_name) VALUES ($1, 'manual', '9C') RETURNING id", [env.tenant.id])).rows[0]?.id;
  t.equal((await portal.query(link.klass, [env.tenant.id, manual, 'group-8b'])).rowCount, 0, 'an object id another class has');
  t.equal((await portal.query(link.account, [env.tenant.id, first, objectId(14)])).rowCount, 0, 'an account linked already keeps its link');
  const rows = await env.db.selectFrom('accounts').select(['id', 'external_id']).where('tenant_id', '=', env.tenant.id).where('id', 'in', [admin, second, gone, first]).execute();
  t.same(
    rows.map((r) => r.external_id).sort(),
    [objectId(12), null, null, null],
    'none of them changed',
  );

  // A member becomes Entra's only in a linked class, and only an account that is linked and no admin.
  const linkedClass = (await portal.query<{ id: string }>("INSERT INTO classes (tenant_id, managed_by, display_name) VALUES ($1, 'manual', '9D') RETURNING id", [env.tenant.id])).rows[0]?.id;
  t.equal((await portal.query(link.klass, [env.tenant.id, linkedClass, 'group-9d'])).rowCount, 1);
  for (const member of [admin, first, second]) await portal.query(handMembershipSql().add, [env.tenant.id, linkedClass, member]);
  await portal.query(handMembershipSql().add, [env.tenant.id, manual, first]);
  t.equal((await portal.query(link.member, [env.tenant.id, linkedClass, admin])).rowCount, 0, 'not an admin’s');
  t.equal((await portal.query(link.member, [env.tenant.id, linkedClass, second])).rowCount, 0, 'not an account Entra cannot name');
  t.equal((await portal.query(link.member, [env.tenant.id, manual, first])).rowCount, 0, 'not in a class Entra does not have');
  t.equal((await portal.query(link.member, [env.tenant.id, linkedClass, first])).rowCount, 1, 'a linked account in a linked class');
});

t.test('the preview shows each linked user taken over by its object id', async (t) => {
  const env = await testApp(t);
  const { accounts } = await oldSync(t, env);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'switch-over-'));
  const file = path.join(dir, 'users.csv');
  await writeFile(file, entraExport([holm, hansson, omar]));
  const run = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', file, '--json');
  t.equal(run.code, 0, run.out);
  const report = JSON.parse(run.out) as PreviewReport;
  const byName = Object.fromEntries(report.users.map((u) => [u.userPrincipalName, u]));
  t.match(byName[hansson.userPrincipalName], { outcome: 'adopt', rule: 8, matchedBy: 'externalId', account: { id: accounts.hansson } });
  t.match(byName[omar.userPrincipalName], { outcome: 'adopt', rule: 8, matchedBy: 'externalId', account: { id: accounts.omar } });
  t.equal(byName[holm.userPrincipalName]?.outcome, 'create', 'Holm, whose address the linked account has, gets an account of her own');
});

t.test('the preview tells where the first sync depends on Entra’s order, takes over a deactivated account, or leaves a second account of one address', async (t) => {
  const env = await testApp(t);
  const portal = await connection(t, env);
  const account = async (userName: string, email: string) =>
    (await portal.query<{ id: string }>(manualAccountSql(), [env.tenant.id, 'student', userName, email])).rows[0]?.id as string;
  const hanssonOld = await account('hanna.h@school.example', 'hanna@school.example');
  const alexOld = await account('alex@school.example', 'alex@school.example');
  await portal.query('UPDATE accounts SET active = false WHERE tenant_id = $1 AND id = $2', [env.tenant.id, alexOld]);
  const sara = await account('sara@school.example', 'sara@school.example');
  const saraAgain = await account('sara.old@school.example', 'sara@school.example');
  // Rita's account, and one whose e-mail is an address Rita shares with Anna: Rita first would still take her own.
  const shared = await account('x.old@school.example', 'shared@school.example');
  const rita = await account('rita@school.example', 'rita@school.example');

  const hanssonUpn: ExportUser = { ...hansson, userPrincipalName: 'hanna.h@school.example', mail: 'hanna.h@school.example' };
  const alex: ExportUser = { userPrincipalName: 'alex@school.example', mail: 'alex@school.example', displayName: 'Alex Ny', givenName: 'Alex', surname: 'Ny', objectId: objectId(20) };
  const saraUser: ExportUser = { userPrincipalName: 'sara@school.example', mail: 'sara@school.example', displayName: 'Sara S', givenName: 'Sara', surname: 'S', objectId: objectId(21) };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'switch-over-'));
  const file = path.join(dir, 'users.csv');
  const annaN: ExportUser = { userPrincipalName: 'anna.n@school.example', mail: 'shared@school.example', displayName: 'Anna N', givenName: 'Anna', surname: 'N', objectId: objectId(22) };
  const ritaUser: ExportUser = { userPrincipalName: 'rita@school.example', mail: 'shared@school.example', displayName: 'Rita R', givenName: 'Rita', surname: 'R', objectId: objectId(23) };
  await writeFile(file, entraExport([holm, hanssonUpn, alex, saraUser, annaN, ritaUser]));
  const run = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', file, '--json');
  t.equal(run.code, 0, run.out);
  const [holmRow, hanssonRow, alexRow, saraRow, annaRow, ritaRow] = (JSON.parse(run.out) as PreviewReport).users;
  t.match(annaRow, { outcome: 'adopt', account: { id: shared } });
  t.notOk('contestedBy' in (annaRow ?? {}), 'a later row that shares an address but would take another account first contests nothing');
  t.match(ritaRow, { outcome: 'adopt', matchedBy: 'userName', account: { id: rita } });

  t.match(holmRow, { row: 2, outcome: 'adopt', rule: 2, matchedBy: 'email', account: { id: hanssonOld }, contestedBy: [3] }, 'Holm takes the account in file order, and is told row 3 would if Entra sent it first');
  t.match(hanssonRow, { row: 3, outcome: 'create', probableMatches: [{ id: hanssonOld, adoptedByRow: 2 }] }, 'and row 3 is told the same from its side');
  t.match(alexRow, { outcome: 'adopt', rule: 2, account: { id: alexOld }, deactivated: true });
  t.notOk('contestedBy' in (alexRow ?? {}), 'nobody else matches it');
  t.match(saraRow, { outcome: 'adopt', account: { id: sara }, alsoMatching: [{ id: saraAgain }] });

  const table = await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', file);
  t.match(table.out, /hanna@school\.example .* by e-mail; row 3 would take it if sent first/, 'the table says so in a few words');
  t.match(table.out, /alex@school\.example .* by userName; a deactivated account: a reused address\?/);
  t.match(table.out, /sara@school\.example .* by userName; 1 more account with this address stays/);
  const csvFile = path.join(dir, 'preview.csv');
  t.equal((await cli(env, 'preview', '--tenant', env.tenant.id, '--entra-users', file, '--csv', csvFile)).code, 0);
  const csv = await readFile(csvFile, 'utf8');
  t.match(csv, /Row 3 matches that account too and takes it if Entra sends it first/, 'the CSV says it in a sentence');
  t.match(csv, /The account is deactivated in the portal: if its address was given to someone new/);
  t.match(csv, new RegExp(`1 other portal account has this address too and stays as it is: sara\\.old@school\\.example <sara@school\\.example> \\(${saraAgain}\\)`));
});
