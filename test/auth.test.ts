// Every way a credential can be wrong gets 401 with a SCIM error body and a
// WWW-Authenticate challenge; a live credential reaches the SCIM routes.
import { randomUUID } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import t from 'tap';
import { signingKeys } from '../src/auth/keys.js';
import { signToken } from '../src/auth/tokens.js';
import { createCredential, revokeCredential } from '../src/db/credentials.js';
import { createTenant } from '../src/db/tenants.js';
import { TEST_SECRET, testApp } from './helpers/app.js';

const SPC = '/scim/v2/ServiceProviderConfig';

t.test('a valid Secret Token reaches ServiceProviderConfig', async (t) => {
  const { app, headers } = await testApp(t);
  const res = await app.inject({ method: 'GET', url: SPC, headers });
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /^application\/scim\+json/);
  t.same(res.json().schemas, ['urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig']);
  t.equal(res.json().meta.location, 'https://scim.example.test/scim/v2/ServiceProviderConfig');
});

t.test('bad credentials are refused with 401, a SCIM error and a challenge', async (t) => {
  const env = await testApp(t);
  const { app, config, keys, tenant, credentialId, db } = env;
  const settings = { keys, issuer: config.jwtIssuer, audience: config.jwtAudience };
  const claims = { tid: tenant.id, jti: credentialId };
  // A signer with a string key is synchronous.
  type Signer = (options: Record<string, unknown>) => (payload: Record<string, unknown>) => string;
  const sign = (options: Record<string, unknown>, payload: Record<string, unknown> = claims): string =>
    (createSigner as unknown as Signer)(options)(payload);

  const otherTenant = await createTenant(db, { name: 'Other School' });
  const disconnected = await createTenant(db, { name: 'Gone School' });
  await db.updateTable('tenants').set({ disconnected_at: new Date() }).where('id', '=', disconnected.id).execute();
  const disconnectedCredential = await createCredential(db, { tenantId: disconnected.id, kind: 'token' });
  const revoked = await createCredential(db, { tenantId: tenant.id, kind: 'token' });
  await revokeCredential(db, revoked.id);
  const expiredRow = await createCredential(db, { tenantId: tenant.id, kind: 'token', expiresAt: new Date(Date.now() - 1000) });

  const base = { key: TEST_SECRET, algorithm: 'HS256' as const, iss: config.jwtIssuer, aud: config.jwtAudience, kid: keys.current.kid };
  const cases: [string, string | undefined, RegExp][] = [
    ['no Authorization header', undefined, /Authentication required/],
    ['an empty header', '', /Authentication required/],
    ['Basic instead of Bearer', 'Basic dXNlcjpwYXNz', /must be "Bearer <token>"/],
    ['a malformed token', 'Bearer not.a.jwt', /not valid/],
    ['a token signed with another key', `Bearer ${sign({ ...base, key: 'another-key-0123456789abcdef0123456789' })}`, /not valid/],
    ['a token of another issuer', `Bearer ${sign({ ...base, iss: 'someone-else' })}`, /not valid/],
    ['a token for another audience', `Bearer ${sign({ ...base, aud: 'another-service' })}`, /not valid/],
    ['a token with alg none', `Bearer ${sign({ algorithm: 'none', iss: config.jwtIssuer, aud: config.jwtAudience })}`, /not valid/],
    ['a token signed HS512', `Bearer ${sign({ ...base, algorithm: 'HS512' })}`, /not valid/],
    ['an expired token', `Bearer ${sign({ ...base, expiresIn: 1 }, claims)}`, /expired|not valid/],
    ['a token without a tenant claim', `Bearer ${sign(base, { jti: credentialId })}`, /not valid/],
    ['a token whose ids are not UUIDs', `Bearer ${sign(base, { tid: 'x', jti: 'y' })}`, /not valid/],
    ['a revoked credential', `Bearer ${signToken(settings, { tid: tenant.id, jti: revoked.id })}`, /revoked/],
    ['a credential past its expiry row', `Bearer ${signToken(settings, { tid: tenant.id, jti: expiredRow.id })}`, /revoked/],
    ['a credential named under a foreign tenant', `Bearer ${signToken(settings, { tid: otherTenant.id, jti: credentialId })}`, /revoked/],
    ['a credential of a disconnected tenant', `Bearer ${signToken(settings, { tid: disconnected.id, jti: disconnectedCredential.id })}`, /revoked/],
    // As a CLI run against another database issues: signed with this server's key.
    ['a credential this database never had', `Bearer ${signToken(settings, { tid: tenant.id, jti: randomUUID() })}`, /^The token's credential is not in this server's database: .*DATABASE_URL/],
  ];
  for (const [name, authorization, detail] of cases) {
    const res = await app.inject({
      method: 'GET',
      url: SPC,
      headers: authorization === undefined ? {} : { authorization },
    });
    t.equal(res.statusCode, 401, `${name}: 401`);
    t.match(res.headers['www-authenticate'], /^Bearer realm="portal-scim"/, `${name}: challenge`);
    t.match(res.headers['content-type'], /^application\/scim\+json/, `${name}: content type`);
    const body = res.json();
    t.same(body.schemas, ['urn:ietf:params:scim:api:messages:2.0:Error'], `${name}: SCIM error`);
    t.equal(body.status, '401', `${name}: status as a string`);
    t.match(body.detail, detail, `${name}: detail`);
    t.notMatch(res.body, /stack|at .*\.ts/, `${name}: no stack`);
  }
});

