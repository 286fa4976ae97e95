// portal-scim migrate, purge and serve: the database's schema, deleted
// accounts past their retention, and the server itself.
import type { Command } from 'commander';
import { ConfigError } from '../config.js';
import { purgeDeletedAccounts } from '../db/accounts.js';
import { recordAudit } from '../db/audit.js';
import { listMigrations, migrateDown, migrateToLatest } from '../db/migrate.js';
import { openDatabase } from '../db/open.js';
import { formatTime } from '../services/words.js';
import { CliError, table, uuidArgument, type CliContext } from './shared.js';

/** sysexits' EX_CONFIG: what npm start exits with on a configuration error. */
const EXIT_CONFIG = 78;

export function databaseCommands(program: Command, ctx: CliContext): void {
  program
    .command('serve')
    .description('start the SCIM server (as npm start does, without its node flags)')
    .action(async () => {
      try {
        ctx.config();
      } catch (error) {
        if (error instanceof ConfigError) throw new CliError(`configuration error: ${error.message}`, EXIT_CONFIG);
        throw error;
      }
      const { main } = await import('../server.js');
      await main(ctx.io.env);
    });

  program
    .command('migrate')
    .description('apply pending database migrations')
    .option('--down', 'revert the latest migration instead')
    .option('--status', 'list migrations and when they were applied')
    .action(async (options: { down?: boolean; status?: boolean }) => {
      const database = await openDatabase(ctx.config(), { applicationName: 'portal-scim-cli', poolSize: 2 });
      try {
        if (options.status) {
          const rows = await listMigrations(database.db);
          ctx.out(table([['MIGRATION', 'APPLIED'], ...rows.map((m) => [m.name, m.executedAt ? formatTime(m.executedAt) : 'pending'])]));
          return;
        }
        const names = options.down ? await migrateDown(database.db) : await migrateToLatest(database.db);
        const verb = options.down ? 'reverted' : 'applied';
        ctx.out(names.length ? names.map((n) => `${verb} ${n}`).join('\n') : 'nothing to do: the database is up to date');
      } finally {
        await database.close();
      }
    });

  program
    .command('database-url')
    .description("print the URL of the PostgreSQL database this server uses, password included (DATABASE_URL, or the embedded one's), for psql or the portal")
    .action(async () => {
      const config = ctx.config();
      if (config.databaseUrl) {
        ctx.out(config.databaseUrl);
        return;
      }
      const database = await openDatabase(config, { applicationName: 'portal-scim-cli', poolSize: 1 });
      try {
        ctx.out(database.url);
        // This command started it only to read the URL, and stops it again.
        if (database.embedded?.owned) ctx.io.err('The embedded PostgreSQL is not running: the URL works while portal-scim runs (npm start).\n');
      } finally {
        await database.close();
      }
    });

  program
    .command('purge')
    .description("remove accounts deleted longer ago than their tenant's retention period (the server also does this hourly)")
    .option('--tenant <id>', 'only this tenant', uuidArgument('tenant'))
    .action(async (options: { tenant?: string }) => {
      await ctx.withDatabase(async ({ db }) => {
        const purged = await purgeDeletedAccounts(db, options.tenant);
        for (const [tenantId, count] of purged) {
          await recordAudit(db, { tenantId, action: 'purge', objectType: 'tenant', objectId: tenantId, outcome: 'success', details: { accounts: count } });
        }
        const total = [...purged.values()].reduce((a, b) => a + b, 0);
        ctx.out(`Purged ${total} deleted account${total === 1 ? '' : 's'}.`);
      });
    });
}
