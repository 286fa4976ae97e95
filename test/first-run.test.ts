// What a newcomer meets first: the documentationUri of the discovery
// documents opens the setup guide on this server; issuing a credential warns
// when PUBLIC_URL is an address Entra cannot reach; and the dependency tree
// installs without engine warnings on every Node version package.json allows.
import { readFile } from 'node:fs/promises';
import semver from 'semver';
import t from 'tap';
import { runCli } from '../src/cli.js';
import { publicUrlProblem } from '../src/services/credentials.js';
import { testApp, testEnv } from './helpers/app.js';

t.test('documentationUri points at the setup guide, which the server serves without a credential', async (t) => {
  const env = await testApp(t);
  const spc = await env.app.inject({ method: 'GET', url: '/scim/v2/ServiceProviderConfig', headers: env.headers });
  const uri = new URL(spc.json().documentationUri as string);
  t.equal(uri.origin, 'https://scim.example.test', 'on PUBLIC_URL');

  const page = await env.app.inject({ method: 'GET', url: uri.pathname });
  t.equal(page.statusCode, 200);
  t.match(page.headers['content-type'], /^text\/html; charset=utf-8/);
  t.match(page.headers['content-security-policy'], /default-src 'none'; style-src 'sha256-/, 'no script, only its stylesheet');
  t.match(page.body, /<h1 id="connecting-microsoft-entra-id-to-the-learning-portal">Connecting Microsoft Entra ID to the learning portal<\/h1>/);
  t.match(page.body, /<table>/, 'the tables are rendered');
  t.match(page.body, /<pre><code class="language-sh">/, 'and the commands');
  const ids = new Set([...page.body.matchAll(/ id="([^"]+)"/g)].map((m) => m[1]));
  const anchors = [...page.body.matchAll(/href="#([^"]+)"/g)].map((m) => m[1] ?? '');
  t.ok(anchors.length >= 12, 'the guide links to its own parts');
  t.same(anchors.filter((a) => !ids.has(a)), [], 'every link within the guide finds its heading');
  t.notMatch(page.body, /<script/i);
});

t.test('token issue and client create warn when PUBLIC_URL is not an https address Entra can reach', async (t) => {
  const env = await testApp(t);
  const run = async (publicUrl: string, ...argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env: testEnv({ DATABASE_URL: env.database.url, PUBLIC_URL: publicUrl }) });
    return { code, out: out.join('\n'), err: err.join('\n') };
  };
  const local = await run('http://localhost:8080', 'token', 'issue', '--tenant', env.tenant.id, '--json');
  t.equal(local.code, 0, 'the token is issued all the same');
  t.match(JSON.parse(local.out), { tenantUrl: 'http://localhost:8080/scim/v2' }, 'stdout stays JSON');
  t.match(local.err, /^Warning: PUBLIC_URL is http:\/\/localhost:8080: not https:\/\/ and not an address Entra can reach from the internet/);
  t.match(local.err, /Set PUBLIC_URL to the https:\/\/ address of your proxy/);
  t.match((await run('http://scim.norra.example', 'client', 'create', '--tenant', env.tenant.id)).err, /Entra only connects over https:\/\//);
  const fine = await run('https://scim.norra.example', 'token', 'issue', '--tenant', env.tenant.id);
  t.equal(fine.code, 0);
  t.equal(fine.err, '', 'no warning for a public https address');

  for (const [url, problem] of [
    ['https://scim.example.org', false],
    ['https://scim.example.org:8443/base', false],
    ['https://203.0.113.7', false],
    ['http://scim.example.org', true],
    ['https://localhost:8080', true],
    ['https://127.0.0.1', true],
    ['https://10.1.2.3', true],
    ['https://192.168.0.10', true],
    ['https://172.20.0.4', true],
    ['https://[::1]:8080', true],
    ['https://scim.internal', true],
    ['https://portal', true],
  ] as const) {
    t.equal(publicUrlProblem(url) !== undefined, problem, `${url} ${problem ? 'is' : 'is not'} a problem`);
  }
});

t.test('the admin API returns the same warning with a new credential', async (t) => {
  const env = await testApp(t, { PUBLIC_URL: 'http://127.0.0.1:8080' });
  const out: string[] = [];
  t.equal(await runCli(['admin-token', 'issue', '--json'], { out: (s) => out.push(s), err: () => undefined, env: testEnv({ DATABASE_URL: env.database.url }) }), 0);
  const { token } = JSON.parse(out.join('\n')) as { token: string };
  const res = await env.app.inject({ method: 'POST', url: `/admin/tenants/${env.tenant.id}/tokens`, headers: { authorization: `Bearer ${token}` } });
  t.equal(res.statusCode, 201);
  t.match(res.json(), { tenantUrl: 'http://127.0.0.1:8080/scim/v2', warnings: [/PUBLIC_URL is http:\/\/127\.0\.0\.1:8080/] });
});

t.test("every installed package's engines admit every Node version package.json's engines allow (npm install prints no engine warning)", async (t) => {
  const manifest = JSON.parse(await readFile('package.json', 'utf8')) as { engines: { node: string } };
  const lock = JSON.parse(await readFile('package-lock.json', 'utf8')) as { packages: Record<string, { version?: string; engines?: { node?: string } | string[] }> };
  const ours = manifest.engines.node;
  t.ok(semver.validRange(ours), `engines.node is a range: ${ours}`);
  const checked: string[] = [];
  const narrower: string[] = [];
  for (const [where, entry] of Object.entries(lock.packages)) {
    const theirs = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
    if (where === '' || theirs === undefined) continue;
    checked.push(where);
    if (!semver.subset(ours, theirs)) narrower.push(`${where}@${entry.version ?? '?'} wants node ${theirs}`);
  }
  t.ok(checked.length > 20, `${checked.length} packages declare engines`);
  t.same(narrower, [], 'none asks for less than package.json promises');
});
