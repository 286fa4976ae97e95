// Opens the configured database: DATABASE_URL, or the embedded PostgreSQL in
// the data directory. Both go through the same pg pool and Kysely instance.
import type pg from 'pg';
import type { Config } from '../config.js';
import { createDb, type Db } from './database.js';
import { openEmbeddedPostgres, type EmbeddedPostgres } from './embedded.js';

export interface OpenDatabase {
  db: Db;
  pool: pg.Pool;
  url: string;
  embedded: EmbeddedPostgres | undefined;
  /** Closes the pool and stops the embedded server if this process started it. */
  close(): Promise<void>;
}

export async function openDatabase(
  config: Config,
  options: { log?: (message: string) => void; applicationName?: string; poolSize?: number } = {},
): Promise<OpenDatabase> {
  const embedded = config.databaseUrl
    ? undefined
    : await openEmbeddedPostgres({ dataDir: config.dataDir, ...(options.log ? { log: options.log } : {}) });
  const url = config.databaseUrl ?? embedded?.url ?? '';
  const { db, pool } = createDb(url, {
    poolSize: options.poolSize ?? config.databasePoolSize,
    statementTimeoutMs: config.databaseStatementTimeoutMs,
    lockTimeoutMs: config.databaseLockTimeoutMs,
    queryTimeoutMs: config.databaseQueryTimeoutMs,
    ...(options.applicationName ? { applicationName: options.applicationName } : {}),
  });
  let closed = false;
  return {
    db,
    pool,
    url,
    embedded,
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
      await embedded?.stop();
    },
  };
}
