// OAuth 2.0 client credentials at POST /oauth/token: clients made by the CLI,
// both client authentication methods, RFC 6749 errors, the access token on the
// SCIM routes, revocation, and the stored secret being a slow hash.
import t, { type Test } from 'tap';
import { runCli } from '../src/cli.js';
import { testApp, testEnv } from './helpers/app.js';

async function cli(env: Record<string, string>, ...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (s) => out.push(s), err: (s) => err.push(s), env });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

interface CreatedClient {
  clientId: string;
  clientSecret: string;
  tokenUrl: string;
  tenantUrl: string;
}

async function setup(t: Test) {
  const ctx = await testApp(t);
  const env = testEnv({ DATABASE_URL: ctx.database.url });
  const created = await cli(env, 'client', 'create', '--tenant', ctx.tenant.id, '--label', 'entra', '--json');
  t.equal(created.code, 0, created.err);
  const client = JSON.parse(created.out) as CreatedClient;
  const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
  const token = (payload: string, headers: Record<string, string> = {}) =>
    ctx.app.inject({
      method: 'POST',
      url: '/oauth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      payload,
    });
  const basic = (id: string, secret: string) =>
    `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
  return { ...ctx, env, client, form, token, basic };
}

t.test('client create prints the id and secret once and stores only a scrypt hash', async (t) => {
  const { client, db, tenant, env } = await setup(t);
  t.equal(client.tokenUrl, 'https://scim.example.test/oauth/token');
  t.equal(client.tenantUrl, 'https://scim.example.test/scim/v2');
  t.match(client.clientSecret, /^[A-Za-z0-9_-]{43}$/);
  const row = await db.selectFrom('credentials').selectAll().where('id', '=', client.clientId).executeTakeFirstOrThrow();
  t.equal(row.kind, 'client');
  t.equal(row.tenant_id, tenant.id);
  t.equal(row.label, 'entra');
  t.match(row.secret_hash, /^scrypt\$16384\$8\$1\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/);
  t.notOk(row.secret_hash?.includes(client.clientSecret), 'the secret itself is not stored');

  const text = await cli(env, 'client', 'create', '--tenant', tenant.id);
  t.equal(text.code, 0);
  t.match(text.out, /Token Endpoint: +https:\/\/scim\.example\.test\/oauth\/token/);
  t.match(text.out, /Client Secret: +[A-Za-z0-9_-]{43}/);

  const listed = await cli(env, 'client', 'list', '--tenant', tenant.id, '--json');
  t.equal(listed.code, 0);
  const clients = JSON.parse(listed.out) as { id: string; kind: string; state: string }[];
  t.equal(clients.length, 2, 'only the two clients, not the Secret Token');
  t.ok(clients.every((c) => c.kind === 'client' && c.state === 'active'));
  t.notOk(listed.out.includes(client.clientSecret), 'the list never shows a secret');

  const unknownTenant = await cli(env, 'client', 'create', '--tenant', '00000000-0000-4000-8000-000000000000');
  t.equal(unknownTenant.code, 1);
  t.match(unknownTenant.err, /No tenant/);
});

t.test('client_secret_post, client_secret_basic and both at once issue a token the SCIM routes accept', async (t) => {
  const { client, form, token, basic, app, db } = await setup(t);
  const cases: [string, string, Record<string, string>][] = [
    ['post', form({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret }), {}],
    ['basic', form({ grant_type: 'client_credentials' }), { authorization: basic(client.clientId, client.clientSecret) }],
    [
      'both',
      form({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret, scope: 'scim' }),
      { authorization: basic(client.clientId, client.clientSecret) },
    ],
  ];
  for (const [name, payload, headers] of cases) {
    const res = await token(payload, headers);
    t.equal(res.statusCode, 200, `${name}: ${res.body}`);
    t.equal(res.headers['cache-control'], 'no-store');
    t.equal(res.headers.pragma, 'no-cache');
    t.match(res.headers['content-type'], /^application\/json/);
    const body = res.json<{ access_token: string; token_type: string; expires_in: number; scope: string }>();
    t.equal(body.token_type, 'Bearer');
    t.equal(body.expires_in, 3600);
    t.equal(body.scope, 'scim');
    const claims = JSON.parse(Buffer.from(body.access_token.split('.')[1] ?? '', 'base64url').toString()) as {
      exp: number;
      iat: number;
      jti: string;
    };
    t.equal(claims.jti, client.clientId, 'the token names the client');
    t.equal(claims.exp - claims.iat, 3600, 'and lives an hour');
    const scim = await app.inject({
      method: 'POST',
      url: '/scim/v2/Users',
      headers: { authorization: `Bearer ${body.access_token}`, 'content-type': 'application/scim+json' },
      payload: JSON.stringify({ schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName: `oauth-${name}@school.example` }),
    });
    t.equal(scim.statusCode, 201, `${name}: the access token creates a user`);
  }
  const row = await db.selectFrom('credentials').select('last_used_at').where('id', '=', client.clientId).executeTakeFirstOrThrow();
  t.ok(row.last_used_at, 'the client records its last use');
  const users = await db.selectFrom('accounts').select('user_name').where('user_name', 'like', 'oauth-%').execute();
  t.equal(users.length, 3);
});

t.test('RFC 6749 errors for every way a token request can be wrong', async (t) => {
  const { client, form, token, basic, app } = await setup(t);
  const ok = { grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret };
  const cases: [string, string, Record<string, string>, number, string][] = [
    ['no grant_type', form({ client_id: client.clientId, client_secret: client.clientSecret }), {}, 400, 'invalid_request'],
    ['password grant', form({ ...ok, grant_type: 'password' }), {}, 400, 'unsupported_grant_type'],
    ['no client', form({ grant_type: 'client_credentials' }), {}, 401, 'invalid_client'],
    ['wrong secret', form({ ...ok, client_secret: 'nope' }), {}, 401, 'invalid_client'],
    ['unknown client', form({ ...ok, client_id: '00000000-0000-4000-8000-000000000001' }), {}, 401, 'invalid_client'],
    ['client id not a uuid', form({ ...ok, client_id: "x' OR 1=1 --" }), {}, 401, 'invalid_client'],
    ['wrong basic secret', form({ grant_type: 'client_credentials' }), { authorization: basic(client.clientId, 'nope') }, 401, 'invalid_client'],
    ['malformed basic', form({ grant_type: 'client_credentials' }), { authorization: 'Basic !!!' }, 401, 'invalid_client'],
    [
      'basic and body disagree',
      form({ ...ok, client_id: '00000000-0000-4000-8000-000000000001' }),
      { authorization: basic(client.clientId, client.clientSecret) },
      400,
      'invalid_request',
    ],
    ['unknown scope', form({ ...ok, scope: 'scim admin' }), {}, 400, 'invalid_scope'],
    ['repeated parameter', `${form(ok)}&grant_type=client_credentials`, {}, 400, 'invalid_request'],
    ['json body', JSON.stringify(ok), { 'content-type': 'application/json' }, 400, 'invalid_request'],
  ];
  for (const [name, payload, headers, status, error] of cases) {
    const res = await token(payload, headers);
    t.equal(res.statusCode, status, `${name}: ${res.body}`);
    const body = res.json<{ error: string; error_description: string }>();
    t.equal(body.error, error, name);
    t.type(body.error_description, 'string');
    t.equal(res.headers['cache-control'], 'no-store', `${name}: never cached`);
    t.notOk(res.body.includes(client.clientSecret), `${name}: the secret is not echoed`);
  }
  const challenged = await token(form({ grant_type: 'client_credentials' }), { authorization: basic(client.clientId, 'nope') });
  t.match(challenged.headers['www-authenticate'], /^Basic realm="portal-scim"/);

  for (const method of ['GET', 'PUT', 'PATCH', 'DELETE'] as const) {
    const other = await app.inject({ method, url: '/oauth/token' });
    t.equal(other.statusCode, 405, `${method}: only POST exists`);
    t.equal(other.headers.allow, 'POST', method);
    t.equal(other.json<{ error: string }>().error, 'invalid_request', `${method}: in RFC 6749's shape`);
    t.equal(other.headers['cache-control'], 'no-store', method);
  }
});

