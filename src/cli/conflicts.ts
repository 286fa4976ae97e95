// portal-scim conflict: a tenant's sync conflicts (rule 3's refusals), and
// closing one by hand, resolved or dismissed with a note, through the same
// operations as the admin API and the status pages.
import { InvalidArgumentError, type Command } from 'commander';
import type { ConflictRow, ConflictState } from '../db/audit.js';
import { CONFLICT_STATES, closeConflictByHand, conflictStateText, listTenantConflicts, parseNote, type Closing } from '../services/conflicts.js';
import { formatTime } from '../services/words.js';
import { table, uuidArgument, type CliContext } from './shared.js';

const CLI = { via: 'cli' } as const;

export function conflictJson(c: ConflictRow) {
  return {
    id: c.id,
    tenantId: c.tenant_id,
    kind: c.kind,
    objectType: c.object_type,
    objectRef: c.object_ref,
    accountId: c.account_id,
    entraObjects: c.entra_objects,
    detail: c.detail,
    state: c.resolution === null ? 'open' : 'closed',
    resolution: c.resolution,
    note: c.note,
    openedAt: c.at,
    lastSeenAt: c.last_seen_at,
    seenCount: c.seen_count,
    resolvedAt: c.resolved_at,
    requestId: c.request_id,
  };
}

/** One line per conflict, its detail and note below it; the words of the status page. */
export function conflictsTable(conflicts: readonly ConflictRow[]): string {
  const rows = table([
    ['ID', 'STATE', 'KIND', 'OBJECT', 'SEEN', 'OPENED', 'LAST SEEN'],
    ...conflicts.map((c) => [c.id, conflictStateText(c), c.kind, c.object_ref ?? '', String(c.seen_count), formatTime(c.at), formatTime(c.last_seen_at)]),
  ]);
  const notes = conflicts.flatMap((c) => [
    `  ${c.id}: ${c.detail}`,
    ...(c.entra_objects.length === 0 ? [] : [`  ${c.id} Entra objects refused: ${c.entra_objects.join(', ')}`]),
    ...(c.note === null ? [] : [`  ${c.id} note: ${c.note}`]),
  ]);
  return [rows, ...notes].join('\n');
}

function stateOption(value: string): ConflictState {
  if (!CONFLICT_STATES.includes(value as ConflictState)) throw new InvalidArgumentError(`"${value}" is not one of ${CONFLICT_STATES.join(', ')}.`);
  return value as ConflictState;
}

export function conflictCommands(program: Command, ctx: CliContext): void {
  const conflict = program.command('conflict').description('sync conflicts: writes sync refused (rule 3), open until the write succeeds or the team resolves or dismisses them');

  conflict
    .command('list')
    .description("a tenant's conflicts, newest first: open ones by default")
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--state <state>', `which conflicts: ${CONFLICT_STATES.join(', ')}`, stateOption, 'open')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; state: ConflictState; json?: boolean }) => {
      await ctx.withDatabase(async ({ db }) => {
        const conflicts = await listTenantConflicts(db, options.tenant, { state: options.state, limit: 500 });
        if (options.json) ctx.json(conflicts.map(conflictJson));
        else if (conflicts.length === 0) ctx.out(`No ${options.state === 'all' ? '' : `${options.state} `}conflicts.`);
        else ctx.out(conflictsTable(conflicts));
      });
    });

  const close = (closing: Closing, done: string) => async (id: string, options: { note?: string; json?: boolean }) => {
    await ctx.withDatabase(async ({ db }) => {
      const result = await closeConflictByHand(db, id, closing, parseNote(options.note), CLI);
      if (options.json) ctx.json({ ...conflictJson(result.conflict), alreadyClosed: result.alreadyClosed });
      else if (result.alreadyClosed) {
        ctx.out(`${id} was already closed (${conflictStateText(result.conflict)}, at ${formatTime(result.conflict.resolved_at)}); nothing changed.`);
      } else ctx.out(`${done} ${id} (${result.conflict.kind}, ${result.conflict.object_ref ?? 'no reference'}).`);
    });
  };

  conflict
    .command('resolve')
    .description('close a conflict the team has fixed (for example the admin account in the way got another address)')
    .argument('<id>', 'the conflict id', uuidArgument('conflict'))
    .option('--note <text>', 'what was done, kept with the conflict and its audit event')
    .option('--json', 'print JSON')
    .action(close('resolve', 'Resolved'));

  conflict
    .command('dismiss')
    .description('close a conflict that needs no fix')
    .argument('<id>', 'the conflict id', uuidArgument('conflict'))
    .option('--note <text>', 'why, kept with the conflict and its audit event')
    .option('--json', 'print JSON')
    .action(close('dismiss', 'Dismissed'));
}
