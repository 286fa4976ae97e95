// What every command group of the CLI shares: its input and output, the
// configuration and database it opens per command, errors a user can fix,
// option parsers and plain-text tables.
import { InvalidArgumentError, type Command } from 'commander';
import { loadSigningKeys } from '../auth/keys.js';
import { parseDuration, type TokenSettings } from '../auth/tokens.js';
import { loadConfig, type Config } from '../config.js';
import type { Role } from '../db/database.js';
import { isUuid } from '../db/ids.js';
import { migrateToLatest } from '../db/migrate.js';
import { openDatabase, type OpenDatabase } from '../db/open.js';
import { ServiceError } from '../services/errors.js';
import { parseDomain, parseRoleMapEntry } from '../services/tenants.js';

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
}

/** A failure the user can fix: printed without a stack, with its exit code (1 unless said). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    /** For a command used wrongly: the line that says where to read how to use it. */
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** "portal-scim tenant set": the command as typed. */
export function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

export const helpHint = (command: Command): string => `(see ${commandPath(command)} --help)`;

/** A command given wrong or missing options: the one line that is wrong, and where the help is. */
export function usageError(command: Command, message: string): CliError {
  return new CliError(message, 1, helpHint(command));
}

export interface CliContext {
  io: CliIo;
  config(): Config;
  /** Opens the database (migrated to the latest schema) for one command and closes it after. */
  withDatabase<T>(run: (database: OpenDatabase, config: Config) => Promise<T>): Promise<T>;
  signing(config: Config): Promise<TokenSettings>;
  json(value: unknown): void;
  /** Lines for a person. */
  out(...lines: string[]): void;
}

export function createContext(io: CliIo): CliContext {
  let config: Config | undefined;
  const getConfig = (): Config => (config ??= loadConfig(io.env));
  return {
    io,
    config: getConfig,
    async withDatabase(run) {
      const cfg = getConfig();
      const database = await openDatabase(cfg, { applicationName: 'portal-scim-cli', poolSize: 2 });
      try {
        await migrateToLatest(database.db);
        return await run(database, cfg);
      } finally {
        await database.close();
      }
    },
    async signing(cfg) {
      return { keys: await loadSigningKeys(cfg), issuer: cfg.jwtIssuer, audience: cfg.jwtAudience };
    },
    json: (value) => io.out(JSON.stringify(value, null, 2)),
    out: (...lines) => io.out(lines.join('\n')),
  };
}

/** An option parser from a service parser: its message becomes commander's "is invalid" line. */
function fromService<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (error) {
      if (error instanceof ServiceError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };
}

export function domainOption(value: string, previous: string[] = []): string[] {
  return [...previous, fromService(parseDomain)(value)];
}

export function uuidArgument(what: string) {
  return (value: string): string => {
    if (!isUuid(value)) throw new InvalidArgumentError(`"${String(value)}" is not a ${what} id (a UUID).`);
    return value.toLowerCase();
  };
}

export function durationOption(value: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

export function roleMapOption(value: string, previous: Record<string, Role> = {}): Record<string, Role> {
  const match = /^(.*)=([^=]*)$/.exec(value);
  const [source, role] = fromService(() => parseRoleMapEntry(match?.[1], match?.[2], value))(value);
  return { ...previous, [source]: role };
}

export function wholeNumber(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`"${value}" must be a whole number from ${min} to ${max}.`);
    }
    return Number(value);
  };
}

/** Columns padded to their widest cell; the first row is the header. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** "Label:   value" lines with the values aligned. */
export function fields(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(...pairs.map(([label]) => label.length)) + 2;
  return pairs.map(([label, value]) => `${`${label}:`.padEnd(width)}${value}`.trimEnd()).join('\n');
}
