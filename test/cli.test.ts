// The admin CLI against a real database: tenants, tokens, revocation,
// migrations, and clear errors for bad input; as an operator expects it:
// repeats say they were done already, --version, admin-token list, human
// output unless --json, a usage error in one line and a hint, the status
// pages' words, and serve's exit code 78 on a configuration error.
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { sql } from 'kysely';
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
  // Nothing listens on port 1: an outage, not a failed migration.
  const unreachable = await cli({ ...env, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nowhere' }, 'tenant', 'list');
  t.equal(unreachable.code, 1);
  t.match(unreachable.err, /^portal-scim: the database cannot be reached \(.*\): check DATABASE_URL/, 'a database that cannot be reached says so');
  t.notMatch(unreachable.err, /migration/, 'and blames no migration');
  const badConfig = await cli({ ...env, PORT: 'x' }, 'tenant', 'list');
  t.equal(badConfig.code, 1);
  t.match(badConfig.err, /PORT: must be a whole number/);
});

t.test('database-url prints DATABASE_URL when it is set', async (t) => {
  const { url } = await testDatabase(t);
  t.same(await cli(testEnv({ DATABASE_URL: url }), 'database-url'), { code: 0, out: url, err: '' });
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

t.test('revoking or disconnecting twice says it was already done, and changes nothing', async (t) => {
  const { url, db } = await testDatabase(t);
  const env = testEnv({ DATABASE_URL: url });
  const tenant = (JSON.parse((await cli(env, 'tenant', 'create', '--name', 'Twice School', '--json')).out) as { id: string }).id;
  const token = (JSON.parse((await cli(env, 'token', 'issue', '--tenant', tenant, '--json')).out) as { id: string }).id;
  const client = (JSON.parse((await cli(env, 'client', 'create', '--tenant', tenant, '--json')).out) as { clientId: string }).clientId;
  const admin = (JSON.parse((await cli(env, 'admin-token', 'issue', '--json')).out) as { id: string }).id;

  const wrongKind = await cli(env, 'client', 'revoke', token);
  t.equal(wrongKind.code, 1, 'client revoke of a Secret Token fails');
  t.match(wrongKind.err, `No OAuth client ${token}: it is a Secret Token; revoke it with token revoke.`, 'and names the command that revokes it');

  for (const [argv, first] of [
    [['token', 'revoke', token], /^Revoked /],
    [['client', 'revoke', client], /^Revoked .* it and its access tokens/],
    [['admin-token', 'revoke', admin], /^Revoked /],
  ] as const) {
    const once = await cli(env, ...argv);
    t.equal(once.code, 0);
    t.match(once.out, first, argv.join(' '));
    const revokedAt = once.out;
    const twice = await cli(env, ...argv);
    t.equal(twice.code, 0, `${argv.join(' ')} again is no error`);
    t.match(twice.out, /^\S+ was already revoked \(at \d{4}-\d\d-\d\d \d\d:\d\d UTC\); nothing changed\.$/, `${argv.join(' ')} again says so`);
    t.not(twice.out, revokedAt);
  }
  const revocations = await db.selectFrom('audit_events').select('object_id').where('action', '=', 'credential').where(sql<boolean>`details->>'operation' = 'revoke'`).execute();
  t.same(revocations.map((r) => r.object_id).sort(), [token, client].sort(), 'one audit event per revocation, none for the repeat');

  t.match((await cli(env, 'tenant', 'disconnect', tenant)).out, /^Disconnected /);
  const again = await cli(env, 'tenant', 'disconnect', tenant);
  t.equal(again.code, 0);
  t.match(again.out, /^Tenant \S+ was already disconnected \(since \d{4}-.* UTC\); nothing changed\.$/);
  t.match(JSON.parse((await cli(env, 'tenant', 'disconnect', tenant, '--json')).out), { alreadyDisconnected: true, connected: false });
  t.match((await cli(env, 'tenant', 'connect', tenant)).out, /^Connected /);
  t.match((await cli(env, 'tenant', 'connect', tenant)).out, /^Tenant \S+ was already connected; nothing changed\.$/);
  const actions = (await db.selectFrom('audit_events').select('action').where('object_type', '=', 'tenant').orderBy('id').execute()).map((r) => r.action);
  t.same(actions, ['create', 'disconnect', 'connect']);
});

t.test('--version, admin-token list, and human output unless --json', async (t) => {
  const { url } = await testDatabase(t);
  const env = testEnv({ DATABASE_URL: url });
  const manifest = JSON.parse(await readFile('package.json', 'utf8')) as { version: string };
  const version = await cli(env, '--version');
  t.equal(version.code, 0);
  t.equal(version.out, manifest.version);

  t.match((await cli(env, 'admin-token', 'list')).out, /^No admin tokens/);
  const first = JSON.parse((await cli(env, 'admin-token', 'issue', '--label', 'grafana', '--json')).out) as { id: string };
  const issued = await cli(env, 'admin-token', 'issue', '--label', 'automation', '--expires', '30d');
  t.match(issued.out, /Admin token: +ey/);
  t.equal((await cli(env, 'admin-token', 'revoke', first.id)).code, 0);
  const listed = await cli(env, 'admin-token', 'list');
  t.match(listed.out, /^ID +STATE +EXPIRES +CREATED +LABEL\n/);
  t.match(listed.out, new RegExp(`${first.id} +revoked +never +\\S+ \\S+ UTC +grafana`));
  t.match(listed.out, /active +\d{4}-\d\d-\d\d \d\d:\d\d UTC +\S+ \S+ UTC +automation/);
  t.notMatch(listed.out, /ey[\w-]{20,}\./, 'never a token');
  t.match(JSON.parse((await cli(env, 'admin-token', 'list', '--json')).out), [{ id: first.id, state: 'revoked', label: 'grafana' }, { state: 'active', label: 'automation' }]);

  const created = await cli(env, 'tenant', 'create', '--name', 'Human School', '--domain', 'human.example');
  t.match(created.out, /^Created tenant (\S+) \(Human School\)\.\nName: +Human School\nVerified domains: +human\.example\n/);
  const id = /^Created tenant (\S+) /.exec(created.out)?.[1] ?? '';
  const set = await cli(env, 'tenant', 'set', id, '--role-map', 'Janitor=staff', '--retention-days', '10');
  t.equal(set.code, 0, set.err);
  t.notMatch(set.out, /[{}]/, 'tenant set prints no JSON without --json');
  t.match(set.out, /^Updated tenant \S+: role mapping, retention\.\n/);
  t.match(set.out, /Role mapping: +janitor → staff\nRetention: +10 days\nState: +connected/);
  t.match(JSON.parse((await cli(env, 'tenant', 'set', id, '--name', 'Renamed', '--json')).out), { name: 'Renamed', changed: ['name'], retentionDays: 10 });
});

t.test('a command used wrongly prints the line that is wrong and where its help is, not the whole help', async (t) => {
  const { url } = await testDatabase(t);
  const env = testEnv({ DATABASE_URL: url });
  const id = '6f1c1d9e-3a57-4d5e-9f0e-2b8f0c6a1d11';
  const cases: [string[], RegExp, string][] = [
    [['tenant', 'set', id, '--retention-days', 'many'], /^error: option '--retention-days <days>' argument 'many' is invalid\. "many" must be a whole number from 0 to 3650\.$/, 'portal-scim tenant set'],
    [['tenant', 'set', id], /^portal-scim: Nothing to change: give --name, --domain/, 'portal-scim tenant set'],
    [['tenant', 'create', '--name', ' '], /^portal-scim: --name must be 1 to 200 characters\.$/, 'portal-scim tenant create'],
    [['tenant', 'create'], /^error: required option '--name <name>' not specified$/, 'portal-scim tenant create'],
    [['token', 'issue', '--tenant', id, '--expires', 'soon'], /^error: option .* "soon" is not a duration/, 'portal-scim token issue'],
    [['token', 'list', '--tenant', id, '--colour'], /^error: unknown option '--colour'$/, 'portal-scim token list'],
    [['frobnicate'], /^error: unknown command 'frobnicate'$/, 'portal-scim'],
  ];
  for (const [argv, line, command] of cases) {
    const result = await cli(env, ...argv);
    t.equal(result.code, 1, argv.join(' '));
    const lines = result.err.split('\n');
    t.equal(lines.length, 2, `${argv.join(' ')}: two lines`);
    t.match(lines[0], line, `${argv.join(' ')}: what is wrong`);
    t.equal(lines[1], `(see ${command} --help)`, `${argv.join(' ')}: where the help is`);
    t.notMatch(result.err, /Usage:|Options:/, 'not the whole help');
    t.equal(result.out, '');
  }
});

t.test('status, token list and tenant list use the words of the status pages', async (t) => {
  const { url, db } = await testDatabase(t);
  const env = testEnv({ DATABASE_URL: url });
  const create = async (name: string, domain: string) => (JSON.parse((await cli(env, 'tenant', 'create', '--name', name, '--domain', domain, '--json')).out) as { id: string }).id;
  const quiet = await create('Quiet School', 'quiet.example');
  const fresh = await create('New School', 'new.example');
  await db.updateTable('tenants').set({ last_request_at: new Date(Date.now() - 3 * 3_600_000) }).where('id', '=', quiet).execute();
  const old = (JSON.parse((await cli(env, 'token', 'issue', '--tenant', quiet, '--label', 'first', '--json')).out) as { id: string }).id;
  const current = (JSON.parse((await cli(env, 'token', 'issue', '--tenant', quiet, '--label', 'second', '--expires', '10d', '--json')).out) as { id: string }).id;
  await db.updateTable('credentials').set({ created_at: new Date(Date.now() - 30 * 86_400_000), last_used_at: new Date(Date.now() - 8 * 86_400_000) }).where('id', '=', old).execute();
  await db.updateTable('credentials').set({ last_used_at: new Date() }).where('id', '=', current).execute();

  const overview = await cli(env, 'status');
  t.equal(overview.code, 0, overview.err);
  const lines = overview.out.split('\n');
  t.match(lines[0], /^HEALTH +TENANT +ID +DOMAINS +LAST REQUEST +WRITES 1 H +FAILED 1 H +OPEN CONFLICTS$/);
  t.match(lines[1], new RegExp(`^silent +Quiet School +${quiet} +quiet\\.example `), 'worst first');
  t.match(lines[2], new RegExp(`^never synced +New School +${fresh} +new\\.example +never `));
  t.match(JSON.parse((await cli(env, 'status', '--json')).out), { tenants: [{ tenantId: quiet, health: 'silent' }, { tenantId: fresh, health: 'never synced' }] });
  t.match((await cli(env, 'tenant', 'list')).out, new RegExp(`${quiet} +Quiet School +quiet\\.example +connected +silent `));

  const tokens = await cli(env, 'token', 'list', '--tenant', quiet);
  t.match(tokens.out, /^ID +KIND +STATE +LAST USED +EXPIRES +CREATED +LABEL +FLAGS\n/);
  t.match(tokens.out, new RegExp(`${old} +token +active .* first +unused\\n`));
  t.match(tokens.out, new RegExp(`${current} +token +active .* second +expires soon\\n`));
  t.match(tokens.out, new RegExp(`  ${old}: not used for 8 days while another credential is in use`));
  t.match(tokens.out, new RegExp(`  ${current}: expires in 10 days`));
  t.match(JSON.parse((await cli(env, 'token', 'list', '--tenant', quiet, '--json')).out), [
    { id: old, state: 'active', flags: ['unused'] },
    { id: current, state: 'active', flags: ['expires soon'] },
  ]);

  const one = await cli(env, 'status', '--tenant', quiet);
  t.match(one.out, /^Tenant: +Quiet School \(\S+\), connected\nHealth: +silent: no request for 3 hours \(silent after 2 hours\)\n/);
  t.match(one.out, /Credentials:\nID +KIND/);
  t.match(one.out, /\nDeleted accounts awaiting purge: 0\nNo synced accounts\.\nFailures/, 'no account table without accounts, as on the status page');

  await db.insertInto('accounts').values({ tenant_id: fresh, managed_by: 'sync', user_name: 'pupil@new.example', scim: '{}' }).execute();
  const counted = await cli(env, 'status', '--tenant', fresh);
  t.match(counted.out, /\nROLE +STATE +ACCOUNTS\nstudent +active +1\n/);
  t.notMatch(counted.out, /No synced accounts/);
});

t.test('portal-scim serve exits 78 on a configuration error, as npm start does', async (t) => {
  const run = promisify(execFile);
  const failed = await run(process.execPath, ['bin/portal-scim.js', 'serve'], { env: { ...process.env, ...testEnv({ PORT: 'x' }) } }).then(
    () => undefined,
    (error: unknown) => error as { code: number; stderr: string },
  );
  t.equal(failed?.code, 78);
  t.match(failed?.stderr, /^portal-scim: configuration error: PORT: must be a whole number, got "x"$/m);
  const inProcess = await cli(testEnv({ PORT: 'x' }), 'serve');
  t.equal(inProcess.code, 78);
});
