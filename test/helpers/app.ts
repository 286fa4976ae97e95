// Builds the app on a fresh test database, with a tenant and a Secret Token.
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Test } from 'tap';
import { buildApp, type AppOptions } from '../../src/app.js';
import { signingKeys, type SigningKeys } from '../../src/auth/keys.js';
import { signToken } from '../../src/auth/tokens.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createCredential } from '../../src/db/credentials.js';
import type { Db } from '../../src/db/database.js';
import { createTenant, type TenantRow } from '../../src/db/tenants.js';
import type { WriteStrategy } from '../../src/scim/resource.js';
import { testDatabase, type TestDatabase } from './database.js';

export const TEST_SECRET = 'test-signing-key-0123456789abcdef0123456789';
export const PUBLIC_URL = 'https://scim.example.test';

export function testEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    JWT_SECRET: TEST_SECRET,
    PUBLIC_URL,
    LOG_LEVEL: 'silent',
    CREDENTIAL_CACHE_SECONDS: '0',
    // The suite sends faster than any tenant may; the rate-limit test turns it on.
    RATE_LIMIT_PER_SECOND: '0',
    DATA_DIR: path.join(os.tmpdir(), 'portal-scim-test-unused'),
    ...overrides,
  };
}

export interface TestTenant {
  tenant: TenantRow;
  token: string;
  credentialId: string;
  headers: Record<string, string>;
}

export async function tenantWithToken(
  db: Db,
  config: Config,
  keys: SigningKeys,
  name = 'Test School',
  domains: string[] = ['school.example'],
): Promise<TestTenant> {
  const tenant = await createTenant(db, { name, verifiedDomains: domains });
  const credential = await createCredential(db, { tenantId: tenant.id, kind: 'token' });
  const token = signToken(
    { keys, issuer: config.jwtIssuer, audience: config.jwtAudience },
    { tid: tenant.id, jti: credential.id },
  );
  return {
    tenant,
    token,
    credentialId: credential.id,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' },
  };
}

export interface TestApp extends TestTenant {
  app: FastifyInstance;
  config: Config;
  keys: SigningKeys;
  database: TestDatabase;
  db: Db;
}

export interface TestAppOptions {
  writeStrategy?: WriteStrategy;
  logger?: AppOptions['logger'];
  /** The app's own view of the database (a plugin that holds a query's answer, say); TestApp.db stays the plain one. */
  appDb?: (db: Db) => Db;
}

export async function testApp(t: Test, env: Record<string, string> = {}, options: TestAppOptions = {}): Promise<TestApp> {
  const database = await testDatabase(t);
  const config = loadConfig(testEnv(env));
  const keys = signingKeys(TEST_SECRET, config.jwtPreviousSecrets);
  const { appDb, ...appOptions } = options;
  const app = await buildApp({ config, db: appDb ? appDb(database.db) : database.db, pool: database.pool, keys, ...appOptions });
  // No request in the suite may answer 500: every failure has a SCIM status.
  const serverErrors: string[] = [];
  app.addHook('onResponse', async (request, reply) => {
    if (reply.statusCode >= 500 && reply.statusCode !== 503) serverErrors.push(`${request.method} ${request.url} -> ${reply.statusCode}`);
  });
  t.teardown(async () => {
    await app.close();
    // Teardown cannot assert; an error here fails the test that made the request.
    if (serverErrors.length > 0) throw new Error(`requests answered 5xx: ${serverErrors.join('; ')}`);
  });
  const tenant = await tenantWithToken(database.db, config, keys);
  return { app, config, keys, database, db: database.db, ...tenant };
}
