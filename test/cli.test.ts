// The admin CLI against a real database: tenants, tokens, revocation,
// migrations, and clear errors for bad input.
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import t from 'tap';
import { buildApp } from '../src/app.js';
import { signingKeys } from '../src/auth/keys.js';
import { runCli } from '../src/cli.js';
import { loadConfig } from '../src/config.js';
import { TEST_SECRET, testEnv } from './helpers/app.js';
import { testDatabase } from './helpers/database.js';

async function cli(env: Record<string, string>, ...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

t.test('tenant create, token issue, and the token opens the SCIM API', async (t) => {
  const { url, db } = await testDatabase(t);
  const env = testEnv({ DATABASE_URL: url });

  const created = await cli(env, 'tenant', 'create', '--name', 'Norra Skolan', '--domain', 'Norra.example', '--domain', 'elev.norra.example', '--json');
  t.equal(created.code, 0, created.err);
  const tenant = JSON.parse(created.out) as { id: string; name: string; verifiedDomains: string[] };
  t.equal(tenant.name, 'Norra Skolan');
  t.same(tenant.verifiedDomains, ['norra.example', 'elev.norra.example'], 'domains are stored lower-case');
  const row = await db.selectFrom('tenants').selectAll().where('id', '=', tenant.id).executeTakeFirstOrThrow();
  t.same(row.verified_domains, ['norra.example', 'elev.norra.example']);

  const listed = await cli(env, 'tenant', 'list', '--json');
  t.equal(listed.code, 0);
  t.same((JSON.parse(listed.out) as { id: string }[]).map((x) => x.id), [tenant.id]);
  const listedText = await cli(env, 'tenant', 'list');
  t.match(listedText.out, /Norra Skolan/);

  const issued = await cli(env, 'token', 'issue', '--tenant', tenant.id, '--expires', '90d', '--label', 'entra', '--json');
  t.equal(issued.code, 0, issued.err);
  const token = JSON.parse(issued.out) as { id: string; token: string; tenantUrl: string; expiresAt: string };
  t.equal(token.tenantUrl, 'https://scim.example.test/scim/v2');
  const days = (Date.parse(token.expiresAt) - Date.now()) / 86_400_000;
  t.ok(days > 89.9 && days <= 90, 'expires in 90 days');
  const credential = await db.selectFrom('credentials').selectAll().where('id', '=', token.id).executeTakeFirstOrThrow();
  t.equal(credential.tenant_id, tenant.id);
  t.equal(credential.label, 'entra');
  t.equal(credential.secret_hash, null, 'a Secret Token keeps no secret in the database');

  const config = loadConfig(env);
  const app = await buildApp({ config, db, keys: signingKeys(TEST_SECRET) });
  t.teardown(() => app.close());
  const ok = await app.inject({ method: 'GET', url: '/scim/v2/ServiceProviderConfig', headers: { authorization: `Bearer ${token.token}` } });
  t.equal(ok.statusCode, 200, 'the issued token is accepted');

  const text = await cli(env, 'token', 'issue', '--tenant', tenant.id);
  t.match(text.out, /Tenant URL: +https:\/\/scim\.example\.test\/scim\/v2/);
  t.match(text.out, /Secret Token: +ey/);

  const tokens = await cli(env, 'token', 'list', '--tenant', tenant.id, '--json');
  const list = JSON.parse(tokens.out) as { id: string; state: string }[];
  t.equal(list.length, 2);
  t.notMatch(tokens.out, /ey[A-Za-z0-9_-]{20,}\./, 'token list never prints a token');

  const revoked = await cli(env, 'token', 'revoke', token.id);
  t.equal(revoked.code, 0);
  const after = await db.selectFrom('credentials').select('revoked_at').where('id', '=', token.id).executeTakeFirstOrThrow();
  t.type(after.revoked_at, Date);
  const refused = await app.inject({ method: 'GET', url: '/scim/v2/ServiceProviderConfig', headers: { authorization: `Bearer ${token.token}` } });
  t.equal(refused.statusCode, 401, 'the revoked token is refused');
  const states = JSON.parse((await cli(env, 'token', 'list', '--tenant', tenant.id, '--json')).out) as { id: string; state: string }[];
  t.equal(states.find((s) => s.id === token.id)?.state, 'revoked');
});

t.test('bad input gets a clear error and a non-zero exit code', async (t) => {
  const { url } = await testDatabase(t);
  const env = testEnv({ DATABASE_URL: url });
  const cases: [string[], RegExp][] = [
    [['tenant', 'create'], /required option '--name <name>'/],
    [['tenant', 'create', '--name', 'X', '--domain', 'not a domain'], /not a domain name/],
    [['token', 'issue', '--tenant', 'nope'], /not a tenant id/],
    [['token', 'issue', '--tenant', '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11'], /No tenant 6f1c1d9e/],
    [['token', 'issue', '--tenant', '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11', '--expires', 'soon'], /not a duration/],
    [['token', 'revoke', '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11'], /No credential/],
    [['frobnicate'], /unknown command/],
  ];
  for (const [argv, message] of cases) {
    const result = await cli(env, ...argv);
    t.not(result.code, 0, `${argv.join(' ')} fails`);
    t.match(result.err, message, `${argv.join(' ')} says why`);
  }
  const badConfig = await cli({ ...env, PORT: 'x' }, 'tenant', 'list');
  t.equal(badConfig.code, 1);
  t.match(badConfig.err, /PORT: must be a whole number/);
});

t.test('migrate applies, reports and reverts', async (t) => {
  const { url } = await testDatabase(t, { migrated: false });
  const env = testEnv({ DATABASE_URL: url });
  t.match((await cli(env, 'migrate')).out, /applied 0001_initial\napplied 0002_admin_credentials/);
  t.match((await cli(env, 'migrate')).out, /up to date/);
  t.match((await cli(env, 'migrate', '--status')).out, /0001_initial +\d{4}-/);
  // --down reverts the latest migration only, whichever that is today.
  const names = (await readdir('migrations')).filter((f) => /^\d{4}_[\w-]+\.ts$/.test(f)).map((f) => f.replace(/\.ts$/, '')).sort();
  const [previous = '', latest = ''] = names.slice(-2);
  t.match((await cli(env, 'migrate', '--down')).out, new RegExp(`reverted ${latest}`));
  t.match((await cli(env, 'migrate', '--status')).out, new RegExp(`${previous} +\\d{4}-.*\\n${latest} +pending`));
});

t.test('the portal-scim command runs from bin/', async (t) => {
  const { url } = await testDatabase(t);
  const run = promisify(execFile);
  const { stdout } = await run(process.execPath, ['bin/portal-scim.js', 'tenant', 'create', '--name', 'Bin School', '--json'], {
    env: { ...process.env, ...testEnv({ DATABASE_URL: url }) },
  });
  t.match(JSON.parse(stdout), { name: 'Bin School', id: /^[0-9a-f-]{36}$/ });
  const help = await run(process.execPath, ['bin/portal-scim.js', '--help'], { env: { ...process.env, ...testEnv({ DATABASE_URL: url }) } });
  t.match(help.stdout, /tenant/);
  t.match(help.stdout, /token/);
});
