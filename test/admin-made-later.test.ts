// Rule 3 keeps sync off admin accounts; rule 6 says active=false blocks
// sign-in. When the portal makes an admin with the address of a pupil Entra
// synced before, the pupil's own changes that keep the pupil's addresses
// touch no admin and are written: a leaver's deactivation must land. A change
// that takes an admin's address is refused as before.
import t, { type Test } from 'tap';
import { sql } from 'kysely';
import { manualAccountSql } from './helpers/contract-sql.js';
import { connection } from './helpers/locks.js';
import { testApp, type TestApp } from './helpers/app.js';
import { client, entraUser, patch } from './helpers/scim.js';

const ENTRA_TENANT = '11111111-2222-4333-8444-555555555555';

/** A synced pupil, then an admin the portal makes with `userName` and `email` (the contract's statement for a manual account). */
async function pupilThenAdmin(t: Test, env: TestApp, admin: { userName: string; email: string }) {
  const scim = client(env.app, env.headers);
  const created = await scim('POST', '/Users', entraUser(1));
  t.equal(created.statusCode, 201);
  const portal = await connection(t, env);
  const adminId = (await portal.query<{ id: string }>(manualAccountSql(), [env.tenant.id, 'admin', admin.userName, admin.email])).rows[0]!.id;
  const adminRow = await env.db.selectFrom('accounts').selectAll().where('id', '=', adminId).executeTakeFirstOrThrow();
  return { scim, id: created.json().id as string, adminId, adminRow };
}

for (const writeStrategy of ['quick', 'locked'] as const) {
  t.test(`a pupil's deactivation is written although an admin made later holds the pupil's e-mail (${writeStrategy} path)`, async (t) => {
    const env = await testApp(t, {}, { writeStrategy });
    await env.db.updateTable('tenants').set({ entra_tenant_id: ENTRA_TENANT }).where('id', '=', env.tenant.id).execute();
    const { scim, id, adminId, adminRow } = await pupilThenAdmin(t, env, { userName: 'it.boss', email: 'pupil1@school.example' });

    const off = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'False' }));
    t.equal(off.statusCode, 200, off.body);
    t.equal(off.json().active, false);
    const row = await env.db.selectFrom('accounts').select(['active', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
    t.same(row, { active: false, version: 2 });
    const signIn = await sql<{ id: string }>`SELECT id FROM portal_sign_in_account(${ENTRA_TENANT}::uuid, '00000000-0000-4000-8000-000000000001')`.execute(env.db);
    t.same(signIn.rows, [], 'the leaver can no longer sign in with Microsoft');
    t.same(await env.db.selectFrom('accounts').selectAll().where('id', '=', adminId).executeTakeFirstOrThrow(), adminRow, 'the admin is unchanged');
    t.same(await env.db.selectFrom('sync_conflicts').select('id').where('tenant_id', '=', env.tenant.id).execute(), [], 'and nothing was refused');
  });

  t.test(`a pupil's new name and PUT are written although an admin made later holds the pupil's userName (${writeStrategy} path)`, async (t) => {
    const env = await testApp(t, {}, { writeStrategy });
    const { scim, id, adminId, adminRow } = await pupilThenAdmin(t, env, { userName: 'PUPIL1@school.example', email: 'boss@school.example' });

    const renamed = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'name.familyName', value: 'Renamed' }));
    t.equal(renamed.statusCode, 200, renamed.body);
    const put = await scim('PUT', `/Users/${id}`, entraUser(1, { displayName: 'Pupil One' }));
    t.equal(put.statusCode, 200, put.body);
    const row = await env.db.selectFrom('accounts').select(['family_name', 'display_name', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
    t.same(row, { family_name: 'Number 1', display_name: 'Pupil One', version: 3 });
    t.same(await env.db.selectFrom('accounts').selectAll().where('id', '=', adminId).executeTakeFirstOrThrow(), adminRow, 'the admin is unchanged');
  });

  t.test(`a change that takes an admin's address is still refused (${writeStrategy} path)`, async (t) => {
    const env = await testApp(t, {}, { writeStrategy });
    const { scim, id, adminId, adminRow } = await pupilThenAdmin(t, env, { userName: 'it.boss', email: 'boss@school.example' });

    const moved = await scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'emails[type eq "work"].value', value: 'Boss@School.example' }));
    t.equal(moved.statusCode, 409, moved.body);
    t.equal(moved.json().scimType, 'uniqueness');
    t.match(moved.json().detail, /"Boss@School\.example" belongs to a portal admin account/);
    const row = await env.db.selectFrom('accounts').select(['email', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
    t.same(row, { email: 'pupil1@school.example', version: 1 }, 'the pupil is unchanged');
    const conflicts = await env.db.selectFrom('sync_conflicts').select(['kind', 'account_id', 'object_ref']).where('tenant_id', '=', env.tenant.id).execute();
    t.same(conflicts, [{ kind: 'admin-collision', account_id: adminId, object_ref: 'Pupil1@School.example' }]);
    t.same(await env.db.selectFrom('accounts').selectAll().where('id', '=', adminId).executeTakeFirstOrThrow(), adminRow, 'the admin is unchanged');
  });
}
