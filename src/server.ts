// Starts and stops the process: configuration, database (embedded or
// DATABASE_URL), migrations, the app, and a graceful close on signals.
import { pathToFileURL } from 'node:url';
import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildApp } from './app.js';
import { loadSigningKeys } from './auth/keys.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { migrateToLatest } from './db/migrate.js';
import { openDatabase, type OpenDatabase } from './db/open.js';
import { purgeDeletedAccounts } from './db/accounts.js';
import { pruneOrphanDepartures } from './db/classes.js';
import { pruneChangeEvents } from './db/change-feed.js';
import type { Db } from './db/database.js';
import { recordAudit } from './db/audit.js';
import { countTenants } from './db/tenants.js';
import { createLogger, processLogDestination } from './logger.js';
import { listenMetrics } from './metrics.js';

const HOURLY_JOB_EVERY_MS = 60 * 60 * 1000;

export interface RunningServer {
  app: FastifyInstance;
  database: OpenDatabase;
  url: string;
  close(): Promise<void>;
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const database = await openDatabase(config, {
    log: (message) => logger.debug({ component: 'embedded-postgres' }, message),
  });
  // Connections come and go with load and when a query gets no answer in time (see createDb).
  const poolState = (): Record<string, number> => ({ connections: database.pool.totalCount, idle: database.pool.idleCount, waiting: database.pool.waitingCount });
  database.pool.on('connect', () => logger.debug(poolState(), 'database connection opened'));
  database.pool.on('remove', () => logger.debug(poolState(), 'database connection closed'));
  try {
    if (database.embedded) {
      logger.info({ dataDir: config.dataDir }, database.embedded.owned ? 'embedded PostgreSQL started' : 'embedded PostgreSQL already running; connected to it');
    }
    const applied = await migrateToLatest(database.db);
    if (applied.length > 0) logger.info({ migrations: applied }, 'migrations applied');

    const keys = await loadSigningKeys(config);
    if (!config.jwtSecret && config.databaseUrl) {
      logger.warn('JWT_SECRET is not set: using the key generated in the data directory; set JWT_SECRET when several instances share the database');
    }
    const app = await buildApp({ config, db: database.db, pool: database.pool, keys, logger });
    const url = await app.listen({ port: config.port, host: config.host });
    // No credential on this port: it must only be reachable from the private network.
    const metricsServer = config.metricsPort === undefined ? undefined : await listenMetrics(app.metricsRegistry, config.host, config.metricsPort);
    if (metricsServer) logger.info({ port: config.metricsPort }, 'metrics on their own port at /metrics, without a credential; keep it private');
    logger.info({ url, tenantUrl: `${config.publicUrl}/scim/v2` }, 'portal-scim listening');

    if ((await countTenants(database.db)) === 0) {
      logger.info(
        'No tenant yet. Create one and a Secret Token for its Entra app: ' +
          'npx portal-scim tenant create --name "Example School" --domain example.edu ' +
          'then npx portal-scim token issue --tenant <tenant id>, ' +
          // The CLI reads its settings as the server does: another database or port would give a token or Tenant URL this server does not know.
          "with this server's settings in their environment (DATABASE_URL, JWT_SECRET, and PUBLIC_URL or PORT)",
      );
    }
    const hourly = setInterval(() => void runHourlyJob(database.db, config, logger), HOURLY_JOB_EVERY_MS);
    hourly.unref();
    return {
      app,
      database,
      url,
      async close() {
        clearInterval(hourly);
        metricsServer?.closeAllConnections();
        await new Promise((resolve) => (metricsServer ? metricsServer.close(resolve) : resolve(undefined)));
        await app.close();
        await database.close();
      },
    };
  } catch (error) {
    await database.close();
    throw error;
  }
}

/**
 * The hourly upkeep every instance runs: deleted accounts leave the database
 * after their tenant's retention period (rule 7), then changes older than
 * CHANGE_FEED_RETENTION_DAYS leave the change feed, and departures of
 * classes deleted meanwhile go. All are safe on several instances at once.
 * A failure is logged and waits for the next hour.
 */
export async function runHourlyJob(db: Db, config: Config, logger: Logger): Promise<void> {
  try {
    const purged = await purgeDeletedAccounts(db);
    for (const [tenantId, count] of purged) {
      await recordAudit(db, { tenantId, action: 'purge', objectType: 'tenant', objectId: tenantId, outcome: 'success', details: { accounts: count } });
      logger.info({ tenantId, accounts: count }, 'purged deleted accounts');
    }
  } catch (error) {
    logger.warn({ err: error }, 'purge failed; it runs again in an hour');
  }
  try {
    const pruned = await pruneChangeEvents(db, config.changeFeedRetentionDays);
    if (pruned > 0) logger.info({ changes: pruned, retentionDays: config.changeFeedRetentionDays }, 'pruned the change feed');
  } catch (error) {
    logger.warn({ err: error }, 'pruning the change feed failed; it runs again in an hour');
  }
  try {
    const departures = await pruneOrphanDepartures(db);
    if (departures > 0) logger.info({ departures }, 'removed the departures of deleted classes');
  } catch (error) {
    logger.warn({ err: error }, 'removing the departures of deleted classes failed; it runs again in an hour');
  }
}

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`portal-scim: configuration error: ${error.message}\n`);
      process.exitCode = 78;
      return;
    }
    throw error;
  }
  const logger = createLogger(config.logLevel, await processLogDestination());
  let server: RunningServer | undefined;
  // close-with-grace: one handler for SIGINT/SIGTERM and fatal errors, with a
  // deadline after which the process exits anyway.
  const closer = closeWithGrace({ delay: config.shutdownTimeoutMs, logger }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'shutting down after an unexpected error');
    else logger.info({ signal }, 'shutting down');
    await server?.close();
    logger.info('stopped');
  });
  try {
    server = await startServer(config, logger);
  } catch (error) {
    const taken = listenRefusal(error, config);
    if (taken) logger.fatal({ port: config.port, host: config.host }, taken);
    else logger.fatal({ err: error }, 'could not start');
    closer.uninstall();
    process.exitCode = 1;
  }
}

/** What to do about an address the server may not listen on: a sentence, not a stack trace. */
function listenRefusal(error: unknown, config: Config): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  const where = `${config.host}:${config.port}`;
  if (code === 'EADDRINUSE') return `could not start: ${where} is in use, by another portal-scim or another program; stop it, or set PORT (and HOST) to a free address`;
  if (code === 'EACCES') return `could not start: listening on ${where} is not permitted to this user (ports below 1024 need privileges); set PORT to 1024 or above`;
  if (code === 'EADDRNOTAVAIL') return `could not start: ${config.host} is no address of this machine; set HOST to one of its addresses, or 0.0.0.0`;
  return undefined;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
