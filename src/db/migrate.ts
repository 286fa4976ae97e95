// Runs the frozen migrations under migrations/ with kysely's Migrator. The
// Migrator holds a PostgreSQL advisory lock, so instances starting together
// apply each migration once.
import { readdir } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';
import { Migrator, NO_MIGRATIONS, type Kysely, type Migration, type MigrationProvider, type MigrationResultSet } from 'kysely';
import { isDatabaseUnavailable } from './errors.js';

// src/db/ and dist/src/db/ both sit two levels below the folder holding migrations/.
const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url));

class FolderMigrationProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    const files = (await readdir(migrationsDir))
      .filter((f) => /^\d{4}_[\w-]+\.(ts|js)$/.test(f) && !f.endsWith('.d.ts'))
      .sort();
    const migrations: Record<string, Migration> = {};
    for (const file of files) {
      const name = file.replace(/\.(ts|js)$/, '');
      migrations[name] = (await import(pathToFileURL(path.join(migrationsDir, file)).href)) as Migration;
    }
    return migrations;
  }
}

// Migrations see the database untyped: they run before today's types hold.
function migrator<T>(db: Kysely<T>): Migrator {
  return new Migrator({ db: db as Kysely<unknown>, provider: new FolderMigrationProvider() });
}

export class MigrationError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

function check(result: MigrationResultSet): string[] {
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName;
    const message = result.error instanceof Error ? result.error.message : JSON.stringify(result.error);
    // No migration ran: the database could not be asked which are applied. An outage, not a broken migration.
    if (failed === undefined && isDatabaseUnavailable(result.error)) {
      throw new MigrationError(`the database cannot be reached (${message}): check DATABASE_URL and that PostgreSQL runs and takes connections`, { cause: result.error });
    }
    throw new MigrationError(`migration ${failed ?? 'unknown'} failed: ${message}`, { cause: result.error });
  }
  return (result.results ?? []).map((r) => r.migrationName);
}

/** Applies every pending migration; returns the names applied. */
export async function migrateToLatest<T>(db: Kysely<T>): Promise<string[]> {
  return check(await migrator(db).migrateToLatest());
}

/** Reverts the latest applied migration; returns its name (empty when none). */
export async function migrateDown<T>(db: Kysely<T>): Promise<string[]> {
  return check(await migrator(db).migrateDown());
}

/** Applies or reverts migrations until `name` is the latest applied (for tests of one migration). */
export async function migrateTo<T>(db: Kysely<T>, name: string): Promise<string[]> {
  return check(await migrator(db).migrateTo(name));
}

/** Reverts every migration. */
export async function migrateToNone<T>(db: Kysely<T>): Promise<string[]> {
  return check(await migrator(db).migrateTo(NO_MIGRATIONS));
}

export async function listMigrations<T>(db: Kysely<T>): Promise<{ name: string; executedAt: Date | undefined }[]> {
  const all = await migrator(db).getMigrations();
  return all.map((m) => ({ name: m.name, executedAt: m.executedAt }));
}