t.test('unknown SCIM paths need a credential too', async (t) => {
  const { app, headers } = await testApp(t);
  const anonymous = await app.inject({ method: 'GET', url: '/scim/v2/NoSuchThing' });
  t.equal(anonymous.statusCode, 401);
  const known = await app.inject({ method: 'GET', url: '/scim/v2/NoSuchThing', headers });
  t.equal(known.statusCode, 404);
  t.equal(known.json().status, '404');
});

t.test('a revoked credential is refused once the cache window passes', async (t) => {
  const { app, headers, credentialId, db } = await testApp(t, { CREDENTIAL_CACHE_SECONDS: '1' });
  t.equal((await app.inject({ method: 'GET', url: SPC, headers })).statusCode, 200);
  await revokeCredential(db, credentialId);
  await new Promise((r) => setTimeout(r, 1100));
  const res = await app.inject({ method: 'GET', url: SPC, headers });
  t.equal(res.statusCode, 401);
  t.match(res.json().detail, /revoked/);
});

t.test('an accepted token is remembered for the cache window, but never past its expiry', async (t) => {
  const { app, config, tenant, credentialId, db } = await testApp(t, { CREDENTIAL_CACHE_SECONDS: '300' });
  const settings = { keys: signingKeys(TEST_SECRET), issuer: config.jwtIssuer, audience: config.jwtAudience };
  const expiring = signToken(settings, { tid: tenant.id, jti: credentialId }, new Date(Date.now() + 1500));
  const headers = { authorization: `Bearer ${expiring}` };
  t.equal((await app.inject({ method: 'GET', url: SPC, headers })).statusCode, 200, 'accepted while valid');
  t.equal((await app.inject({ method: 'GET', url: SPC, headers })).statusCode, 200, 'and again from the cache');
  await new Promise((r) => setTimeout(r, 1600));
  const late = await app.inject({ method: 'GET', url: SPC, headers });
  t.equal(late.statusCode, 401, 'refused once it has expired, inside the cache window');
  t.match(late.json().detail, /expired/);

  // Within the window a revoked credential's token is still remembered (the documented bound).
  const lasting = `Bearer ${signToken(settings, { tid: tenant.id, jti: credentialId })}`;
  t.equal((await app.inject({ method: 'GET', url: SPC, headers: { authorization: lasting } })).statusCode, 200);
  await revokeCredential(db, credentialId);
  t.equal((await app.inject({ method: 'GET', url: SPC, headers: { authorization: lasting } })).statusCode, 200, 'remembered within the window');
});

t.test('tokens signed with a previous key still work during a rotation', async (t) => {
  const previous = 'previous-signing-key-0123456789abcdefghij';
  const { app, config, tenant, credentialId } = await testApp(t, { JWT_PREVIOUS_SECRETS: previous });
  const old = signToken(
    { keys: signingKeys(previous), issuer: config.jwtIssuer, audience: config.jwtAudience },
    { tid: tenant.id, jti: credentialId },
  );
  const res = await app.inject({ method: 'GET', url: SPC, headers: { authorization: `Bearer ${old}` } });
  t.equal(res.statusCode, 200);
});
