// The admin command line, portal-scim: tenants, credentials, migrations and
// the server itself. Works against DATABASE_URL or the embedded database in the
// data directory, whether or not the server is running.
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { loadSigningKeys } from './auth/keys.js';
import { generateClientSecret, hashClientSecret } from './auth/client-secrets.js';
import { parseDuration, signAdminToken, signToken } from './auth/tokens.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createCredential, listCredentials, revokeCredential } from './db/credentials.js';
import { isUuid } from './db/ids.js';
import { listMigrations, migrateDown, migrateToLatest } from './db/migrate.js';
import { openDatabase, type OpenDatabase } from './db/open.js';
import { purgeDeletedAccounts } from './db/accounts.js';
import { createAdminCredential, revokeAdminCredential } from './db/admin-credentials.js';
import { listOpenConflicts, recordAudit } from './db/audit.js';
import { tenantStatus } from './db/tenant-status.js';
import type { Role } from './db/database.js';
import { connectTenant, createTenant, disconnectTenant, findTenant, listTenants, updateTenantSettings, type TenantRow } from './db/tenants.js';

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
}

/** A failure the user can fix: printed without a stack, exit code 1. */
class CliError extends Error {}

const DOMAIN = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i;

function domainOption(value: string, previous: string[] = []): string[] {
  if (!DOMAIN.test(value)) throw new InvalidArgumentError(`"${value}" is not a domain name such as school.example.`);
  return [...previous, value.toLowerCase()];
}

function uuidArgument(what: string) {
  return (value: string): string => {
    if (!isUuid(value)) throw new InvalidArgumentError(`"${String(value)}" is not a ${what} id (a UUID).`);
    return value.toLowerCase();
  };
}

function durationOption(value: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

/** A tenant that may be given credentials: it exists and is connected. */
async function connectedTenant(db: OpenDatabase['db'], id: string): Promise<TenantRow> {
  const row = await findTenant(db, id);
  if (!row) throw new CliError(`No tenant ${id}.`);
  if (row.disconnected_at) throw new CliError(`Tenant ${row.id} is disconnected; connect it first.`);
  return row;
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

const iso = (d: Date | null): string => (d ? d.toISOString() : '-');

const SYNC_ROLES: readonly Role[] = ['student', 'teacher', 'staff'];

function roleMapOption(value: string, previous: Record<string, Role> = {}): Record<string, Role> {
  const match = /^(.+)=(\w+)$/.exec(value);
  const role = match?.[2]?.toLowerCase() as Role | undefined;
  if (!match?.[1] || !role || !SYNC_ROLES.includes(role)) {
    throw new InvalidArgumentError(`"${value}" is not SOURCE=ROLE with ROLE one of ${SYNC_ROLES.join(', ')} (sync never grants admin).`);
  }
  return { ...previous, [match[1].trim().toLowerCase()]: role };
}

function wholeNumber(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`"${value}" must be a whole number from ${min} to ${max}.`);
    }
    return Number(value);
  };
}

