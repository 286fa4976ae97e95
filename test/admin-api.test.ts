// The admin API: its own credentials, tenants' sync health, conflicts right
// after they happen, audit events with paging.
import t from 'tap';
import { runCli } from '../src/cli.js';
import { revokeAdminCredential } from '../src/db/admin-credentials.js';
import { testApp, testEnv } from './helpers/app.js';
import { client, entraUser } from './helpers/scim.js';

t.test('admin API: credentials, status, conflicts, audit paging', async (t) => {
  const env = await testApp(t);
  const scim = client(env.app, env.headers);
  const out: string[] = [];
  const io = { out: (s: string) => out.push(s), err: (s: string) => out.push(s), env: testEnv({ DATABASE_URL: env.database.url }) };
  t.equal(await runCli(['admin-token', 'issue', '--json'], io), 0, out.join('\n'));
  const { token, id: adminId } = JSON.parse(out.pop() ?? '{}') as { token: string; id: string };
  const admin = (url: string, authorization = `Bearer ${token}`) => env.app.inject({ method: 'GET', url, headers: { authorization } });

  for (const [label, authorization] of [
    ['no token', ''],
    ["a tenant's SCIM token", `Bearer ${env.token}`],
    ['garbage', 'Bearer a.b.c'],
  ] as const) {
    const res = await admin('/admin/tenants', authorization);
    t.equal(res.statusCode, 401, label);
    t.match(res.headers['www-authenticate'], /portal-scim-admin/, label);
  }
  const scimWithAdmin = await env.app.inject({ method: 'GET', url: '/scim/v2/Users', headers: { authorization: `Bearer ${token}` } });
  t.equal(scimWithAdmin.statusCode, 401, 'an admin token does not open SCIM');

  await env.db
    .insertInto('accounts')
    .values({ tenant_id: env.tenant.id, managed_by: 'manual', role: 'admin', user_name: 'head', email: 'pupil2@school.example', scim: '{}' })
    .execute();
  for (let i = 1; i <= 3; i++) await scim('POST', '/Users', entraUser(i));

  const list = await admin('/admin/tenants');
  t.equal(list.statusCode, 200);
  t.match(list.json().tenants, [{ tenantId: env.tenant.id, name: 'Test School', openConflicts24h: 1 }]);
  const one = await admin(`/admin/tenants/${env.tenant.id}`);
  t.match(one.json(), {
    openConflicts: 1,
    accounts: [{ role: 'student', active: true, count: 2 }],
    conflicts: [{ kind: 'admin-collision', object_ref: 'Pupil2@School.example' }],
  });
  t.equal((await admin(`/admin/tenants/${env.tenant.id}/conflicts`)).json().conflicts.length, 1, 'the conflict shows right after it happened');

  const first = await admin(`/admin/tenants/${env.tenant.id}/audit?limit=2`);
  t.equal(first.statusCode, 200);
  const page1 = first.json();
  t.same(page1.events.map((e: { action: string }) => e.action), ['create', 'conflict'], 'newest first');
  t.ok(page1.next);
  const page2 = (await admin(page1.next as string)).json();
  t.same(page2.events.map((e: { action: string }) => e.action), ['create']);
  t.notOk(page2.next, 'the last page has no next');

  t.equal((await admin('/admin/tenants/6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11')).statusCode, 404);
  t.equal((await admin(`/admin/tenants/${env.tenant.id}/audit?limit=0`)).statusCode, 400);

  await revokeAdminCredential(env.db, adminId);
  t.equal((await admin('/admin/tenants')).statusCode, 401, 'a revoked admin token is refused');
});
