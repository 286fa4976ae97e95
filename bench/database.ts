// A database of its own for one benchmark run, on the PostgreSQL at
// DATABASE_URL or else on the embedded one under .data/bench, and a counter
// of the statements an app runs.
import path from 'node:path';
import type { Kysely, KyselyPlugin } from 'kysely';
import pg from 'pg';
import { openEmbeddedPostgres } from '../src/db/embedded.js';

export interface BenchDatabase {
  /** The new database's URL. */
  url: string;
  name: string;
  /** PostgreSQL's server_version. */
  version: string;
  /** Drops the database (unless kept) and stops the embedded PostgreSQL. */
  close(options?: { keep?: boolean; log?: (line: string) => void }): Promise<void>;
}

/** Creates the database `<prefix>_<pid>`. */
export async function benchDatabase(root: string, prefix: string): Promise<BenchDatabase> {
  const embedded = process.env.DATABASE_URL ? undefined : await openEmbeddedPostgres({ dataDir: path.resolve(root, '.data/bench'), database: 'postgres' });
  const adminUrl = process.env.DATABASE_URL ?? embedded?.adminUrl ?? '';
  const name = `${prefix}_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  const version = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? '?';
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    version,
    async close({ keep = false, log } = {}) {
      if (keep) log?.(`kept the database ${name}`);
      else await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
      await embedded?.stop();
    },
  };
}

/** `db` with a count of the statements run through it, to show that a request's statements do not grow with the data. */
export function countingStatements<DB>(db: Kysely<DB>): { db: Kysely<DB>; statements: () => number } {
  let statements = 0;
  const counting: KyselyPlugin = {
    transformQuery: (query) => {
      statements += 1;
      return query.node;
    },
    transformResult: async (result) => result.result,
  };
  return { db: db.withPlugin(counting), statements: () => statements };
}