export function buildCli(io: CliIo): Command {
  let config: Config | undefined;
  const getConfig = (): Config => (config ??= loadConfig(io.env));

  async function withDatabase<T>(run: (database: OpenDatabase, config: Config) => Promise<T>): Promise<T> {
    const cfg = getConfig();
    const database = await openDatabase(cfg, { applicationName: 'portal-scim-cli', poolSize: 2 });
    try {
      await migrateToLatest(database.db);
      return await run(database, cfg);
    } finally {
      await database.close();
    }
  }

  const json = (value: unknown): void => io.out(JSON.stringify(value, null, 2));

  const program = new Command('portal-scim')
    .description('SCIM 2.0 provisioning server for school learning portals: admin commands')
    .showHelpAfterError()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride();

  program
    .command('serve')
    .description('start the SCIM server (the same as npm start)')
    .action(async () => {
      const { main } = await import('./server.js');
      await main(io.env);
    });

  program
    .command('migrate')
    .description('apply pending database migrations')
    .option('--down', 'revert the latest migration instead')
    .option('--status', 'list migrations and when they were applied')
    .action(async (options: { down?: boolean; status?: boolean }) => {
      const cfg = getConfig();
      const database = await openDatabase(cfg, { applicationName: 'portal-scim-cli', poolSize: 2 });
      try {
        if (options.status) {
          const rows = await listMigrations(database.db);
          io.out(table([['MIGRATION', 'APPLIED'], ...rows.map((m) => [m.name, m.executedAt ? iso(m.executedAt) : 'pending'])]));
          return;
        }
        const names = options.down ? await migrateDown(database.db) : await migrateToLatest(database.db);
        const verb = options.down ? 'reverted' : 'applied';
        io.out(names.length ? names.map((n) => `${verb} ${n}`).join('\n') : 'nothing to do: the database is up to date');
      } finally {
        await database.close();
      }
    });

  const tenant = program.command('tenant').description('school organisations');
  tenant
    .command('create')
    .description('create a tenant (one school organisation)')
    .requiredOption('--name <name>', 'the organisation name')
    .option('--domain <domain>', 'a verified e-mail domain (repeat for several)', domainOption, [])
    .option('--json', 'print JSON')
    .action(async (options: { name: string; domain: string[]; json?: boolean }) => {
      const name = options.name.trim();
      if (name.length === 0 || name.length > 200) throw new CliError('--name must be 1 to 200 characters.');
      await withDatabase(async ({ db }) => {
        const row = await createTenant(db, { name, verifiedDomains: options.domain });
        if (options.json) {
          json({ id: row.id, name: row.name, verifiedDomains: row.verified_domains, createdAt: row.created_at });
        } else {
          io.out(`Created tenant ${row.id} (${row.name}).`);
          io.out(`Next: portal-scim token issue --tenant ${row.id}`);
        }
      });
    });

  tenant
    .command('list')
    .description('list tenants')
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean }) => {
      await withDatabase(async ({ db }) => {
        const rows = await listTenants(db);
        if (options.json) {
          json(
            rows.map((r) => ({
              id: r.id,
              name: r.name,
              verifiedDomains: r.verified_domains,
              retentionDays: r.retention_days,
              connected: r.disconnected_at === null,
              lastRequestAt: r.last_request_at,
              createdAt: r.created_at,
            })),
          );
          return;
        }
        if (rows.length === 0) {
          io.out('No tenants. Create one with: portal-scim tenant create --name "Example School"');
          return;
        }
        io.out(
          table([
            ['ID', 'NAME', 'DOMAINS', 'STATE', 'LAST REQUEST'],
            ...rows.map((r) => [
              r.id,
              r.name,
              r.verified_domains.join(',') || '-',
              r.disconnected_at ? 'disconnected' : 'connected',
              iso(r.last_request_at),
            ]),
          ]),
        );
      });
    });

  tenant
    .command('set')
    .description("change a tenant's settings: name, verified domains, role mapping, retention")
    .argument('<id>', 'the tenant id', uuidArgument('tenant'))
    .option('--name <name>', 'the organisation name')
    .option('--domain <domain>', 'a verified e-mail domain; the list given replaces the old one (repeat for several)', domainOption)
    .option('--no-domains', 'remove every verified domain (no account is adopted by e-mail)')
    .option('--role-map <source=role>', 'map a source value (app role, SDS ObjectType, primaryRole, userType) to student, teacher or staff; the list given replaces the old one', roleMapOption)
    .option('--no-role-map', 'clear the role mapping (the defaults apply)')
    .option('--retention-days <days>', 'days a deleted account is kept before purge', wholeNumber(0, 3650))
    .option('--json', 'print JSON')
    .action(
      async (
        id: string,
        options: { name?: string; domain?: string[] | undefined; domains?: boolean; roleMap?: Record<string, Role> | false; retentionDays?: number; json?: boolean },
      ) => {
        const name = options.name?.trim();
        if (name !== undefined && (name.length === 0 || name.length > 200)) throw new CliError('--name must be 1 to 200 characters.');
        const domains = options.domains === false ? [] : options.domain;
        const roleMapping = options.roleMap === false ? {} : options.roleMap;
        if (name === undefined && domains === undefined && roleMapping === undefined && options.retentionDays === undefined) {
          throw new CliError('Nothing to change: give --name, --domain, --no-domains, --role-map, --no-role-map or --retention-days.');
        }
        await withDatabase(async ({ db }) => {
          const row = await updateTenantSettings(db, id, {
            ...(name !== undefined ? { name } : {}),
            ...(domains !== undefined ? { verifiedDomains: domains } : {}),
            ...(roleMapping !== undefined ? { roleMapping } : {}),
            ...(options.retentionDays !== undefined ? { retentionDays: options.retentionDays } : {}),
          });
          if (!row) throw new CliError(`No tenant ${id}.`);
          const changed = [
            ...(name !== undefined ? ['name'] : []),
            ...(domains !== undefined ? ['verifiedDomains'] : []),
            ...(roleMapping !== undefined ? ['roleMapping'] : []),
            ...(options.retentionDays !== undefined ? ['retentionDays'] : []),
          ];
          await recordAudit(db, { tenantId: id, action: 'settings', objectType: 'tenant', objectId: id, objectRef: row.name, outcome: 'success', details: { changed } });
          const settings = { id: row.id, name: row.name, verifiedDomains: row.verified_domains, roleMapping: row.role_mapping, retentionDays: row.retention_days };
          if (options.json) json(settings);
          else io.out(`Updated tenant ${row.id}: ${changed.join(', ')}.\n${JSON.stringify(settings, null, 2)}`);
        });
      },
    );

  tenant
    .command('disconnect')
    .description('revoke the tenant\'s credentials and turn synced accounts and classes into manual ones (nothing is deleted)')
    .argument('<id>', 'the tenant id', uuidArgument('tenant'))
    .action(async (id: string) => {
      await withDatabase(async ({ db }, cfg) => {
        const result = await disconnectTenant(db, id);
        if (!result) throw new CliError(`No tenant ${id}.`);
        await recordAudit(db, { tenantId: id, action: 'disconnect', objectType: 'tenant', objectId: id, outcome: 'success', details: result });
        io.out(
          `Disconnected ${id}: ${result.credentials} credentials revoked (refused within ${cfg.credentialCacheSeconds} seconds), ` +
            `${result.accounts} accounts and ${result.classes} classes are now manual. Nothing was deleted.`,
        );
      });
    });

  tenant
    .command('connect')
    .description('connect a disconnected tenant again; issue a new token, and Entra adopts its accounts and classes by external id')
    .argument('<id>', 'the tenant id', uuidArgument('tenant'))
    .action(async (id: string) => {
      await withDatabase(async ({ db }) => {
        const row = await connectTenant(db, id);
        if (!row) throw new CliError(`No tenant ${id}.`);
        await recordAudit(db, { tenantId: id, action: 'connect', objectType: 'tenant', objectId: id, objectRef: row.name, outcome: 'success' });
        io.out(`Connected ${id}. Next: portal-scim token issue --tenant ${id}`);
      });
    });

  program
    .command('purge')
    .description("remove accounts deleted longer ago than their tenant's retention period (the server also does this hourly)")
    .option('--tenant <id>', 'only this tenant', uuidArgument('tenant'))
    .action(async (options: { tenant?: string }) => {
      await withDatabase(async ({ db }) => {
        const purged = await purgeDeletedAccounts(db, options.tenant);
        for (const [tenantId, count] of purged) {
          await recordAudit(db, { tenantId, action: 'purge', objectType: 'tenant', objectId: tenantId, outcome: 'success', details: { accounts: count } });
        }
        const total = [...purged.values()].reduce((a, b) => a + b, 0);
        io.out(`Purged ${total} deleted account${total === 1 ? '' : 's'}.`);
      });
    });

  program
    .command('status')
    .description("a tenant's sync health: last request, counts by role and state, failures and open conflicts")
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; json?: boolean }) => {
      await withDatabase(async ({ db }) => {
        const status = await tenantStatus(db, options.tenant);
        if (!status) throw new CliError(`No tenant ${options.tenant}.`);
        const conflicts = await listOpenConflicts(db, options.tenant, 20);
        if (options.json) {
          json({ ...status, conflicts: conflicts.map((c) => ({ id: c.id, at: c.at, kind: c.kind, objectRef: c.object_ref, detail: c.detail })) });
          return;
        }
        io.out(`Tenant:        ${status.name} (${status.tenantId}), ${status.connected ? 'connected' : 'disconnected'}`);
        io.out(`Last request:  ${iso(status.lastRequestAt)}`);
        io.out(`Classes:       ${status.classes}`);
        io.out(`Deleted accounts awaiting purge: ${status.deletedAccounts}`);
        io.out(table([['ROLE', 'STATE', 'ACCOUNTS'], ...status.accounts.map((a) => [a.role, a.active ? 'active' : 'inactive', String(a.count)])]));
        io.out(`Failures (24 h):        ${status.failures24h}`);
        io.out(`Open conflicts (24 h):  ${status.openConflicts24h} (all open: ${status.openConflicts})`);
        for (const c of conflicts) io.out(`  ${iso(c.at)}  ${c.kind}  ${c.object_ref ?? ''}  ${c.detail}`);
      });
    });

  const adminToken = program.command('admin-token').description('credentials of the admin API (/admin), for the portal team');
  adminToken
    .command('issue')
    .description('issue an admin API token')
    .option('--expires <duration>', 'lifetime such as 90d (default: no expiry)', durationOption)
    .option('--label <text>', 'a note to recognise the token by')
    .option('--json', 'print JSON')
    .action(async (options: { expires?: number; label?: string; json?: boolean }) => {
      await withDatabase(async ({ db }, cfg) => {
        const expiresAt = options.expires ? new Date(Date.now() + options.expires) : null;
        const row = await createAdminCredential(db, options.label ?? null, expiresAt);
        const keys = await loadSigningKeys(cfg);
        const secret = signAdminToken({ keys, issuer: cfg.jwtIssuer, audience: cfg.jwtAudience }, row.id, expiresAt);
        if (options.json) json({ id: row.id, token: secret, adminUrl: `${cfg.publicUrl}/admin`, expiresAt });
        else io.out(`Admin API:     ${cfg.publicUrl}/admin\nAdmin token:   ${secret}\nCredential id: ${row.id}`);
      });
    });
  adminToken
    .command('revoke')
    .description('revoke an admin API token')
    .argument('<id>', 'the credential id', uuidArgument('credential'))
    .action(async (id: string) => {
      await withDatabase(async ({ db }) => {
        if (!(await revokeAdminCredential(db, id))) throw new CliError(`No admin credential ${id}.`);
        io.out(`Revoked ${id}.`);
      });
    });

  const token = program.command('token').description('Secret Tokens for Entra provisioning');
  token
    .command('issue')
    .description('issue a Secret Token for a tenant and print it with the Tenant URL')
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--expires <duration>', 'lifetime such as 90d, 12h, 1y (default: no expiry)', durationOption)
    .option('--label <text>', 'a note to recognise the token by')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; expires?: number; label?: string; json?: boolean }) => {
      await withDatabase(async ({ db }, cfg) => {
        const row = await connectedTenant(db, options.tenant);
        const expiresAt = options.expires ? new Date(Date.now() + options.expires) : null;
        const credential = await createCredential(db, {
          tenantId: row.id,
          kind: 'token',
          label: options.label ?? null,
          expiresAt,
        });
        const keys = await loadSigningKeys(cfg);
        const secret = signToken(
          { keys, issuer: cfg.jwtIssuer, audience: cfg.jwtAudience },
          { tid: row.id, jti: credential.id },
          expiresAt,
        );
        const tenantUrl = `${cfg.publicUrl}/scim/v2`;
        if (options.json) {
          json({ id: credential.id, tenantId: row.id, tenantUrl, token: secret, expiresAt });
          return;
        }
        io.out(`Tenant URL:    ${tenantUrl}`);
        io.out(`Secret Token:  ${secret}`);
        io.out(`Credential id: ${credential.id} (revoke with: portal-scim token revoke ${credential.id})`);
        io.out(`Expires:       ${expiresAt ? expiresAt.toISOString() : 'never'}`);
        io.out('Paste both into the Provisioning page of the Entra enterprise application. The token is not shown again.');
      });
    });

  const listCommand = (kind: 'token' | 'client') =>
    async (options: { tenant: string; json?: boolean }): Promise<void> => {
      await withDatabase(async ({ db }) => {
        if (!(await findTenant(db, options.tenant))) throw new CliError(`No tenant ${options.tenant}.`);
        const rows = (await listCredentials(db, options.tenant)).filter((r) => kind === 'token' || r.kind === 'client');
        const state = (r: (typeof rows)[number]): string =>
          r.revoked_at ? 'revoked' : r.expires_at && r.expires_at <= new Date() ? 'expired' : 'active';
        if (options.json) {
          json(
            rows.map((r) => ({
              id: r.id,
              kind: r.kind,
              label: r.label,
              state: state(r),
              createdAt: r.created_at,
              expiresAt: r.expires_at,
              revokedAt: r.revoked_at,
              lastUsedAt: r.last_used_at,
            })),
          );
          return;
        }
        io.out(
          table([
            ['ID', 'KIND', 'STATE', 'CREATED', 'EXPIRES', 'LAST USED', 'LABEL'],
            ...rows.map((r) => [r.id, r.kind, state(r), iso(r.created_at), iso(r.expires_at), iso(r.last_used_at), r.label ?? '']),
          ]),
        );
      });
    };

  token
    .command('list')
    .description("list a tenant's credentials, tokens and OAuth clients (never their secrets)")
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--json', 'print JSON')
    .action(listCommand('token'));

  token
    .command('revoke')
    .description('revoke a credential; it stops working within seconds')
    .argument('<id>', 'the credential id', uuidArgument('credential'))
    .action(async (id: string) => {
      await withDatabase(async ({ db }, cfg) => {
        const row = await revokeCredential(db, id);
        if (!row) throw new CliError(`No credential ${id}.`);
        io.out(`Revoked ${row.id}; servers refuse it within ${cfg.credentialCacheSeconds} seconds.`);
      });
    });

  const client = program.command('client').description('OAuth 2.0 clients for Entra provisioning (client credentials grant)');
  client
    .command('create')
    .description('create an OAuth client for a tenant and print its id, secret and token URL')
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--expires <duration>', 'lifetime of the client such as 1y (default: no expiry)', durationOption)
    .option('--label <text>', 'a note to recognise the client by')
    .option('--json', 'print JSON')
    .action(async (options: { tenant: string; expires?: number; label?: string; json?: boolean }) => {
      await withDatabase(async ({ db }, cfg) => {
        const row = await connectedTenant(db, options.tenant);
        const clientSecret = generateClientSecret();
        const expiresAt = options.expires ? new Date(Date.now() + options.expires) : null;
        const credential = await createCredential(db, {
          tenantId: row.id,
          kind: 'client',
          label: options.label ?? null,
          secretHash: await hashClientSecret(clientSecret),
          expiresAt,
        });
        const tenantUrl = `${cfg.publicUrl}/scim/v2`;
        const tokenUrl = `${cfg.publicUrl}/oauth/token`;
        if (options.json) {
          json({ clientId: credential.id, clientSecret, tenantId: row.id, tenantUrl, tokenUrl, expiresAt });
          return;
        }
        io.out(`Tenant URL:        ${tenantUrl}`);
        io.out(`Token Endpoint:    ${tokenUrl}`);
        io.out(`Client Identifier: ${credential.id}`);
        io.out(`Client Secret:     ${clientSecret}`);
        io.out(`Expires:           ${expiresAt ? expiresAt.toISOString() : 'never'}`);
        io.out('Choose "OAuth2 Client Credentials Grant" in Entra and paste these. The secret is not shown again.');
      });
    });

  client
    .command('list')
    .description("list a tenant's OAuth clients (never their secrets)")
    .requiredOption('--tenant <id>', 'the tenant id', uuidArgument('tenant'))
    .option('--json', 'print JSON')
    .action(listCommand('client'));

  client
    .command('revoke')
    .description('revoke an OAuth client; it and the access tokens issued to it stop working within seconds')
    .argument('<client-id>', 'the client id', uuidArgument('client'))
    .action(async (id: string) => {
      await withDatabase(async ({ db }, cfg) => {
        const row = await revokeCredential(db, id, 'client');
        if (!row) throw new CliError(`No OAuth client ${id}.`);
        io.out(`Revoked ${row.id}; servers refuse it and its access tokens within ${cfg.credentialCacheSeconds} seconds.`);
      });
    });

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
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' ? 0 : error.exitCode || 2;
    }
    if (error instanceof CliError || error instanceof ConfigError) {
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
  process.exitCode = code;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await cliMain();
}
