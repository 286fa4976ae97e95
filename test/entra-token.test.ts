// Entra's own bearer token (the Secret Token field left empty): accepted for
// the tenant bound to its Entra tenant when that tenant allows it, verified
// against the signing keys published at ENTRA_JWKS_URL. Here the keys come
// from a key server of the test's own on loopback, with RSA keys generated
// for the run; nothing reaches the internet.
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { createSigner } from 'fast-jwt';
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import t, { type Test } from 'tap';
import { entraCredentialId, NON_GALLERY_AUDIENCE } from '../src/auth/entra-token.js';
import type { Logger } from 'pino';
import { changeTenantSettings, disconnectTenant } from '../src/services/tenants.js';
import { testApp, type TestApp } from './helpers/app.js';
import { holder } from './helpers/locks.js';
import { capturedLogger } from './helpers/log-lines.js';
import { client, entraUser } from './helpers/scim.js';

const CLI = { via: 'cli' } as const;
const ENTRA_TID = '3f2b8c1d-5e6a-4b7c-9d8e-0f1a2b3c4d5e';
const UNBOUND_TID = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const SPC = '/scim/v2/ServiceProviderConfig';

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function rsaKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  // As Microsoft publishes them: RSA, use "sig", a kid, no alg.
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, use: 'sig' } };
}

/** The key server: /keys serves the published keys and counts fetches; /down answers 503; /hang never answers. */
class KeyServer {
  published: SigningKey[] = [];
  fetches = 0;
  private readonly server: Server;

  constructor() {
    this.server = createServer((request, response) => {
      if (request.url === '/keys') {
        this.fetches++;
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ keys: this.published.map((k) => k.jwk) }));
      } else if (request.url === '/down') {
        response.writeHead(503).end();
      }
      // /hang: no answer at all.
    });
  }

  async start(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
  }

  url(path: string): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}${path}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, 'close');
  }
}

interface TokenOptions {
  key: SigningKey;
  tid?: string;
  iss?: string;
  aud?: string;
  kid?: string;
  expiresAt?: number;
}

/** A token shaped like the one Entra's provisioning service sends. */
async function entraToken(options: TokenOptions): Promise<string> {
  const tid = options.tid ?? ENTRA_TID;
  const now = Math.floor(Date.now() / 1000);
  const exp = options.expiresAt ?? now + 3600;
  return new SignJWT({ tid, appid: '1b730954-1685-4b74-9bfd-dac224a7b894', oid: '2d5e8f90-1a2b-4c3d-8e4f-5a6b7c8d9e0f' })
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: options.kid ?? options.key.kid })
    .setIssuer(options.iss ?? `https://sts.windows.net/${tid}/`)
    .setAudience(options.aud ?? NON_GALLERY_AUDIENCE)
    .setIssuedAt(Math.min(now, exp - 3600))
    .setNotBefore(Math.min(now, exp - 3600))
    .setExpirationTime(exp)
    .sign(options.key.privateKey);
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' });

async function keyServer(t: Test): Promise<KeyServer> {
  const server = new KeyServer();
  await server.start();
  t.teardown(() => server.stop());
  return server;
}

/** An app whose keys come from the key server at path, and whose tenant is bound to ENTRA_TID and accepts Entra's token. */
async function entraApp(t: Test, server: KeyServer, path = '/keys', accept = true, logger?: Logger): Promise<TestApp> {
  const env = await testApp(t, { ENTRA_JWKS_URL: server.url(path), ENTRA_JWKS_COOLDOWN_SECONDS: '0', ENTRA_JWKS_TIMEOUT_MS: '500' }, logger ? { logger } : {});
  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: ENTRA_TID, ...(accept ? { acceptEntraToken: true } : {}) }, CLI);
  return env;
}

async function refused(t: Test, env: TestApp, token: string, detail: string, what: string): Promise<void> {
  const res = await env.app.inject({ method: 'GET', url: SPC, headers: bearer(token) });
  t.equal(res.statusCode, 401, `${what}: 401`);
  t.match(res.headers['www-authenticate'], /^Bearer realm="portal-scim"/, `${what}: challenge`);
  t.same(res.json().schemas, ['urn:ietf:params:scim:api:messages:2.0:Error'], `${what}: a SCIM error`);
  t.equal(res.json().detail, detail, `${what}: says why`);
}

const NOT_ACCEPTED = (tid: string) =>
  `No tenant of this server accepts the token Entra issues itself for Entra tenant ${tid}: paste the Secret Token from the portal team into Secret Token.`;
const UNVERIFIED = "Entra's token could not be verified with Microsoft's published signing keys.";
const KEYS_UNAVAILABLE = "Microsoft's signing keys could not be fetched to check Entra's token; Entra retries later.";

