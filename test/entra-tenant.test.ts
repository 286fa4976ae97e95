// Rule 13: a tenant records the Entra tenant it is bound to, through the CLI
// and the admin API (one service behind both); an Entra tenant belongs to one
// tenant at most, and the API, the CLI and the database each refuse a second
// claim. Accepting Entra's own token is a setting of a bound tenant, off by
// default.
import t from 'tap';
import { entraCredentialId } from '../src/auth/entra-token.js';
import { signAdminToken } from '../src/auth/tokens.js';
import { runCli } from '../src/cli.js';
import { createAdminCredential } from '../src/db/admin-credentials.js';
import { updateTenantSettings } from '../src/db/tenants.js';
import { testApp, testEnv, type TestApp } from './helpers/app.js';

const TID = '7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f';
const OTHER_TID = 'e9d8c7b6-a5f4-4e3d-9c2b-1a0f9e8d7c6b';

async function adminClient(env: TestApp) {
  const credential = await createAdminCredential(env.db, 'binding test', null);
  const token = signAdminToken({ keys: env.keys, issuer: env.config.jwtIssuer, audience: env.config.jwtAudience }, credential.id);
  return (method: 'GET' | 'POST' | 'PATCH', url: string, body?: unknown) =>
    env.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    });
}

async function cli(env: TestApp, ...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env: testEnv({ DATABASE_URL: env.database.url }) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

t.test('the admin API binds a tenant to its Entra tenant and allows Entra\'s own token, audited; unbinding stops accepting it', async (t) => {
  const env = await testApp(t);
  const call = await adminClient(env);
  const path = `/admin/tenants/${env.tenant.id}`;

  const refused = await call('PATCH', path, { acceptEntraToken: true });
  t.equal(refused.statusCode, 400, 'accepting needs a binding');
  t.match(refused.json(), { scimType: 'invalidValue', detail: /bound to its Entra tenant/ });

  const bound = await call('PATCH', path, { entraTenantId: TID.toUpperCase() });
  t.equal(bound.statusCode, 200);
  t.match(bound.json(), { entraTenantId: TID, acceptEntraToken: false, entraTokenCredentialId: null, changed: ['entraTenantId'] }, 'stored lower-case, not accepting by default');

  const accepting = await call('PATCH', path, { acceptEntraToken: true });
  t.equal(accepting.statusCode, 200);
  t.match(accepting.json(), { entraTenantId: TID, acceptEntraToken: true, entraTokenCredentialId: entraCredentialId(env.tenant.id) }, 'names the id audit events record');

  const audit = await env.db.selectFrom('audit_events').select('details').where('tenant_id', '=', env.tenant.id).where('action', '=', 'settings').orderBy('id').execute();
  t.match(audit.map((a) => a.details), [
    { changed: ['entraTenantId'], entraTenantId: TID, via: 'admin-api' },
    { changed: ['acceptEntraToken'], via: 'admin-api' },
  ]);

  const unbound = await call('PATCH', path, { entraTenantId: null });
  t.equal(unbound.statusCode, 200);
  t.match(unbound.json(), { entraTenantId: null, acceptEntraToken: false }, 'without a binding no Entra token is accepted');
  t.equal((await call('PATCH', path, { entraTenantId: TID, acceptEntraToken: true })).statusCode, 200, 'binding and accepting in one change');

  for (const [body, detail] of [
    [{ entraTenantId: 'contoso.onmicrosoft.com' }, /"contoso\.onmicrosoft\.com" is not an Entra tenant id/],
    [{ entraTenantId: 42 }, /42 is not an Entra tenant id/],
    [{ acceptEntraToken: 'yes' }, /acceptEntraToken must be true or false/],
    [{ entraTenantId: null, acceptEntraToken: true }, /bound to its Entra tenant/],
  ] as const) {
    const res = await call('PATCH', path, body);
    t.equal(res.statusCode, 400, JSON.stringify(body));
    t.match(res.json(), { status: '400', scimType: 'invalidValue', detail });
  }
  const created = await call('POST', '/admin/tenants', { name: 'New School', entraTenantId: OTHER_TID, acceptEntraToken: true });
  t.equal(created.statusCode, 201, 'a tenant can be created bound');
  t.match(created.json(), { entraTenantId: OTHER_TID, acceptEntraToken: true });
});

t.test('an Entra tenant belongs to one tenant: the API, the CLI and the database refuse a second claim', async (t) => {
  const env = await testApp(t);
  const call = await adminClient(env);
  t.equal((await call('PATCH', `/admin/tenants/${env.tenant.id}`, { entraTenantId: TID })).statusCode, 200);
  const detail = `The Entra tenant ${TID} is already bound to tenant Test School (${env.tenant.id}); an Entra tenant belongs to one tenant only.`;

  const copy = await call('POST', '/admin/tenants', { name: 'Copy School', entraTenantId: TID });
  t.equal(copy.statusCode, 409);
  t.match(copy.json(), { status: '409', scimType: 'uniqueness', detail });
  const other = (await call('POST', '/admin/tenants', { name: 'Other School' })).json();
  const moved = await call('PATCH', `/admin/tenants/${other.id as string}`, { entraTenantId: TID });
  t.equal(moved.statusCode, 409, 'a change cannot take it either');
  t.equal(moved.json().detail, detail);
  t.equal((await call('PATCH', `/admin/tenants/${env.tenant.id}`, { entraTenantId: TID, name: 'Test School' })).statusCode, 200, 'its owner keeps it');

  const byCli = await cli(env, 'tenant', 'set', other.id as string, '--entra-tenant', TID);
  t.equal(byCli.code, 1);
  t.match(byCli.err, detail);

  // The database holds the line too, for a write that skips the check.
  await t.rejects(updateTenantSettings(env.db, other.id as string, { entraTenantId: TID }), { code: '23505', constraint: 'tenants_entra_tenant_id_key' });
  // Three tenants claiming one new Entra tenant at once: exactly one gets it.
  const claims = await Promise.all(['A', 'B', 'C'].map((n) => call('POST', '/admin/tenants', { name: `Race ${n}`, entraTenantId: OTHER_TID })));
  t.same(claims.map((c) => c.statusCode).sort(), [201, 409, 409], 'one claim wins, the others are refused');
  t.match(claims.find((c) => c.statusCode === 409)?.json(), { scimType: 'uniqueness', detail: new RegExp(`The Entra tenant ${OTHER_TID} is already bound to`) });
  const owners = await env.db.selectFrom('tenants').select('name').where('entra_tenant_id', '=', OTHER_TID).execute();
  t.equal(owners.length, 1);
});

t.test('tenant set --entra-tenant and --accept-entra-token, as an operator uses them', async (t) => {
  const env = await testApp(t);
  const id = env.tenant.id;

  const refused = await cli(env, 'tenant', 'set', id, '--accept-entra-token');
  t.equal(refused.code, 1, 'accepting needs a binding');
  t.match(refused.err, /can only be accepted by a tenant bound to its Entra tenant/);

  const bound = await cli(env, 'tenant', 'set', id, '--entra-tenant', TID, '--accept-entra-token');
  t.equal(bound.code, 0, bound.err);
  t.match(bound.out, `Updated tenant ${id}: Entra tenant, Entra's own token.`);
  t.match(bound.out, new RegExp(`Entra tenant: +${TID}\\n`));
  t.match(bound.out, `Entra's own token: accepted (audit events name it as credential ${entraCredentialId(id)})`);

  const json = JSON.parse((await cli(env, 'tenant', 'set', id, '--no-accept-entra-token', '--json')).out);
  t.match(json, { entraTenantId: TID, acceptEntraToken: false, changed: ['acceptEntraToken'] });
  const unbound = await cli(env, 'tenant', 'set', id, '--no-entra-tenant');
  t.equal(unbound.code, 0, unbound.err);
  t.match(unbound.out, /Entra tenant: +not bound/);
  t.match(unbound.out, /Entra's own token: +refused/);

  const bad = await cli(env, 'tenant', 'set', id, '--entra-tenant', 'contoso.onmicrosoft.com');
  t.equal(bad.code, 1);
  t.match(bad.err, /"contoso\.onmicrosoft\.com" is not an Entra tenant id/);
  t.match(bad.err, /see portal-scim tenant set --help/);

  const created = JSON.parse((await cli(env, 'tenant', 'create', '--name', 'Bound School', '--entra-tenant', OTHER_TID, '--json')).out);
  t.match(created, { name: 'Bound School', entraTenantId: OTHER_TID, acceptEntraToken: false });
  const list = JSON.parse((await cli(env, 'tenant', 'list', '--json')).out) as { id: string; entraTenantId: string | null }[];
  t.same(list.map((l) => l.entraTenantId).sort(), [OTHER_TID, null].sort());
});
