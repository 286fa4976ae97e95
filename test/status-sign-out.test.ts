// Signing out of the status pages ends that session, not only the browser's
// cookie: a copy of the cookie taken before (a shared browser, a proxy's log)
// no longer opens pages that show pupils' names, on this instance or on
// another. Other sessions of the same admin token go on.
import t, { type Test } from 'tap';
import { signAdminToken } from '../src/auth/tokens.js';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { testApp, testEnv, type TestApp } from './helpers/app.js';

async function signIn(t: Test, env: TestApp, adminToken: string): Promise<string> {
  const res = await env.app.inject({
    method: 'POST',
    url: '/status/session',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: `token=${encodeURIComponent(adminToken)}`,
  });
  t.equal(res.statusCode, 303, 'signed in');
  const cookie = String(res.headers['set-cookie']).split(';')[0] ?? '';
  t.match(cookie, /^portal_scim_status=ey/, 'a session cookie');
  return cookie;
}

t.test('a signed-out session stops working here and on another instance; other sessions of the token go on', async (t) => {
  const env = await testApp(t);
  const credential = await createAdminCredential(env.db, 'portal team', null);
  const adminToken = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  // A second instance on the same database, remembering nothing (CREDENTIAL_CACHE_SECONDS=0).
  const other = await buildApp({ config: loadConfig(testEnv({ CREDENTIAL_CACHE_SECONDS: '0' })), db: env.db, pool: env.database.pool, keys: env.keys });
  t.teardown(() => other.close());
  const page = `/status/tenants/${env.tenant.id}`;

  const cookie = await signIn(t, env, adminToken);
  const colleague = await signIn(t, env, adminToken);
  t.not(cookie, colleague, 'each sign-in is a session of its own');
  t.equal((await env.app.inject({ method: 'GET', url: page, headers: { cookie } })).statusCode, 200, 'the session opens the tenant page');
  t.equal((await other.inject({ method: 'GET', url: page, headers: { cookie } })).statusCode, 200, 'on either instance');

  const signOut = await env.app.inject({ method: 'POST', url: '/status/sign-out', headers: { cookie } });
  t.equal(signOut.statusCode, 303, 'signed out');
  t.match(String(signOut.headers['set-cookie']), /Max-Age=0/, 'the browser is told to drop the cookie');
  const ended = await env.db.selectFrom('admin_session_ends').select(['credential_id', 'expires_at']).execute();
  t.equal(ended.length, 1, 'the session is recorded as ended');
  t.equal(ended[0]?.credential_id, credential.id);
  t.ok(ended[0]!.expires_at.getTime() > Date.now() + 7 * 60 * 60 * 1000, 'until it would have expired');

  for (const [name, app] of [
    ['this instance', env.app],
    ['another instance', other],
  ] as const) {
    const replay = await app.inject({ method: 'GET', url: page, headers: { cookie } });
    t.equal(replay.statusCode, 401, `a copy of the signed-out cookie no longer opens the tenant page (${name})`);
    t.match(replay.body, /action="\/status\/session"/, 'it gets the sign-in form');
    t.notMatch(replay.body, /Pupil/i, 'and no pupil');
  }
  t.equal((await env.app.inject({ method: 'GET', url: page, headers: { cookie: colleague } })).statusCode, 200, "a colleague's session of the same token goes on");
  t.equal((await env.app.inject({ method: 'GET', url: '/status', headers: { authorization: `Bearer ${adminToken}` } })).statusCode, 200, 'and so does the admin token');

  t.equal((await env.app.inject({ method: 'POST', url: '/status/sign-out', headers: { cookie } })).statusCode, 303, 'signing out again is no error');
  t.equal((await env.db.selectFrom('admin_session_ends').select('session_id').execute()).length, 1, 'and records nothing more');
  t.equal((await env.app.inject({ method: 'POST', url: '/status/sign-out', headers: { cookie: 'portal_scim_status=not-a-session' } })).statusCode, 303, 'nor is a cookie that is no session');
});

t.test('sessions that ended long ago are forgotten at the next sign-out', async (t) => {
  const env = await testApp(t);
  const credential = await createAdminCredential(env.db, 'portal team', null);
  const adminToken = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  await env.db.insertInto('admin_session_ends').values({ credential_id: credential.id, session_id: '00000000-0000-4000-8000-000000000001', expires_at: new Date(Date.now() - 1000) }).execute();
  const cookie = await signIn(t, env, adminToken);
  await env.app.inject({ method: 'POST', url: '/status/sign-out', headers: { cookie } });
  const rows = await env.db.selectFrom('admin_session_ends').select('session_id').execute();
  t.equal(rows.length, 1, 'only the session just ended is kept');
  t.not(rows[0]?.session_id, '00000000-0000-4000-8000-000000000001');
});
