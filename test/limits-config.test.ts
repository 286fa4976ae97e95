// The settings that bound what a client, a tenant or a stuck database can cost:
// their defaults, the defaults that follow other settings, and refusals that
// name the variable.
import t from 'tap';
import { ConfigError, loadConfig } from '../src/config.js';

t.test('defaults', async (t) => {
  const config = loadConfig({});
  t.equal(config.databaseLockTimeoutMs, 5000);
  t.equal(config.databaseQueryTimeoutMs, 16000, 'a second past the statement timeout');
  t.equal(config.readinessTimeoutMs, 1000);
  t.equal(config.tenantConcurrency, 7, 'three quarters of the pool of 10');
  t.equal(config.tenantQueueTimeoutMs, 2000);
  t.equal(config.requestTimeoutMs, 30000);
  t.equal(config.connectionOutputLimitBytes, 1048576);
  t.equal(config.outputLimitBytes, 67108864);
});

t.test('defaults that follow other settings', async (t) => {
  const short = loadConfig({ DATABASE_STATEMENT_TIMEOUT_MS: '3000' });
  t.equal(short.databaseLockTimeoutMs, 1000, 'the lock timeout is at most a third of the statement timeout');
  t.equal(short.databaseQueryTimeoutMs, 4000);
  t.equal(loadConfig({ DATABASE_POOL_SIZE: '4' }).tenantConcurrency, 3, 'three quarters of the pool, rounded down');
  t.equal(loadConfig({ DATABASE_POOL_SIZE: '1' }).tenantConcurrency, 1, 'at least one');
  t.equal(loadConfig({ TENANT_CONCURRENCY: '0' }).tenantConcurrency, 0, '0 turns the share off');
});

const bad: [Record<string, string>, string, RegExp][] = [
  [{ DATABASE_LOCK_TIMEOUT_MS: '15000' }, 'DATABASE_LOCK_TIMEOUT_MS', /less than DATABASE_STATEMENT_TIMEOUT_MS \(15000\)/],
  [{ DATABASE_STATEMENT_TIMEOUT_MS: '2000', DATABASE_LOCK_TIMEOUT_MS: '5000' }, 'DATABASE_LOCK_TIMEOUT_MS', /less than/],
  [{ DATABASE_QUERY_TIMEOUT_MS: '15000' }, 'DATABASE_QUERY_TIMEOUT_MS', /more than DATABASE_STATEMENT_TIMEOUT_MS/],
  [{ DATABASE_QUERY_TIMEOUT_MS: 'soon' }, 'DATABASE_QUERY_TIMEOUT_MS', /whole number/],
  [{ READINESS_TIMEOUT_MS: '10' }, 'READINESS_TIMEOUT_MS', /between 50 and 60000/],
  [{ TENANT_CONCURRENCY: '-1' }, 'TENANT_CONCURRENCY', /whole number/],
  [{ TENANT_QUEUE_TIMEOUT_MS: '600000' }, 'TENANT_QUEUE_TIMEOUT_MS', /between 0 and 60000/],
  [{ REQUEST_TIMEOUT_MS: '50' }, 'REQUEST_TIMEOUT_MS', /between 100 and/],
  [{ CONNECTION_OUTPUT_LIMIT_BYTES: '1024' }, 'CONNECTION_OUTPUT_LIMIT_BYTES', /between 65536 and/],
  [{ CONNECTION_OUTPUT_LIMIT_BYTES: '2097152', OUTPUT_LIMIT_BYTES: '1048576' }, 'OUTPUT_LIMIT_BYTES', /at least CONNECTION_OUTPUT_LIMIT_BYTES/],
];

for (const [env, variable, message] of bad) {
  t.test(`${JSON.stringify(env)} is refused naming ${variable}`, async (t) => {
    let caught: unknown;
    try {
      loadConfig(env);
    } catch (error) {
      caught = error;
    }
    t.type(caught, ConfigError);
    t.equal((caught as ConfigError).variable, variable);
    t.match((caught as ConfigError).message, message);
  });
}