t.test('a revoked client gets no token, and its access tokens stop working', async (t) => {
  const { client, form, token, app, env, db, tenant } = await setup(t);
  const issued = await token(form({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret }));
  const { access_token: accessToken } = issued.json<{ access_token: string }>();
  const headers = { authorization: `Bearer ${accessToken}` };
  t.equal((await app.inject({ method: 'GET', url: '/scim/v2/Users', headers })).statusCode, 200);

  const revokedAsToken = await cli(env, 'client', 'revoke', '00000000-0000-4000-8000-000000000000');
  t.equal(revokedAsToken.code, 1, 'an unknown client id is an error');
  const revoked = await cli(env, 'client', 'revoke', client.clientId);
  t.equal(revoked.code, 0, revoked.err);
  const row = await db.selectFrom('credentials').select('revoked_at').where('id', '=', client.clientId).executeTakeFirstOrThrow();
  t.ok(row.revoked_at);

  const after = await app.inject({ method: 'GET', url: '/scim/v2/Users', headers });
  t.equal(after.statusCode, 401, 'the access token is refused (the test app caches nothing)');
  t.match(after.json<{ detail: string }>().detail, /revoked/);
  const again = await token(form({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret }));
  t.equal(again.statusCode, 401);
  t.equal(again.json<{ error: string }>().error, 'invalid_client');

  // client revoke does not revoke Secret Tokens by mistake.
  const tokenRow = await db.selectFrom('credentials').select('id').where('tenant_id', '=', tenant.id).where('kind', '=', 'token').executeTakeFirstOrThrow();
  const wrongKind = await cli(env, 'client', 'revoke', tokenRow.id);
  t.equal(wrongKind.code, 1);
  const still = await db.selectFrom('credentials').select('revoked_at').where('id', '=', tokenRow.id).executeTakeFirstOrThrow();
  t.equal(still.revoked_at, null);
});

