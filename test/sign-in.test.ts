// Rule 13: portal_sign_in_account links a Microsoft login (the ID token's tid
// and oid) to the one active account it stands for: in the connected tenant
// bound to that Entra tenant, with that external id. Never by e-mail or
// userName, never across tenants, never a guess between two accounts.
import { sql } from 'kysely';
import t from 'tap';
import type { Db } from '../src/db/database.js';
import { createTenant } from '../src/db/tenants.js';
import { changeOverrides } from '../src/services/accounts.js';
import { changeTenantSettings, connectTenant, disconnectTenant } from '../src/services/tenants.js';
import { testApp } from './helpers/app.js';
import { client, entraUser, patch } from './helpers/scim.js';

const CLI = { via: 'cli' } as const;
const SCHOOL_TID = '6a3c1f2e-0b7d-4c55-9e21-3f4d5a6b7c8d';
const OTHER_TID = 'b1f0e2d3-4c5b-4a69-8877-665544332211';

interface Row {
  tenant_id: string;
  id: string;
  role: string;
}

async function signIn(db: Db, tid: string, oid: string): Promise<Row[]> {
  return (await sql<Row>`SELECT * FROM portal_sign_in_account(${tid}::uuid, ${oid})`.execute(db)).rows;
}

t.test('a login is linked by tid and oid to the active account of the bound tenant, and nothing else', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: SCHOOL_TID }, CLI);
  const pupil = entraUser(1);
  const oid = pupil.externalId as string;
  const created = await scim('POST', '/Users', pupil);
  t.equal(created.statusCode, 201);
  const id = created.json().id as string;

  t.same(await signIn(env.db, SCHOOL_TID, oid), [{ tenant_id: env.tenant.id, id, role: 'student' }], 'the happy path: one row, the account');

  t.same(await signIn(env.db, OTHER_TID, oid), [], 'a foreign tid (bound to no tenant) finds nothing, even with the right oid');
  const other = await createTenant(env.db, { name: 'Other School' });
  await changeTenantSettings(env.db, other.id, { entraTenantId: OTHER_TID }, CLI);
  t.same(await signIn(env.db, OTHER_TID, oid), [], "a tid bound to another tenant never reaches this tenant's accounts");

  t.same(await signIn(env.db, SCHOOL_TID, 'pupil1@school.example'), [], 'the e-mail is no oid');
  t.same(await signIn(env.db, SCHOOL_TID, 'Pupil1@School.example'), [], 'nor is the userName');
  t.same(await signIn(env.db, SCHOOL_TID, '00000000-0000-4000-8000-000000000999'), [], 'an oid no account has finds nothing');

  t.equal((await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'False' }))).statusCode, 200);
  t.same(await signIn(env.db, SCHOOL_TID, oid), [], 'a deactivated account cannot sign in (rule 6)');
  t.equal((await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'True' }))).statusCode, 200);
  t.same(await signIn(env.db, SCHOOL_TID, oid), [{ tenant_id: env.tenant.id, id, role: 'student' }], 'reactivated, it signs in again');

  const teacher = await scim('POST', '/Users', entraUser(2, { userType: 'Teacher' }));
  const teacherOid = entraUser(2).externalId as string;
  t.same(await signIn(env.db, SCHOOL_TID, teacherOid), [{ tenant_id: env.tenant.id, id: teacher.json().id as string, role: 'teacher' }], 'the role comes along');
  // Rule 11: the portal's override is the role the account has, at sign-in too.
  await changeOverrides(env.db, teacher.json().id as string, { role: 'student' }, CLI);
  t.same((await signIn(env.db, SCHOOL_TID, teacherOid)).map((r) => r.role), ['student'], 'an account overridden to student signs in as a student');
  t.equal((await scim('PATCH', `/Users/${teacher.json().id as string}`, patch({ op: 'Replace', path: 'displayName', value: 'Teacher Two' }))).statusCode, 200);
  t.same((await signIn(env.db, SCHOOL_TID, teacherOid)).map((r) => r.role), ['student'], "and stays one while Entra's writes go on");
  await changeOverrides(env.db, teacher.json().id as string, { clear: true }, CLI);
  t.same((await signIn(env.db, SCHOOL_TID, teacherOid)).map((r) => r.role), ['teacher'], 'cleared, the synced role again');
  t.equal((await scim('DELETE', `/Users/${teacher.json().id as string}`)).statusCode, 204);
  t.same(await signIn(env.db, SCHOOL_TID, teacherOid), [], 'a deleted account cannot sign in (rule 7)');

  // Last: a disconnect revokes the tenant's credentials.
  await disconnectTenant(env.db, env.tenant.id, CLI);
  t.same(await signIn(env.db, SCHOOL_TID, oid), [], 'a disconnected tenant links no login (rule 8)');
  await connectTenant(env.db, env.tenant.id, CLI);
  t.same((await signIn(env.db, SCHOOL_TID, oid)).map((r) => r.id), [id], 'connected again, the account is found by its external id');

  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: null }, CLI);
  t.same(await signIn(env.db, SCHOOL_TID, oid), [], 'an unbound tenant links no login');
  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: SCHOOL_TID }, CLI);
  t.same((await signIn(env.db, SCHOOL_TID, oid)).map((r) => r.id), [id], 'bound again, found again');
});

t.test('two live accounts with one external id are no answer: the function never guesses', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: SCHOOL_TID }, CLI);
  const pupil = entraUser(3);
  const oid = pupil.externalId as string;
  t.equal((await scim('POST', '/Users', pupil)).statusCode, 201);
  t.equal((await signIn(env.db, SCHOOL_TID, oid)).length, 1);
  // The portal's own manual account, written with the same external id.
  await env.db.insertInto('accounts').values({ tenant_id: env.tenant.id, managed_by: 'manual', user_name: 'copy@school.example', external_id: oid, scim: '{}' }).execute();
  t.same(await signIn(env.db, SCHOOL_TID, oid), [], 'no row rather than one of the two');
});
