// portal-scim account: local overrides of role and grade on synced accounts
// (rule 11), and the merge that repairs a first sync, through the same
// operations as the admin API.
import { InvalidArgumentError, type Command } from 'commander';
import type { AccountRow } from '../db/columns.js';
import { accountView, changeOverrides, findAccounts, mergeAccounts, parseOverrideGrade, parseOverrideRole } from '../services/accounts.js';
import { ServiceError } from '../services/errors.js';
import { formatTime } from '../services/words.js';
import { fields, table, usageError, uuidArgument, type CliContext } from './shared.js';

const CLI = { via: 'cli' } as const;

function parsed<T>(parse: (value: string) => T) {
  return (value: string): T => {
    try {
      return parse(value);
    } catch (error) {
      if (error instanceof ServiceError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };
}

function accountLines(row: AccountRow): string {
  const view = accountView(row);
  const from = (source: string, synced: string | null) => (source === 'override' ? `override (Entra sent ${synced ?? 'none'})` : source);
  return fields([
    ['Account', `${view.userName} (${view.id})`],
    ['Role', `${view.role}, from ${from(view.roleSource, view.syncedRole)}`],
    ['Grade', `${view.grade ?? '-'}, from ${from(view.gradeSource, view.syncedGrade)}`],
  ]);
}

export function accountCommands(program: Command, ctx: CliContext): void {
  const account = program.command('account').description('accounts: local overrides of role and grade, and merges');

  account
    .command('set')
    .description("set a synced account's role or grade in the portal; sync never writes over them until they are cleared")
    .argument('<id>', 'the account id', uuidArgument('account'))
    .option('--role <role>', 'student, teacher or staff (never admin)', parsed(parseOverrideRole))
    .option('--grade <grade>', 'the grade', parsed(parseOverrideGrade))
    .option('--clear-overrides', 'clear both overrides: what Entra last sent shows again')
    .option('--json', 'print JSON')
    .action(async (id: string, options: { role?: ReturnType<typeof parseOverrideRole>; grade?: string; clearOverrides?: boolean; json?: boolean }, command: Command) => {
      if (options.clearOverrides && (options.role !== undefined || options.grade !== undefined)) {
        throw usageError(command, 'Give --clear-overrides alone, or --role and --grade.');
      }
      if (!options.clearOverrides && options.role === undefined && options.grade === undefined) {
        throw usageError(command, 'Nothing to change: give --role, --grade or --clear-overrides.');
      }
      await ctx.withDatabase(async ({ db }) => {
        const row = await changeOverrides(
          db,
          id,
          { ...(options.role !== undefined ? { role: options.role } : {}), ...(options.grade !== undefined ? { grade: options.grade } : {}), clear: options.clearOverrides === true },
          CLI,
        );
        if (options.json) ctx.json(accountView(row));
        else ctx.out(options.clearOverrides ? `Cleared the overrides of ${row.id}.` : `Set the overrides of ${row.id}.`, accountLines(row));
      });
    });

  account
    .command('find')
    .description("a tenant's accounts with this userName, e-mail or Entra object id: the ids a merge needs, and which the sync created")
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .argument('<key>', 'a userName, an e-mail address (in any case) or an Entra object id')
    .option('--json', 'print JSON')
    .action(async (key: string, options: { tenant: string; json?: boolean }) => {
      await ctx.withDatabase(async ({ db }) => {
        const found = await findAccounts(db, options.tenant, key);
        if (options.json) ctx.json(found);
        else if (found.length === 0) ctx.out(`No account of tenant ${options.tenant} has the userName, e-mail or Entra object id ${key}.`);
        else {
          ctx.out(
            table([
              ['ID', 'USER NAME', 'E-MAIL', 'DISPLAY NAME', 'ROLE', 'ACTIVE', 'MADE BY', 'CREATED'],
              ...found.map((a) => [
                a.id,
                a.userName,
                a.email ?? '',
                a.displayName ?? '',
                a.role,
                a.active ? 'yes' : 'no',
                a.createdBySync ? 'sync' : a.managedBySync ? 'portal, then sync' : 'portal',
                formatTime(a.createdAt),
              ]),
            ]),
          );
        }
      });
    });

  account
    .command('merge')
    .description("merge the account Entra created at the first sync (--absorb) into the portal's existing account for the same person (--keep)")
    .requiredOption('--keep <id>', 'the account to keep: its id, licences and history stay', uuidArgument('account'))
    .requiredOption('--absorb <id>', 'the account Entra created; Entra keeps using its id, which then reaches the kept account', uuidArgument('account'))
    .option('--dry-run', 'check the merge and show what it would leave, without making it (a merge cannot be undone)')
    .option('--json', 'print JSON')
    .action(async (options: { keep: string; absorb: string; dryRun?: boolean; json?: boolean }) => {
      await ctx.withDatabase(async ({ db }) => {
        const merged = await mergeAccounts(db, options.keep, options.absorb, CLI, { dryRun: options.dryRun === true });
        const { kept, absorbedId, absorbed, alreadyMerged, dryRun, cautions } = merged;
        if (options.json) {
          ctx.json({ kept: accountView(kept), absorbedId, ...(absorbed ? { absorbed: accountView(absorbed) } : {}), alreadyMerged, dryRun, cautions });
          return;
        }
        if (alreadyMerged) {
          ctx.out(`${absorbedId} was already merged into ${kept.id}; nothing changed.`, accountLines(kept));
          return;
        }
        const lines = [
          dryRun
            ? `Would merge ${absorbedId} into ${kept.id}; nothing was changed. The kept account would be:`
            : `Merged ${absorbedId} into ${kept.id}: the kept account now has its Entra link, attributes and classes; ${absorbedId} is deleted, and Entra's requests for it reach ${kept.id}.`,
          accountLines(kept),
          ...(absorbed ? [fields([['Absorbed', `${absorbed.user_name}${absorbed.display_name !== null ? ` "${absorbed.display_name}"` : ''} (${absorbedId})`]])] : []),
          ...cautions.map((caution) => `Caution: ${caution}`),
        ];
        ctx.out(...lines);
      });
    });
}