t.test("Entra's own token opens the SCIM API of the tenant bound to its Entra tenant, and its writes are audited under the tenant's fixed id", async (t) => {
  const server = await keyServer(t);
  const current = await rsaKey('key-a');
  server.published = [current];
  const env = await entraApp(t, server);

  const token = await entraToken({ key: current });
  const spc = await env.app.inject({ method: 'GET', url: SPC, headers: bearer(token) });
  t.equal(spc.statusCode, 200, 'ServiceProviderConfig answers');
  const scim = client(env.app, bearer(token));
  const created = await scim('POST', '/Users', entraUser(1));
  t.equal(created.statusCode, 201, 'a user is created');
  const search = await scim('GET', '/Users?filter=userName%20eq%20%22Pupil1%40School.example%22');
  t.equal(search.json().totalResults, 1, 'and found in this tenant');

  const audit = await env.db.selectFrom('audit_events').select(['action', 'credential_id']).where('tenant_id', '=', env.tenant.id).where('action', '=', 'create').execute();
  t.same(audit, [{ action: 'create', credential_id: entraCredentialId(env.tenant.id) }], "the audit event names the tenant's Entra-token credential id");
  t.equal(entraCredentialId(env.tenant.id), entraCredentialId(env.tenant.id.toUpperCase()), 'the id depends on the tenant alone');
  t.not(entraCredentialId(env.tenant.id), env.tenant.id);
  const credentials = await env.db.selectFrom('credentials').select('last_used_at').where('tenant_id', '=', env.tenant.id).execute();
  t.same(credentials, [{ last_used_at: null }], 'no credential row is marked as used by it');

  const another = await entraToken({ key: current });
  t.equal((await env.app.inject({ method: 'GET', url: SPC, headers: bearer(another) })).statusCode, 200);
  t.equal(server.fetches, 1, 'the keys were fetched once and cached');
  t.equal((await env.app.inject({ method: 'GET', url: SPC, headers: env.headers })).statusCode, 200, "the tenant's Secret Token works beside it");
});

t.test("a token Entra's keys did not sign, or signed for something else, is refused", async (t) => {
  const server = await keyServer(t);
  const current = await rsaKey('key-a');
  const forged = await rsaKey('key-a');
  server.published = [current];
  const env = await entraApp(t, server);
  const now = Math.floor(Date.now() / 1000);

  await refused(t, env, await entraToken({ key: current, aud: '00000003-0000-0000-c000-000000000000' }), "Entra's token was issued for another application: its audience is not the template of non-gallery applications.", 'a wrong audience');
  await refused(t, env, await entraToken({ key: current, expiresAt: now - 600 }), 'The token has expired.', 'an expired token');
  await refused(t, env, await entraToken({ key: forged }), UNVERIFIED, 'a published kid, signed with another key');
  await refused(t, env, await entraToken({ key: current, iss: `https://sts.windows.net/${UNBOUND_TID}/` }), NOT_ACCEPTED(UNBOUND_TID), 'an issuer of another Entra tenant');
  await refused(t, env, await entraToken({ key: current, iss: `https://login.microsoftonline.com/${ENTRA_TID}/v2.0` }), 'The token is not valid for this server.', 'an issuer that is not sts.windows.net');
  await refused(t, env, await entraToken({ key: current, iss: `https://sts.windows.net.example/${ENTRA_TID}/` }), 'The token is not valid for this server.', 'an issuer that only looks like it');

  // Algorithms other than RS256 are refused before any key is looked up.
  type Signer = (options: Record<string, unknown>) => (payload: Record<string, unknown>) => string;
  const sign = createSigner as unknown as Signer;
  const claims = { iss: `https://sts.windows.net/${ENTRA_TID}/`, aud: NON_GALLERY_AUDIENCE, exp: now + 3600 };
  await refused(t, env, sign({ key: 'a-secret-anyone-could-choose-0123456789', algorithm: 'HS256', kid: 'key-a' })(claims), UNVERIFIED, 'HS256 with an Entra issuer');
  await refused(t, env, sign({ algorithm: 'none' })(claims), UNVERIFIED, 'alg none with an Entra issuer');
  t.equal(server.fetches, 1, 'one fetch of the keys served every check');
});

t.test('a token signed with a key not yet fetched makes the server fetch the keys again', async (t) => {
  const server = await keyServer(t);
  const old = await rsaKey('key-old');
  const next = await rsaKey('key-next');
  server.published = [old];
  const env = await entraApp(t, server);
  t.equal((await env.app.inject({ method: 'GET', url: SPC, headers: bearer(await entraToken({ key: old })) })).statusCode, 200);
  t.equal(server.fetches, 1);

  // Microsoft rolls its keys: the next one is published and signs from now on.
  server.published = [old, next];
  const res = await env.app.inject({ method: 'GET', url: SPC, headers: bearer(await entraToken({ key: next })) });
  t.equal(res.statusCode, 200, 'the token of the new key is accepted');
  t.equal(server.fetches, 2, 'after one more fetch');

  await refused(t, env, await entraToken({ key: next, kid: 'key-nobody-published' }), UNVERIFIED, 'a kid still unknown after fetching again');
  t.equal(server.fetches, 3, 'that kid made one fetch too');
});