t.test('a client of a disconnected tenant gets no token', async (t) => {
  const { client, form, token, env, tenant } = await setup(t);
  t.equal((await cli(env, 'tenant', 'disconnect', tenant.id)).code, 0);
  const res = await token(form({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret }));
  t.equal(res.statusCode, 401);
  t.equal(res.json<{ error: string }>().error, 'invalid_client');
});

t.test('a tenant can hold a Secret Token and two clients at once during a rotation', async (t) => {
  const { client, form, token, app, env, tenant, headers } = await setup(t);
  const second = JSON.parse((await cli(env, 'client', 'create', '--tenant', tenant.id, '--json')).out) as CreatedClient;
  const tokens: string[] = [];
  for (const c of [client, second]) {
    const res = await token(form({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret }));
    t.equal(res.statusCode, 200);
    tokens.push(res.json<{ access_token: string }>().access_token);
  }
  const get = (authorization: string) => app.inject({ method: 'GET', url: '/scim/v2/Users', headers: { authorization } });
  for (const a of tokens) t.equal((await get(`Bearer ${a}`)).statusCode, 200);
  t.equal((await get(headers.authorization ?? '')).statusCode, 200, 'the Secret Token works beside them');
  t.equal((await cli(env, 'client', 'revoke', client.clientId)).code, 0);
  t.equal((await get(`Bearer ${tokens[0] ?? ''}`)).statusCode, 401, 'the old client is out');
  t.equal((await get(`Bearer ${tokens[1] ?? ''}`)).statusCode, 200, 'the new one keeps working');
  t.equal((await get(headers.authorization ?? '')).statusCode, 200);
});
