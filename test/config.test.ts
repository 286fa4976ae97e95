import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ConfigError, defaultMaxConnections, loadConfig, openFileLimit } from '../src/config.js';

t.test('defaults give a usable configuration', async (t) => {
  const config = loadConfig({}, '/srv/app');
  t.equal(config.port, 8080);
  t.equal(config.host, '127.0.0.1');
  t.equal(config.databaseUrl, undefined);
  t.equal(config.dataDir, '/srv/app/.data');
  t.equal(config.publicUrl, 'http://localhost:8080');
  t.equal(config.logLevel, 'info');
  t.equal(config.jwtSecret, undefined);
  t.ok(Object.isFrozen(config), 'the config is frozen');
});

t.test('values are read and normalised', async (t) => {
  const config = loadConfig(
    {
      PORT: '9000',
      HOST: '0.0.0.0',
      DATABASE_URL: 'postgres://u@db:5432/scim',
      PUBLIC_URL: 'https://scim.example.com/',
      LOG_LEVEL: 'WARN',
      DATA_DIR: 'var/data',
      JWT_SECRET: 'x'.repeat(40),
      JWT_PREVIOUS_SECRETS: `${'y'.repeat(32)}, ${'z'.repeat(33)}`,
    },
    '/srv',
  );
  t.equal(config.port, 9000);
  t.equal(config.host, '0.0.0.0');
  t.equal(config.databaseUrl, 'postgres://u@db:5432/scim');
  t.equal(config.publicUrl, 'https://scim.example.com', 'trailing slash removed');
  t.equal(config.logLevel, 'warn');
  t.equal(config.dataDir, '/srv/var/data');
  t.same(config.jwtPreviousSecrets, ['y'.repeat(32), 'z'.repeat(33)]);
});