t.test('when the keys cannot be had, the answer is a clear 401, not a hang', async (t) => {
  const server = await keyServer(t);
  const key = await rsaKey('key-a');
  server.published = [key];
  const token = await entraToken({ key });

  const { logger, lines } = capturedLogger();
  const down = await entraApp(t, server, '/down', true, logger);
  await refused(t, down, token, KEYS_UNAVAILABLE, 'the key server answers 503');
  await refused(t, down, token, KEYS_UNAVAILABLE, 'and again');
  const warnings = lines.filter((l) => l.level === 40);
  t.equal(warnings.length, 1, 'the operator is told once, not on every request');
  t.match(warnings[0], { msg: /^Microsoft's signing keys could not be fetched/, jwksUrl: server.url('/down'), why: /\S/ }, 'where the keys were sought and why they were not had');
  t.notOk(JSON.stringify(lines).includes(token), 'the token is in no line');
  const hanging = await entraApp(t, server, '/hang');
  await refused(t, hanging, token, KEYS_UNAVAILABLE, 'the key server never answers (ENTRA_JWKS_TIMEOUT_MS)');
  const probe = new KeyServer();
  await probe.start();
  const closed = probe.url('/keys');
  await probe.stop();
  const env = await testApp(t, { ENTRA_JWKS_URL: closed, ENTRA_JWKS_TIMEOUT_MS: '500' });
  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: ENTRA_TID, acceptEntraToken: true }, CLI);
  await refused(t, env, token, KEYS_UNAVAILABLE, 'nothing listens at the key address');
});

t.test("Entra's token is refused unless a connected tenant bound to its Entra tenant accepts it, without fetching any key", async (t) => {
  const server = await keyServer(t);
  const key = await rsaKey('key-a');
  server.published = [key];

  const notAccepting = await entraApp(t, server, '/keys', false);
  await refused(t, notAccepting, await entraToken({ key }), NOT_ACCEPTED(ENTRA_TID), 'bound, but the option is off (the default)');
  await refused(t, notAccepting, await entraToken({ key, tid: UNBOUND_TID }), NOT_ACCEPTED(UNBOUND_TID), 'an Entra tenant no tenant is bound to');
  t.equal(server.fetches, 0, 'no key was fetched for them');

  const accepting = await entraApp(t, server);
  await disconnectTenant(accepting.db, accepting.tenant.id, CLI);
  await refused(t, accepting, await entraToken({ key }), 'The token has been revoked or its tenant is disconnected.', 'the bound tenant is disconnected');
  t.equal(server.fetches, 0, 'nor for a disconnected tenant');
});

t.test("turning Entra's token off stops it within CREDENTIAL_CACHE_SECONDS, also for a token first shown at the end of that window", async (t) => {
  const server = await keyServer(t);
  const key = await rsaKey('key-a');
  server.published = [key];
  const windowSeconds = 3;
  const env = await testApp(t, { ENTRA_JWKS_URL: server.url('/keys'), ENTRA_JWKS_COOLDOWN_SECONDS: '0', CREDENTIAL_CACHE_SECONDS: String(windowSeconds) });
  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: ENTRA_TID, acceptEntraToken: true }, CLI);
  t.equal((await client(env.app, env.headers)('POST', '/Users', entraUser(1))).statusCode, 201);
  // Two tokens Entra issued for this Entra tenant (two jobs, or one issued again).
  const now = Math.floor(Date.now() / 1000);
  const first = client(env.app, bearer(await entraToken({ key, expiresAt: now + 3600 })));
  const second = client(env.app, bearer(await entraToken({ key, expiresAt: now + 3599 })));

  t.equal((await first('GET', '/Users')).statusCode, 200, "the tenant accepts Entra's token");
  await changeTenantSettings(env.db, env.tenant.id, { acceptEntraToken: false }, CLI);
  const offAt = Date.now();
  // The second token is first shown inside the window of the tenant's reading, which may still answer from it.
  await sleep(windowSeconds * 1000 - 400);
  await second('GET', '/Users');
  // Past the window it is refused: the reading it rests on was made before offAt, however slow the machine.
  await sleep(offAt + windowSeconds * 1000 + 500 - Date.now());
  const read = await second('GET', '/Users');
  t.equal(read.statusCode, 401, 'a read past the window is refused');
  t.equal(read.json().detail, NOT_ACCEPTED(ENTRA_TID));
  t.notMatch(read.body, /Pupil1@School\.example/i, "and shows none of the tenant's pupils");
  t.equal((await second('POST', '/Users', entraUser(2))).statusCode, 401, 'and so is a write');
  const rows = await env.db.selectFrom('accounts').select('user_name').where('tenant_id', '=', env.tenant.id).execute();
  t.same(rows.map((r) => r.user_name), ['Pupil1@School.example'], 'which writes no account');
});

