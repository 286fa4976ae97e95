// The admin command line, portal-scim: tenants, credentials, status,
// conflicts, migrations and the server itself. Works against DATABASE_URL or the
// embedded database in the data directory, whether or not the server is
// running. Each command group lives in src/cli/; the operations they run are
// the services the admin API calls too.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError } from 'commander';
import { accountCommands } from './cli/account.js';
import { adminTokenCommands } from './cli/admin-token.js';
import { conflictCommands } from './cli/conflicts.js';
import { credentialCommands } from './cli/credentials.js';
import { databaseCommands } from './cli/database.js';
import { previewCommands } from './cli/preview.js';
import { CliError, createContext, helpHint, type CliIo } from './cli/shared.js';
import { statusCommands } from './cli/status.js';
import { tenantCommands } from './cli/tenant.js';
import { ConfigError } from './config.js';
import { projectRoot } from './paths.js';
import { ServiceError } from './services/errors.js';

export type { CliIo } from './cli/shared.js';

function version(): string {
  return (JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

function allCommands(command: Command): Command[] {
  return [command, ...command.commands.flatMap(allCommands)];
}

export function buildCli(io: CliIo): Command {
  const ctx = createContext(io);
  const program = new Command('portal-scim')
    .description('SCIM 2.0 provisioning server for school learning portals: admin commands')
    .version(version(), '-V, --version', 'print the version')
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride();

  tenantCommands(program, ctx);
  credentialCommands(program, ctx);
  accountCommands(program, ctx);
  adminTokenCommands(program, ctx);
  statusCommands(program, ctx);
  previewCommands(program, ctx);
  conflictCommands(program, ctx);
  databaseCommands(program, ctx);

  // A command used wrongly prints the line that is wrong and where its help
  // is, not the whole help.
  for (const command of allCommands(program)) command.showHelpAfterError(helpHint(command)).exitOverride();
  return program;
}

/** Runs the CLI; returns the process exit code. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const program = buildCli(io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help' ? 0 : error.exitCode || 2;
    }
    if (error instanceof CliError) {
      io.err(`portal-scim: ${error.message}`);
      if (error.hint) io.err(error.hint);
      return error.exitCode;
    }
    if (error instanceof ServiceError || error instanceof ConfigError) {
      io.err(`portal-scim: ${error.message}`);
      return 1;
    }
    io.err(`portal-scim: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

/** The process entry point: bin/portal-scim.js and `tsx src/cli.ts` call this. */
export async function cliMain(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const code = await runCli(argv, {
    out: (s) => process.stdout.write(`${s}\n`),
    err: (s) => process.stderr.write(`${s}\n`),
    env: process.env,
  });
  // serve returns once the server listens, and the server sets its own exit
  // code when it stops; a command's success must not hide that.
  if (code !== 0) process.exitCode = code;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await cliMain();
}