const bad: [Record<string, string>, string, RegExp][] = [
  [{ PORT: 'eighty' }, 'PORT', /whole number/],
  [{ PORT: '70000' }, 'PORT', /between 0 and 65535/],
  [{ DATABASE_URL: 'mysql://localhost/db' }, 'DATABASE_URL', /postgres:/],
  [{ DATABASE_URL: 'not a url' }, 'DATABASE_URL', /not a valid URL/],
  [{ PUBLIC_URL: 'scim.example.com' }, 'PUBLIC_URL', /not a valid URL/],
  [{ PUBLIC_URL: 'ftp://scim.example.com' }, 'PUBLIC_URL', /http/],
  [{ PUBLIC_URL: 'https://scim.example.com/?a=b' }, 'PUBLIC_URL', /query/],
  [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /one of/],
  [{ TRUST_PROXY: 'the load balancer' }, 'TRUST_PROXY', /addresses and CIDR ranges/],
  [{ RATE_LIMIT_PER_SECOND: '-1' }, 'RATE_LIMIT_PER_SECOND', /whole number/],
  [{ OAUTH_TOKEN_SECONDS: '10' }, 'OAUTH_TOKEN_SECONDS', /between 60 and 86400/],
  [{ JWT_SECRET: 'short' }, 'JWT_SECRET', /32 characters/],
  [{ JWT_PREVIOUS_SECRETS: 'short' }, 'JWT_PREVIOUS_SECRETS', /32 characters/],
  [{ CREDENTIAL_CACHE_SECONDS: '-1' }, 'CREDENTIAL_CACHE_SECONDS', /whole number/],
  [{ DATABASE_POOL_SIZE: '0' }, 'DATABASE_POOL_SIZE', /between 1 and 200/],
  [{ CHANGE_FEED_RETENTION_DAYS: '0' }, 'CHANGE_FEED_RETENTION_DAYS', /between 1 and 3650/],
  [{ ENTRA_JWKS_URL: 'keys.example' }, 'ENTRA_JWKS_URL', /not a valid URL/],
  [{ ENTRA_JWKS_URL: 'http://keys.example/keys' }, 'ENTRA_JWKS_URL', /https:\/\/ \(http:\/\/ only for a loopback address\)/],
  [{ ENTRA_JWKS_URL: 'ftp://keys.example/keys' }, 'ENTRA_JWKS_URL', /must start with https:\/\/ or http:\/\//],
  [{ ENTRA_JWKS_TIMEOUT_MS: '10' }, 'ENTRA_JWKS_TIMEOUT_MS', /between 100 and 60000/],
  [{ ENTRA_JWKS_COOLDOWN_SECONDS: 'soon' }, 'ENTRA_JWKS_COOLDOWN_SECONDS', /whole number/],
];

for (const [env, variable, message] of bad) {
  t.test(`a bad ${variable} is refused with an error naming it`, async (t) => {
    let caught: unknown;
    try {
      loadConfig(env);
    } catch (error) {
      caught = error;
    }
    t.type(caught, ConfigError);
    t.equal((caught as ConfigError).variable, variable);
    t.match((caught as ConfigError).message, new RegExp(`^${variable}: `), 'the message starts with the variable');
    t.match((caught as ConfigError).message, message);
  });
}

t.test('TRUST_PROXY reads false, true, or a list of proxies', async (t) => {
  t.equal(loadConfig({}).trustProxy, false);
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true);
  t.equal(loadConfig({ TRUST_PROXY: 'False' }).trustProxy, false);
  t.equal(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 192.168.1.5' }).trustProxy, '10.0.0.0/8,192.168.1.5');
  t.equal(loadConfig({}).rateLimitPerSecond, 50);
  t.equal(loadConfig({}).oauthTokenSeconds, 3600);
  t.equal(loadConfig({ MAX_EVENT_LOOP_DELAY_MS: '0' }).maxEventLoopDelayMs, 0);
});

t.test("Entra's signing keys come from Microsoft unless set, over https or from this machine", async (t) => {
  const defaults = loadConfig({});
  t.equal(defaults.entraJwksUrl, 'https://login.microsoftonline.com/common/discovery/keys');
  t.equal(defaults.entraJwksTimeoutMs, 5000);
  t.equal(defaults.entraJwksCooldownSeconds, 30);
  t.equal(loadConfig({ ENTRA_JWKS_URL: 'https://keys.example/discovery/keys' }).entraJwksUrl, 'https://keys.example/discovery/keys');
  t.equal(loadConfig({ ENTRA_JWKS_URL: 'http://127.0.0.1:9999/keys' }).entraJwksUrl, 'http://127.0.0.1:9999/keys', 'a key server on loopback');
  t.equal(loadConfig({ ENTRA_JWKS_URL: 'http://localhost/keys', ENTRA_JWKS_COOLDOWN_SECONDS: '0' }).entraJwksCooldownSeconds, 0);
});

t.test('MAX_CONNECTIONS stays below the open-file limit by default', async (t) => {
  t.equal(defaultMaxConnections(undefined), 10_000, 'where the limit is unknown');
  t.equal(defaultMaxConnections(1_048_576), 10_000, 'a generous limit');
  t.equal(defaultMaxConnections(20_000), 10_000);
  t.equal(defaultMaxConnections(4096), 3072, 'a quarter of the files left to the rest');
  t.equal(defaultMaxConnections(1024), 768, 'at least 256');
  t.equal(defaultMaxConnections(200), 16, 'never fewer than 16');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'limits-'));
  const limits = path.join(dir, 'limits');
  await writeFile(limits, 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            20000                20000                files\n');
  t.equal(openFileLimit(limits), 20_000, 'read from the format Linux gives');
  t.equal(openFileLimit(path.join(dir, 'none')), undefined, 'no such file: unknown');
  t.equal(loadConfig({ MAX_CONNECTIONS: '500' }, '/srv/app').maxConnections, 500);
  t.throws(() => loadConfig({ MAX_CONNECTIONS: '8' }, '/srv/app'), ConfigError);
});
