// portal-scim preview: what the first sync will do with each user of the
// Entra admin center's "Download users" CSV, before Entra sends anything:
// which portal account it adopts and by which rule, which users get a new
// account, who is probably the same person as an existing account under
// another address, who collides with a portal admin. Reads only.
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  outcomeWords,
  previewCsv,
  previewFirstSync,
  readEntraUsers,
  type PortalAccountRef,
  type PreviewReport,
  type PreviewUser,
} from '../services/preview.js';
import { CliError, fields, uuidArgument, type CliContext } from './shared.js';

export function previewCommands(program: Command, ctx: CliContext): void {
  program
    .command('preview')
    .description(
      "what the first sync will do with each user of Entra's \"Download users\" CSV: adopt which portal account (rule 8 or 2), create a new one, or refuse it (rule 3); who is probably the same person as an existing account under another address. Writes nothing",
    )
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .requiredOption('--entra-users <file>', 'the CSV that "Download users" in the Entra admin center writes (Users > All users)')
    .option('--csv <file>', "also write the report to this CSV file, one row per user, for the school's admin")
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; entraUsers: string; csv?: string; json?: boolean }) => {
      // The file is read before the database is opened: a wrong file fails at once.
      const users = await readEntraUsers(openFile(options.entraUsers));
      const report = await ctx.withDatabase(({ db }) => previewFirstSync(db, options.tenant, users));
      if (options.csv !== undefined) {
        try {
          await writeFile(options.csv, previewCsv(report));
        } catch (error) {
          throw new CliError(`Cannot write ${options.csv}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}.`);
        }
      }
      if (options.json === true) ctx.json(report);
      else ctx.out(previewText(report));
      if (options.csv !== undefined && options.json !== true) ctx.out(`Wrote the report of ${report.users.length} users to ${options.csv}.`);
    });
}

/** The file as a stream of bytes; a file that cannot be read is the user's to fix, not a stack trace. */
async function* openFile(file: string): AsyncGenerator<Uint8Array> {
  try {
    for await (const chunk of createReadStream(file)) yield chunk as Buffer;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : (code ?? 'unreadable');
    throw new CliError(`Cannot read ${file}: ${why}.`);
  }
}

const account = (a: PortalAccountRef | undefined): string => (a === undefined ? '-' : `${a.userName} (${a.id})`);

/** The table's last column: how the account was found, or what to look at. */
function shortNote(user: PreviewUser): string {
  const notes: string[] = [];
  switch (user.outcome) {
    case 'already-synced':
    case 'adopt':
      notes.push(user.matchedBy === 'externalId' ? 'by Entra object id' : user.matchedBy === 'userName' ? 'by userName' : 'by e-mail');
      if (user.outcome === 'adopt') {
        if (user.contestedBy) notes.push(`row${user.contestedBy.length > 1 ? 's' : ''} ${user.contestedBy.join(', ')} would take it if sent first`);
        if (user.deactivated) notes.push('a deactivated account: a reused address?');
        if (user.alsoMatching) notes.push(`${user.alsoMatching.length} more account${user.alsoMatching.length > 1 ? 's' : ''} with this address stay${user.alsoMatching.length > 1 ? '' : 's'}`);
      }
      break;
    case 'create': {
      const best = user.probableMatches[0];
      if (best) {
        const why = best.reasons.map((r) => r.replace(/-/g, ' ')).join(', ');
        notes.push(`probably ${account(best)}: ${why}${best.adoptedByRow !== undefined ? `, taken by row ${best.adoptedByRow}` : ''}`);
      }
      break;
    }
    case 'admin-collision':
      notes.push('address of a portal admin');
      break;
    case 'invalid':
      notes.push(user.problem ?? '');
      break;
  }
  if (user.outsideVerifiedDomains.length > 0) notes.push(`outside verified domains: ${user.outsideVerifiedDomains.join(', ')}`);
  return notes.join('; ');
}

/** Padded columns; widths found without spreading 100,000 rows into one call. */
function columns(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

export function previewText(report: PreviewReport): string {
  const { tenant, totals } = report;
  const rows = report.users.map((u) => [String(u.row), u.userPrincipalName, outcomeWords(u), account(u.outcome === 'create' ? undefined : u.account), shortNote(u)]);
  return [
    `First-sync preview of ${tenant.name} (${tenant.id}); verified domains: ${tenant.verifiedDomains.join(', ') || 'none'}. Nothing was written.`,
    '',
    columns([['ROW', 'USER PRINCIPAL NAME', 'OUTCOME', 'PORTAL ACCOUNT', 'NOTE'], ...rows]),
    '',
    fields([
      ['Users in the file', String(totals.users)],
      ['Already synced', String(totals.alreadySynced)],
      ['Adopt an account', `${totals.adopt} (rule 8, by Entra object id: ${totals.adoptByExternalId}; rule 2, by address: ${totals.adoptByAddress})`],
      ['Create an account', `${totals.create}, of which ${totals.probableMatches} probably the same person as an existing account`],
      ['Refused, portal admin', `${totals.adminCollisions} (rule 3)`],
      ['Refused, invalid', String(totals.invalid)],
      ['Outside verified domains', `${totals.outsideVerifiedDomains} user${totals.outsideVerifiedDomains === 1 ? '' : 's'}`],
    ]),
  ].join('\n');
}