/** Holds the app's answers to its reads of the tenants bound to Entra tenants while `holding`: a test commits a change between such a read and its answer. */
class HeldBindingReads implements KyselyPlugin {
  holding = false;
  readonly held: (() => void)[] = [];
  readonly #reads = new WeakSet<object>();

  transformQuery({ node, queryId }: PluginTransformQueryArgs): RootOperationNode {
    if (node.kind === 'SelectQueryNode' && JSON.stringify(node).includes('"accept_entra_token"')) this.#reads.add(queryId);
    return node;
  }

  async transformResult({ result, queryId }: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    if (this.holding && this.#reads.has(queryId)) await new Promise<void>((resolve) => this.held.push(resolve));
    return result;
  }
}

t.test("with CREDENTIAL_CACHE_SECONDS=0, a request after Entra's token is turned off is refused while an earlier request's reading is still under way", async (t) => {
  const server = await keyServer(t);
  const key = await rsaKey('key-a');
  server.published = [key];
  const reads = new HeldBindingReads();
  const env = await testApp(t, { ENTRA_JWKS_URL: server.url('/keys'), ENTRA_JWKS_COOLDOWN_SECONDS: '0', CREDENTIAL_CACHE_SECONDS: '0' }, { appDb: (db) => db.withPlugin(reads) });
  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: ENTRA_TID, acceptEntraToken: true }, CLI);
  const scim = client(env.app, bearer(await entraToken({ key })));
  t.equal((await scim('GET', '/Users')).statusCode, 200, "the tenant accepts Entra's token");

  reads.holding = true;
  const first = scim('GET', '/Users');
  for (let i = 0; i < 500 && reads.held.length === 0; i++) await sleep(10);
  t.equal(reads.held.length, 1, "the first request's reading has been made, and its answer is held");
  await changeTenantSettings(env.db, env.tenant.id, { acceptEntraToken: false }, CLI);
  reads.holding = false;
  const second = scim('GET', '/Users');
  // Time for the second request to reach its reading: were it to join the first one's, it would be let in.
  await sleep(100);
  for (const release of reads.held.splice(0)) release();
  t.equal((await first).statusCode, 200, 'the request that came first is answered from the reading made for it');
  const refused = await second;
  t.equal(refused.statusCode, 401, 'the request that came after the change is refused');
  t.equal(refused.json().detail, NOT_ACCEPTED(ENTRA_TID));
});

t.test('tokens naming made-up Entra tenants cost no query: the bound tenants are read whole, once per CREDENTIAL_CACHE_SECONDS', async (t) => {
  const server = await keyServer(t);
  const key = await rsaKey('key-a');
  server.published = [key];
  const env = await testApp(t, { ENTRA_JWKS_URL: server.url('/keys'), CREDENTIAL_CACHE_SECONDS: '60', DATABASE_LOCK_TIMEOUT_MS: '200' });
  await changeTenantSettings(env.db, env.tenant.id, { entraTenantId: ENTRA_TID, acceptEntraToken: true }, CLI);
  await refused(t, env, await entraToken({ key, tid: UNBOUND_TID }), NOT_ACCEPTED(UNBOUND_TID), 'the first reads the bindings');

  // Nothing may read the tenants table now: a query would wait for the lock and answer 503.
  const { hold } = await holder(t, env);
  await hold.query('LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE');
  const forged = await Promise.all(
    Array.from({ length: 50 }, async () => {
      const tid = randomUUID();
      const res = await env.app.inject({ method: 'GET', url: SPC, headers: bearer(await entraToken({ key, tid })) });
      return { status: res.statusCode, detail: res.json<{ detail: string }>().detail === NOT_ACCEPTED(tid) };
    }),
  );
  t.same(new Set(forged.map((f) => JSON.stringify(f))), new Set([JSON.stringify({ status: 401, detail: true })]), 'fifty forged Entra tenants: each refused with its reason, none waited for the table');
  t.equal(server.fetches, 0, 'and no key was fetched');
  await hold.query('ROLLBACK');

  const scim = client(env.app, bearer(await entraToken({ key })));
  t.equal((await scim('GET', '/Users?count=1')).statusCode, 200, 'the bound tenant’s own token is still taken');
});
