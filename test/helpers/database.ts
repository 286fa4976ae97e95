// Each test file gets its own database, cloned from the migrated template that
// test/run.ts builds, and dropped when the file's tests end.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Test } from 'tap';
import { createDb, type Db } from '../../src/db/database.js';
import { migrateToLatest } from '../../src/db/migrate.js';

// npm test names a template of its own per run, so runs sharing one server
// never drop each other's template.
function templateDatabase(): string {
  return process.env.TEST_TEMPLATE_DATABASE ?? 'portal_scim_template';
}

export function adminUrl(): string {
  const url = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
  if (!url) throw new Error('Run the tests with npm test (or set TEST_DATABASE_URL to a PostgreSQL server).');
  return url;
}

export function databaseUrl(name: string, base: string = adminUrl()): string {
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

async function withAdmin<T>(run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}

/** Creates the template database and migrates it; replace drops an existing one first. */
export async function buildTemplate(options: { replace: boolean }): Promise<void> {
  const template = templateDatabase();
  await withAdmin(async (client) => {
    await client.query('SELECT pg_advisory_lock(72027)');
    try {
      if (options.replace) await client.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`);
      const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [template]);
      if (found.rowCount === 0) {
        await client.query(`CREATE DATABASE ${template}`);
        const { db } = createDb(databaseUrl(template), { poolSize: 1 });
        await migrateToLatest(db).finally(() => db.destroy());
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock(72027)');
    }
  });
}

/** Drops this run's template database. */
export async function dropTemplate(): Promise<void> {
  await withAdmin((client) => client.query(`DROP DATABASE IF EXISTS ${templateDatabase()} WITH (FORCE)`));
}

export interface TestDatabase {
  name: string;
  url: string;
  db: Db;
  pool: pg.Pool;
}

/** A fresh, migrated database for this test, dropped in teardown. */
export async function testDatabase(t: Test, options: { migrated?: boolean; analyzeNewTables?: boolean } = {}): Promise<TestDatabase> {
  const name = `test_${process.pid}_${randomBytes(4).toString('hex')}`;
  const migrated = options.migrated ?? true;
  // A run started by tap alone (not npm test) builds the template on demand.
  if (migrated) await buildTemplate({ replace: false });
  await withAdmin(async (client) => {
    // CREATE DATABASE from a template fails while another session is cloning it.
    for (let attempt = 0; ; attempt++) {
      try {
        await client.query(`CREATE DATABASE ${name}${migrated ? ` TEMPLATE ${templateDatabase()}` : ''}`);
        return;
      } catch (error) {
        if ((error as { code?: string }).code !== '55006' || attempt > 50) throw error;
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
      }
    }
  });
  const url = databaseUrl(name);
  const { db, pool } = createDb(url, { poolSize: 5, analyzeNewTables: options.analyzeNewTables ?? true });
  t.teardown(async () => {
    await db.destroy();
    await withAdmin((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  });
  return { name, url, db, pool };
}
